//! Images and indexes: config and manifest JSON over [`Layer`]s, in OCI or Docker schema 2 flavour.

use serde_json::{Value, json};

use crate::layer::Layer;
use crate::sha256_digest;

/// Media types of manifests, configs and layers.
pub mod media_type {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI multi-platform index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI layer, gzip.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI layer, zstd.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// OCI layer, uncompressed.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker multi-platform manifest list.
    pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker layer, gzip.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
}

/// The `created` timestamp of every image and history entry.
pub const CREATED: &str = "2026-01-01T00:00:00Z";

/// The `PATH` every fixture image sets.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Content-addressed bytes with a media type: a layer, a config or a manifest.
#[derive(Clone, Debug)]
pub struct Blob {
    /// What the bytes are, as declared in descriptors and `Content-Type`.
    pub media_type: String,
    /// The content.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
}

impl Blob {
    /// Wraps `bytes`, computing their digest.
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob { media_type: media_type.into(), digest: sha256_digest(&bytes), bytes }
    }

    /// Length of the bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The descriptor a manifest uses to point at this blob.
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size(),
        })
    }

    fn json(media_type: &str, value: &Value) -> Blob {
        Blob::new(media_type, serde_json::to_vec(value).expect("JSON serializes"))
    }
}

/// Which family of media types an image or index uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestFormat {
    /// OCI image manifest, config and index.
    Oci,
    /// Docker image manifest schema 2, container config and manifest list.
    Docker,
}

impl ManifestFormat {
    /// Media type of a single-platform manifest.
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => media_type::OCI_MANIFEST,
            ManifestFormat::Docker => media_type::DOCKER_MANIFEST,
        }
    }

    /// Media type of the image config.
    pub fn config_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => media_type::OCI_CONFIG,
            ManifestFormat::Docker => media_type::DOCKER_CONFIG,
        }
    }

    /// Media type of a multi-platform index or manifest list.
    pub fn index_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => media_type::OCI_INDEX,
            ManifestFormat::Docker => media_type::DOCKER_MANIFEST_LIST,
        }
    }
}

