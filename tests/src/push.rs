//! The Registry v2 push protocol over plain HTTP, and reading a manifest back.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use ureq::http::Response;

use crate::image::{Blob, Image, Index};

/// An HTTP client for loopback registries: no proxy, no redirects, statuses returned rather than
/// turned into errors.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

/// Pushes `image`'s blobs and then its manifest as `<registry>/<repo>:<tag>`; returns the manifest
/// digest. `registry` is `127.0.0.1:PORT`.
pub fn push_image(registry: &str, repo: &str, tag: &str, image: &Image) -> Result<String> {
    let client = Client::new(registry, repo);
    for blob in image.blobs() {
        client.push_blob(blob)?;
    }
    client.put_manifest(tag, image.manifest())
}

/// Pushes `image` referenced only by its digest (no tag); returns the digest.
pub fn push_image_by_digest(registry: &str, repo: &str, image: &Image) -> Result<String> {
    push_image(registry, repo, image.digest(), image)
}

/// Pushes every image of `index` by digest, then the index as `<registry>/<repo>:<tag>`; returns the
/// index digest.
pub fn push_index(registry: &str, repo: &str, tag: &str, index: &Index) -> Result<String> {
    for image in index.images() {
        push_image_by_digest(registry, repo, image)?;
    }
    Client::new(registry, repo).put_manifest(tag, index.manifest())
}

/// Uploads one blob into `repo` unless the registry already has it there.
pub fn push_blob(registry: &str, repo: &str, blob: &Blob) -> Result<()> {
    Client::new(registry, repo).push_blob(blob)
}

/// A manifest as a registry serves it.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    /// The `Docker-Content-Digest` header.
    pub digest: String,
    /// The `Content-Type` header.
    pub media_type: String,
    /// The body.
    pub bytes: Vec<u8>,
}

/// `GET /v2/<repo>/manifests/<reference>` with `accept` as the Accept header values.
pub fn get_manifest(registry: &str, repo: &str, reference: &str, accept: &[&str]) -> Result<FetchedManifest> {
    let client = Client::new(registry, repo);
    let url = client.url(&format!("manifests/{reference}"));
    let mut response =
        client.agent.get(&url).header("Accept", accept.join(", ")).call().with_context(|| format!("GET {url}"))?;
    expect_status(&mut response, 200, "GET", &url)?;
    Ok(FetchedManifest {
        digest: header(&response, "Docker-Content-Digest").unwrap_or_default(),
        media_type: header(&response, "Content-Type").unwrap_or_default(),
        bytes: response.body_mut().read_to_vec().with_context(|| format!("reading GET {url}"))?,
    })
}

/// One repository on one registry.
struct Client {
    agent: ureq::Agent,
    /// `http://127.0.0.1:PORT`
    base: String,
    repo: String,
}

impl Client {
    fn new(registry: &str, repo: &str) -> Client {
        Client { agent: agent(), base: format!("http://{registry}"), repo: repo.into() }
    }

    /// `http://ADDR/v2/<repo>/<path>`
    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repo)
    }

    /// HEAD to skip blobs already there, else a monolithic upload: POST to open a session, PUT the
    /// bytes to its location with `digest=`.
    fn push_blob(&self, blob: &Blob) -> Result<()> {
        let url = self.url(&format!("blobs/{}", blob.digest));
        let response = self.agent.head(&url).call().with_context(|| format!("HEAD {url}"))?;
        if response.status() == 200 {
            return Ok(());
        }

        let url = self.url("blobs/uploads/");
        let mut response = self.agent.post(&url).send_empty().with_context(|| format!("POST {url}"))?;
        expect_status(&mut response, 202, "POST", &url)?;
        let location = header(&response, "Location")
            .with_context(|| format!("POST {url} answered 202 without a Location header"))?;
        let upload = self.resolve(&location)?;
        let separator = if upload.contains('?') { '&' } else { '?' };
        let url = format!("{upload}{separator}digest={}", blob.digest.replace(':', "%3A"));
        let mut response = self
            .agent
            .put(&url)
            .header("Content-Type", "application/octet-stream")
            .send(blob.bytes.as_slice())
            .with_context(|| format!("PUT {url}"))?;
        expect_status(&mut response, 201, "PUT", &url)
    }

    /// PUT a manifest (image or index) under `reference` (tag or digest); returns its digest.
    fn put_manifest(&self, reference: &str, manifest: &Blob) -> Result<String> {
        let url = self.url(&format!("manifests/{reference}"));
        let mut response = self
            .agent
            .put(&url)
            .header("Content-Type", &manifest.media_type)
            .send(manifest.bytes.as_slice())
            .with_context(|| format!("PUT {url}"))?;
        expect_status(&mut response, 201, "PUT", &url)?;
        if let Some(digest) = header(&response, "Docker-Content-Digest")
            && digest != manifest.digest
        {
            bail!("PUT {url}: registry computed digest {digest}, expected {}", manifest.digest);
        }
        Ok(manifest.digest.clone())
    }

    /// Upload locations may be absolute or relative to the registry; either must stay on it.
    fn resolve(&self, location: &str) -> Result<String> {
        if location.starts_with('/') {
            Ok(format!("{}{location}", self.base))
        } else if location.starts_with(&format!("{}/", self.base)) {
            Ok(location.into())
        } else {
            bail!("registry {} sent an upload location elsewhere: {location}", self.base)
        }
    }
}

