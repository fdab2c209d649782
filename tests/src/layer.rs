//! Image layers: tar archives built in memory from a list of [`Entry`]s (by [`cm_test_tar`], the tar builder
//! the unpacker's unit tests use too), then compressed.
//!
//! Every entry gets the same owner (0:0) and modification time ([`FIXED_MTIME`]), and the compressors
//! write no timestamps, so the same entries always give the same digest.

use std::io::Write;

pub use cm_test_tar::{Entry, FIXED_MTIME, RawEntry};

use crate::image::{Blob, media_type};
use crate::sha256_digest;

/// How a layer's tar archive is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip (`+gzip`), the one every client supports.
    Gzip,
    /// zstd (`+zstd`), OCI only.
    Zstd,
    /// Plain tar.
    Uncompressed,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::Gzip => media_type::OCI_LAYER_GZIP,
            Compression::Zstd => media_type::OCI_LAYER_ZSTD,
            Compression::Uncompressed => media_type::OCI_LAYER_TAR,
        }
    }

    fn compress(self, tar: Vec<u8>) -> Vec<u8> {
        match self {
            Compression::Gzip => {
                // GzEncoder writes mtime 0 and no file name: reproducible.
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(&tar).expect("gzip into memory");
                encoder.finish().expect("gzip into memory")
            }
            Compression::Zstd => zstd::encode_all(tar.as_slice(), 3).expect("zstd into memory"),
            Compression::Uncompressed => tar,
        }
    }
}

/// A layer blob: compressed tar bytes, their digest and media type, and the diff id (digest of the
/// uncompressed tar) that goes into the image config.
#[derive(Clone, Debug)]
pub struct Layer {
    blob: Blob,
    diff_id: String,
    compression: Compression,
}

impl Layer {
    /// Builds the tar archive of `entries` (in order) and compresses it; the media type is the OCI one
    /// for `compression` (see [`Layer::with_media_type`] for others).
    ///
    /// # Panics
    /// If a checked entry has a path tar cannot encode (`..`, too long a raw name): a bug in the fixture.
    pub fn new(entries: &[Entry], compression: Compression) -> Layer {
        let tar = cm_test_tar::tar_of(entries).expect("layer entries must be encodable in tar");
        let diff_id = sha256_digest(&tar);
        let bytes = compression.compress(tar);
        Layer { blob: Blob::new(compression.oci_media_type(), bytes), diff_id, compression }
    }

    /// The same bytes declared with another media type, e.g.
    /// [`media_type::DOCKER_LAYER_GZIP`] (or a deliberately wrong one).
    pub fn with_media_type(mut self, media_type: &str) -> Layer {
        self.blob = Blob::new(media_type, std::mem::take(&mut self.blob.bytes));
        self
    }

    /// The blob (bytes, digest, media type) as pushed to a registry.
    pub fn blob(&self) -> &Blob {
        &self.blob
    }

    /// The compressed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.blob.bytes
    }

    /// `sha256:<hex>` of the compressed bytes.
    pub fn digest(&self) -> &str {
        &self.blob.digest
    }

    /// Size of the compressed bytes.
    pub fn size(&self) -> u64 {
        self.blob.size()
    }

    /// The media type a manifest declares for this layer.
    pub fn media_type(&self) -> &str {
        &self.blob.media_type
    }

    /// `sha256:<hex>` of the uncompressed tar.
    pub fn diff_id(&self) -> &str {
        &self.diff_id
    }

    /// How the tar is compressed.
    pub fn compression(&self) -> Compression {
        self.compression
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn entries() -> Vec<Entry> {
        vec![
            Entry::dir("/etc", 0o755),
            Entry::file("/etc/motd", 0o644, "hello\n"),
            Entry::symlink("/etc/link", "motd"),
            Entry::hardlink("/etc/hard", "/etc/motd"),
        ]
    }

    fn uncompress(layer: &Layer) -> Vec<u8> {
        match layer.compression() {
            Compression::Gzip => {
                let mut tar = Vec::new();
                flate2::read::GzDecoder::new(layer.bytes()).read_to_end(&mut tar).unwrap();
                tar
            }
            Compression::Zstd => zstd::decode_all(layer.bytes()).unwrap(),
            Compression::Uncompressed => layer.bytes().to_vec(),
        }
    }

    #[test]
    fn digest_and_diff_id_are_sha256_of_compressed_and_uncompressed_bytes() {
        for compression in [Compression::Gzip, Compression::Zstd, Compression::Uncompressed] {
            let layer = Layer::new(&entries(), compression);
            assert_eq!(layer.digest(), sha256_digest(layer.bytes()));
            assert_eq!(layer.size(), layer.bytes().len() as u64);
            assert_eq!(layer.diff_id(), sha256_digest(&uncompress(&layer)));
            assert_eq!(layer.media_type(), compression.oci_media_type());
        }
    }

    #[test]
    fn same_entries_give_the_same_digest() {
        let a = Layer::new(&entries(), Compression::Gzip);
        let b = Layer::new(&entries(), Compression::Gzip);
        assert_eq!(a.digest(), b.digest());
    }
}