/// An OS/architecture/variant triple as in image configs and index entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// Go's name: `amd64`, `arm64`, `arm`...
    pub architecture: String,
    /// `v8` for arm64, `v7` for arm...
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/<architecture>[/<variant>]`.
    pub fn linux(architecture: &str, variant: Option<&str>) -> Platform {
        Platform { os: "linux".into(), architecture: architecture.into(), variant: variant.map(Into::into) }
    }

    /// The platform this process runs on, in Go's names (amd64 on x86_64, arm64 on aarch64).
    pub fn host() -> Platform {
        match std::env::consts::ARCH {
            "x86_64" => Platform::linux("amd64", None),
            "aarch64" => Platform::linux("arm64", None),
            "arm" => Platform::linux("arm", Some("v7")),
            "x86" => Platform::linux("386", None),
            "powerpc64" => Platform::linux("ppc64le", None),
            other => Platform::linux(other, None),
        }
    }

    fn to_json(&self) -> Value {
        let mut platform = json!({ "architecture": self.architecture, "os": self.os });
        if let Some(variant) = &self.variant {
            platform["variant"] = json!(variant);
        }
        platform
    }
}

/// What goes into an image config besides the layers' diff ids.
#[derive(Clone, Debug)]
pub struct ImageConfig {
    /// `architecture`, `os` and `variant`.
    pub platform: Platform,
    /// `config.Env`, `NAME=value` strings.
    pub env: Vec<String>,
    /// `config.Cmd`.
    pub cmd: Vec<String>,
    /// `config.Entrypoint`, left out when `None`.
    pub entrypoint: Option<Vec<String>>,
    /// `config.WorkingDir`.
    pub working_dir: String,
    /// `config.User` (`""` means root).
    pub user: String,
}

impl Default for ImageConfig {
    /// Host platform, the usual PATH, `Cmd ["sh"]`, no entrypoint, working dir `/`, default user.
    fn default() -> ImageConfig {
        ImageConfig {
            platform: Platform::host(),
            env: vec![DEFAULT_PATH.into()],
            cmd: vec!["sh".into()],
            entrypoint: None,
            working_dir: "/".into(),
            user: String::new(),
        }
    }
}

/// A single-platform image: layers, config blob and manifest blob.
#[derive(Clone, Debug)]
pub struct Image {
    format: ManifestFormat,
    config: ImageConfig,
    layers: Vec<Layer>,
    config_blob: Blob,
    manifest: Blob,
}

impl Image {
    /// Builds the config and manifest. For [`ManifestFormat::Docker`], gzip layers declared with the
    /// OCI gzip media type are declared with the Docker one instead (Docker has no zstd type, so use
    /// gzip layers there).
    pub fn new(format: ManifestFormat, config: ImageConfig, layers: Vec<Layer>) -> Image {
        let layers: Vec<Layer> = match format {
            ManifestFormat::Oci => layers,
            ManifestFormat::Docker => layers
                .into_iter()
                .map(|layer| match layer.media_type() {
                    media_type::OCI_LAYER_GZIP => layer.with_media_type(media_type::DOCKER_LAYER_GZIP),
                    _ => layer,
                })
                .collect(),
        };
        let config_blob = Blob::json(format.config_media_type(), &config_json(&config, &layers));
        let manifest = Blob::json(
            format.manifest_media_type(),
            &json!({
                "schemaVersion": 2,
                "mediaType": format.manifest_media_type(),
                "config": config_blob.descriptor(),
                "layers": layers.iter().map(|layer| layer.blob().descriptor()).collect::<Vec<_>>(),
            }),
        );
        Image { format, config, layers, config_blob, manifest }
    }

    /// The same image with its config changed by `change`, e.g.
    /// `busybox_image().with_config(|c| c.cmd = vec!["true".into()])`.
    pub fn with_config(self, change: impl FnOnce(&mut ImageConfig)) -> Image {
        let mut config = self.config;
        change(&mut config);
        Image::new(self.format, config, self.layers)
    }

    /// OCI or Docker.
    pub fn format(&self) -> ManifestFormat {
        self.format
    }

    /// What the config blob was built from.
    pub fn config(&self) -> &ImageConfig {
        &self.config
    }

    /// The platform from the config.
    pub fn platform(&self) -> &Platform {
        &self.config.platform
    }

    /// Layers, bottom first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The config JSON blob.
    pub fn config_blob(&self) -> &Blob {
        &self.config_blob
    }

    /// The manifest JSON blob.
    pub fn manifest(&self) -> &Blob {
        &self.manifest
    }

    /// The manifest digest: what a registry reports as `Docker-Content-Digest`.
    pub fn digest(&self) -> &str {
        &self.manifest.digest
    }

    /// The blobs a manifest refers to: config first, then the layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config_blob).chain(self.layers.iter().map(Layer::blob))
    }
}

fn config_json(config: &ImageConfig, layers: &[Layer]) -> Value {
    let mut runtime = json!({
        "Env": config.env,
        "Cmd": config.cmd,
        "WorkingDir": config.working_dir,
        "User": config.user,
    });
    if let Some(entrypoint) = &config.entrypoint {
        runtime["Entrypoint"] = json!(entrypoint);
    }
    let mut value = config.platform.to_json();
    value["created"] = json!(CREATED);
    value["config"] = runtime;
    value["rootfs"] = json!({
        "type": "layers",
        "diff_ids": layers.iter().map(Layer::diff_id).collect::<Vec<_>>(),
    });
    value["history"] = (1..=layers.len())
        .map(|n| json!({ "created": CREATED, "created_by": format!("cm-e2e fixture layer {n}") }))
        .collect();
    value
}

/// A multi-platform index (OCI) or manifest list (Docker) of images.
#[derive(Clone, Debug)]
pub struct Index {
    format: ManifestFormat,
    images: Vec<Image>,
    manifest: Blob,
}

impl Index {
    /// Lists `images` in the given order, each with its config's platform.
    pub fn new(format: ManifestFormat, images: Vec<Image>) -> Index {
        let manifests: Vec<Value> = images
            .iter()
            .map(|image| {
                let mut descriptor = image.manifest().descriptor();
                descriptor["platform"] = image.platform().to_json();
                descriptor
            })
            .collect();
        let manifest = Blob::json(
            format.index_media_type(),
            &json!({
                "schemaVersion": 2,
                "mediaType": format.index_media_type(),
                "manifests": manifests,
            }),
        );
        Index { format, images, manifest }
    }

    /// OCI index or Docker manifest list.
    pub fn format(&self) -> ManifestFormat {
        self.format
    }

    /// The listed images, in index order.
    pub fn images(&self) -> &[Image] {
        &self.images
    }

    /// The image for `platform`, if listed.
    pub fn image_for(&self, platform: &Platform) -> Option<&Image> {
        self.images.iter().find(|image| image.platform() == platform)
    }

    /// The index JSON blob.
    pub fn manifest(&self) -> &Blob {
        &self.manifest
    }

    /// The index digest: what a registry reports as `Docker-Content-Digest`.
    pub fn digest(&self) -> &str {
        &self.manifest.digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Compression, Entry};

    fn layer() -> Layer {
        Layer::new(&[Entry::file("/a", 0o644, "a")], Compression::Gzip)
    }

    #[test]
    fn manifest_points_at_config_and_layers_by_digest() {
        let image = Image::new(ManifestFormat::Oci, ImageConfig::default(), vec![layer()]);
        let manifest: Value = serde_json::from_slice(&image.manifest().bytes).unwrap();
        assert_eq!(manifest["mediaType"], media_type::OCI_MANIFEST);
        assert_eq!(manifest["config"]["digest"], image.config_blob().digest);
        assert_eq!(manifest["layers"][0]["digest"], layer().digest());
        let config: Value = serde_json::from_slice(&image.config_blob().bytes).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], layer().diff_id());
        assert_eq!(config["config"]["Env"][0], DEFAULT_PATH);
    }

    #[test]
    fn docker_images_declare_docker_media_types() {
        let image = Image::new(ManifestFormat::Docker, ImageConfig::default(), vec![layer()]);
        let manifest: Value = serde_json::from_slice(&image.manifest().bytes).unwrap();
        assert_eq!(manifest["mediaType"], media_type::DOCKER_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], media_type::DOCKER_CONFIG);
        assert_eq!(manifest["layers"][0]["mediaType"], media_type::DOCKER_LAYER_GZIP);
    }
}