fn header(response: &Response<ureq::Body>, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|value| value.to_str().ok()).map(Into::into)
}

fn expect_status(response: &mut Response<ureq::Body>, expected: u16, method: &str, url: &str) -> Result<()> {
    let status = response.status();
    if status == expected {
        return Ok(());
    }
    let body = response.body_mut().read_to_string().unwrap_or_default();
    bail!("{method} {url}: expected {expected}, got {status}: {body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{busybox_image, multiarch_docker_index, multiarch_index, multilayer_docker_image};
    use crate::image::media_type;
    use crate::registry::Registry;
    use crate::sha256_digest;

    const ALL_MANIFEST_TYPES: [&str; 4] = [
        media_type::OCI_MANIFEST,
        media_type::OCI_INDEX,
        media_type::DOCKER_MANIFEST,
        media_type::DOCKER_MANIFEST_LIST,
    ];

    #[test]
    fn pushed_manifests_come_back_with_the_computed_digests() -> Result<()> {
        let registry = Registry::start()?;
        let addr = registry.addr();

        let busybox = busybox_image();
        assert_eq!(push_image(&addr, "e2e/busybox", "latest", &busybox)?, busybox.digest());
        let fetched = get_manifest(&addr, "e2e/busybox", "latest", &ALL_MANIFEST_TYPES)?;
        assert_eq!(fetched.digest, busybox.digest());
        assert_eq!(fetched.media_type, media_type::OCI_MANIFEST);
        assert_eq!(sha256_digest(&fetched.bytes), busybox.digest());
        // Pushing again finds every blob in place and changes nothing.
        assert_eq!(push_image(&addr, "e2e/busybox", "again", &busybox)?, busybox.digest());

        let index = multiarch_index();
        assert_eq!(push_index(&addr, "e2e/multiarch", "latest", &index)?, index.digest());
        let fetched = get_manifest(&addr, "e2e/multiarch", "latest", &ALL_MANIFEST_TYPES)?;
        assert_eq!(fetched.digest, index.digest());
        assert_eq!(fetched.media_type, media_type::OCI_INDEX);
        for image in index.images() {
            let child = get_manifest(&addr, "e2e/multiarch", image.digest(), &[media_type::OCI_MANIFEST])?;
            assert_eq!(child.digest, image.digest());
        }

        let list = multiarch_docker_index();
        push_index(&addr, "e2e/multiarch-docker", "latest", &list)?;
        let fetched = get_manifest(&addr, "e2e/multiarch-docker", "latest", &ALL_MANIFEST_TYPES)?;
        assert_eq!(fetched.digest, list.digest());
        assert_eq!(fetched.media_type, media_type::DOCKER_MANIFEST_LIST);

        let docker = multilayer_docker_image();
        push_image(&addr, "e2e/docker", "v1", &docker)?;
        let fetched = get_manifest(&addr, "e2e/docker", "v1", &[media_type::DOCKER_MANIFEST])?;
        assert_eq!(fetched.digest, docker.digest());
        assert_eq!(fetched.media_type, media_type::DOCKER_MANIFEST);
        Ok(())
    }

    #[test]
    fn tampering_changes_a_stored_blob_but_not_its_size() -> Result<()> {
        let registry = Registry::start()?;
        let tampered = crate::fixtures::tampered_image();
        push_image(&registry.addr(), "e2e/tampered", "latest", &tampered.image)?;
        let path = registry.blob_data_path(&tampered.tampered_layer_digest);
        let before = std::fs::read(&path)?;
        registry.tamper_blob(&tampered.tampered_layer_digest)?;
        let after = std::fs::read(&path)?;
        assert_eq!(before.len(), after.len());
        assert_ne!(sha256_digest(&after), tampered.tampered_layer_digest);
        Ok(())
    }
}
