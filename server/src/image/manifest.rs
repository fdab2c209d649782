//! Manifests, indexes and image configs as data: parsing the JSON a registry sends (OCI and Docker schema 2),
//! choosing this host's platform from a multi-platform index, and chain ids.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Manifest media types we ask registries for.
pub const ACCEPTED_MANIFEST_TYPES: &[&str] = &[OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// Layer media types we can unpack (compression is also sniffed from the bytes).
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];

/// A content descriptor: what a manifest or index says of a blob.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// An OCI platform.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What a manifest request returned.
#[derive(Debug)]
pub enum Fetched {
    /// A multi-platform index (OCI index or Docker manifest list).
    Index(Vec<Descriptor>),
    /// A single-platform image manifest.
    Manifest(Manifest),
}

/// A single-platform image manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    schema_version: Option<u32>,
}

/// Parses a manifest or index. `content_type` is the registry's Content-Type, used when the document
/// does not name its own media type.
pub fn parse(bytes: &[u8]) -> Result<Fetched, String> {
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    if probe.schema_version == Some(1) {
        return Err("Docker schema 1 manifests are not supported (deprecated since 2017); re-push the image".into());
    }
    let media_type = probe.media_type.unwrap_or_default();
    if media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST || probe.manifests.is_some() {
        return Ok(Fetched::Index(probe.manifests.unwrap_or_default()));
    }
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("image manifest is malformed: {e}"))?;
    for layer in &manifest.layers {
        if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
            return Err(format!(
                "layer {} has media type {:?}, which is not an image layer cm can unpack",
                layer.digest, layer.media_type
            ));
        }
        if layer.size < 0 {
            return Err(format!("layer {} has a negative size", layer.digest));
        }
        super::reference::validate_digest(&layer.digest)?;
    }
    super::reference::validate_digest(&manifest.config.digest)?;
    Ok(Fetched::Manifest(manifest))
}

/// This host's platform in OCI terms.
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    };
    Platform { os: "linux".into(), architecture: architecture.into(), variant: variant.map(String::from) }
}

/// Chooses the manifest for `want` from an index: os and architecture must match; an entry with the same
/// variant wins over one without a variant (arm64 images often omit "v8"); an entry with a different
/// variant never matches.
pub fn select_platform<'a>(entries: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let candidates = entries
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| p.os == want.os && p.architecture == want.architecture));
    let mut fallback = None;
    for d in candidates {
        let variant = d.platform.as_ref().and_then(|p| p.variant.as_deref());
        match (variant, want.variant.as_deref()) {
            (Some(v), Some(w)) if v == w => return Some(d),
            (None, _) => {
                fallback.get_or_insert(d);
            }
            (Some(_), None) => {
                fallback.get_or_insert(d);
            }
            _ => {}
        }
    }
    fallback
}

/// The parts of an image config that cm reads.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    pub rootfs: RootFs,
    /// Defaults for containers run from the image.
    #[serde(default)]
    pub config: Option<RunConfig>,
}

/// The `config` object of an image config: how to run it.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// Parses an image config and checks it matches the manifest's layer count.
pub fn parse_config(bytes: &[u8], layers: usize) -> Result<ImageConfig, String> {
    let config: ImageConfig = serde_json::from_slice(bytes).map_err(|e| format!("image config is malformed: {e}"))?;
    if config.rootfs.diff_ids.len() != layers {
        return Err(format!(
            "image config lists {} diff ids but the manifest has {} layers",
            config.rootfs.diff_ids.len(),
            layers
        ));
    }
    for d in &config.rootfs.diff_ids {
        super::reference::validate_digest(d)?;
    }
    Ok(config)
}

/// The chain ids of a layer stack: chain(0) = diff(0), chain(n) = sha256(chain(n-1) + " " + diff(n)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>, digest: &str) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(Platform {
                os: "linux".into(),
                architecture: arch.into(),
                variant: variant.map(String::from),
            }),
        }
    }

    #[test]
    fn index_selection_matches_arch_not_position() {
        let idx = vec![entry("arm64", Some("v8"), "a"), entry("amd64", None, "b"), entry("arm", Some("v7"), "c")];
        let amd64 = Platform { os: "linux".into(), architecture: "amd64".into(), variant: None };
        assert_eq!(select_platform(&idx, &amd64).unwrap().digest, "b");
        let arm64 = Platform { os: "linux".into(), architecture: "arm64".into(), variant: Some("v8".into()) };
        assert_eq!(select_platform(&idx, &arm64).unwrap().digest, "a");
    }

    #[test]
    fn index_selection_prefers_exact_variant_and_refuses_other_variants() {
        let v7 = Platform { os: "linux".into(), architecture: "arm".into(), variant: Some("v7".into()) };
        let idx = vec![entry("arm", None, "plain"), entry("arm", Some("v7"), "v7")];
        assert_eq!(select_platform(&idx, &v7).unwrap().digest, "v7");
        let idx = vec![entry("arm", Some("v6"), "v6")];
        assert!(select_platform(&idx, &v7).is_none());
        let idx = vec![entry("arm", None, "plain")];
        assert_eq!(select_platform(&idx, &v7).unwrap().digest, "plain");
    }

    #[test]
    fn windows_entries_never_match_linux() {
        let mut e = entry("amd64", None, "w");
        e.platform.as_mut().unwrap().os = "windows".into();
        assert!(select_platform(&[e], &host_platform()).is_none());
    }

    #[test]
    fn chain_ids_follow_the_oci_formula() {
        let d1 = sha256_digest(b"one");
        let d2 = sha256_digest(b"two");
        let chain = chain_ids(&[d1.clone(), d2.clone()]);
        assert_eq!(chain[0], d1);
        assert_eq!(chain[1], sha256_digest(format!("{d1} {d2}").as_bytes()));
    }

    #[test]
    fn parse_tells_index_from_manifest_and_refuses_schema1() {
        let idx = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(matches!(parse(idx), Ok(Fetched::Index(_))));
        let d = format!("sha256:{}", "a".repeat(64));
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{d}","size":2}},
               "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{d}","size":3}}]}}"#
        );
        assert!(matches!(parse(m.as_bytes()), Ok(Fetched::Manifest(_))));
        assert!(parse(br#"{"schemaVersion":1}"#).unwrap_err().contains("schema 1"));
        let bad = m.replace("tar+zstd", "wasm");
        assert!(parse(bad.as_bytes()).unwrap_err().contains("media type"));
    }

    #[test]
    fn config_must_list_one_diff_id_per_layer() {
        let d = format!("sha256:{}", "b".repeat(64));
        let cfg = format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{d}"]}}}}"#);
        assert!(parse_config(cfg.as_bytes(), 1).is_ok());
        assert!(parse_config(cfg.as_bytes(), 2).unwrap_err().contains("2 layers"));
    }
}
