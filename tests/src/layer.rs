//! Image layers: tar archives built in memory from a list of [`Entry`]s, then compressed.
//!
//! Every entry gets the same owner (0:0) and modification time ([`FIXED_MTIME`]), and the compressors
//! write no timestamps, so the same entries always give the same digest.

use std::io::{self, Write};

use tar::{EntryType, Header};

use crate::image::{Blob, media_type};
use crate::sha256_digest;

/// Modification time of every entry: 2026-01-01T00:00:00Z.
pub const FIXED_MTIME: u64 = 1_767_225_600;

/// One entry of a layer's tar archive.
///
/// Paths of the checked variants may start with `/` (it is stripped, as in real layers); hostile
/// names go in [`Entry::Raw`].
#[derive(Clone, Debug)]
pub enum Entry {
    /// A directory.
    Dir {
        /// Where, e.g. `/etc`.
        path: String,
        /// Permission bits, e.g. `0o755`.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Where, e.g. `/etc/motd`.
        path: String,
        /// Permission bits, e.g. `0o644`.
        mode: u32,
        /// The file's bytes.
        content: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// Where the link is.
        path: String,
        /// What it points at, written as given (absolute targets are fine).
        target: String,
    },
    /// A hard link to an earlier entry of the same archive.
    Hardlink {
        /// Where the link is.
        path: String,
        /// The earlier entry, e.g. `/bin/busybox`.
        target: String,
    },
    /// An entry whose header is written verbatim, without any validation.
    Raw(RawEntry),
}

/// A tar entry written byte for byte: `name` and `link_name` go into the header unchanged, so they may
/// hold `..`, absolute paths or anything else an unpacker must refuse.
#[derive(Clone, Debug)]
pub struct RawEntry {
    /// Entry type: regular, symlink, hard link, character device...
    pub kind: EntryType,
    /// Header name field (at most 100 bytes).
    pub name: Vec<u8>,
    /// Header link name field (at most 100 bytes; empty unless a link).
    pub link_name: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Data following the header (regular files).
    pub content: Vec<u8>,
    /// Device major and minor numbers, for character and block devices.
    pub device: (u32, u32),
}

impl Entry {
    /// A directory with `mode` (e.g. `0o755`, or `0o1777` for /tmp).
    pub fn dir(path: &str, mode: u32) -> Entry {
        Entry::Dir { path: path.into(), mode }
    }

    /// A regular file with `mode` and `content`.
    pub fn file(path: &str, mode: u32, content: impl Into<Vec<u8>>) -> Entry {
        Entry::File { path: path.into(), mode, content: content.into() }
    }

    /// A symbolic link `path -> target`.
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::Symlink { path: path.into(), target: target.into() }
    }

    /// A hard link `path` to the earlier entry `target`.
    pub fn hardlink(path: &str, target: &str) -> Entry {
        Entry::Hardlink { path: path.into(), target: target.into() }
    }

    /// An OCI whiteout deleting `path` from the layers below (`/data/a` becomes `data/.wh.a`).
    pub fn whiteout(path: &str) -> Entry {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        Entry::file(&format!("{dir}/.wh.{name}"), 0o644, Vec::new())
    }

    /// An OCI opaque marker hiding everything the layers below put in `dir`.
    pub fn opaque(dir: &str) -> Entry {
        Entry::file(&format!("{}/.wh..wh..opq", dir.trim_end_matches('/')), 0o644, Vec::new())
    }

    /// A regular file whose header name is `name`, verbatim.
    pub fn raw_file(name: &str, content: impl Into<Vec<u8>>) -> Entry {
        Entry::Raw(RawEntry {
            kind: EntryType::Regular,
            name: name.into(),
            link_name: Vec::new(),
            mode: 0o644,
            content: content.into(),
            device: (0, 0),
        })
    }

    /// A symbolic link `name -> target`, both verbatim.
    pub fn raw_symlink(name: &str, target: &str) -> Entry {
        Entry::raw_link(EntryType::Symlink, name, target)
    }

    /// A hard link `name -> target`, both verbatim.
    pub fn raw_hardlink(name: &str, target: &str) -> Entry {
        Entry::raw_link(EntryType::Link, name, target)
    }

    /// A character device node `name` with the given device numbers (e.g. `1, 3` is /dev/null).
    pub fn raw_char_device(name: &str, major: u32, minor: u32) -> Entry {
        Entry::Raw(RawEntry {
            kind: EntryType::Char,
            name: name.into(),
            link_name: Vec::new(),
            mode: 0o666,
            content: Vec::new(),
            device: (major, minor),
        })
    }

    fn raw_link(kind: EntryType, name: &str, target: &str) -> Entry {
        Entry::Raw(RawEntry {
            kind,
            name: name.into(),
            link_name: target.into(),
            mode: 0o777,
            content: Vec::new(),
            device: (0, 0),
        })
    }
}

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
        let tar = build_tar(entries).expect("layer entries must be encodable in tar");
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

fn build_tar(entries: &[Entry]) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        append(&mut builder, entry)?;
    }
    builder.into_inner()
}

fn append(builder: &mut tar::Builder<Vec<u8>>, entry: &Entry) -> io::Result<()> {
    let mut header = Header::new_gnu();
    header.set_mtime(FIXED_MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(0);
    match entry {
        Entry::Dir { path, mode } => {
            header.set_entry_type(EntryType::Directory);
            header.set_mode(*mode);
            builder.append_data(&mut header, format!("{}/", relative(path)), io::empty())
        }
        Entry::File { path, mode, content } => {
            header.set_entry_type(EntryType::Regular);
            header.set_mode(*mode);
            header.set_size(content.len() as u64);
            builder.append_data(&mut header, relative(path), content.as_slice())
        }
        Entry::Symlink { path, target } => {
            header.set_entry_type(EntryType::Symlink);
            header.set_mode(0o777);
            builder.append_link(&mut header, relative(path), target)
        }
        Entry::Hardlink { path, target } => {
            header.set_entry_type(EntryType::Link);
            header.set_mode(0o644);
            builder.append_link(&mut header, relative(path), relative(target))
        }
        Entry::Raw(raw) => {
            header.set_entry_type(raw.kind);
            header.set_mode(raw.mode);
            header.set_size(raw.content.len() as u64);
            header.set_device_major(raw.device.0)?;
            header.set_device_minor(raw.device.1)?;
            let old = header.as_old_mut();
            copy_verbatim(&mut old.name, &raw.name)?;
            copy_verbatim(&mut old.linkname, &raw.link_name)?;
            header.set_cksum();
            builder.append(&header, raw.content.as_slice())
        }
    }
}

/// Archive paths are relative: `/bin/sh` is stored as `bin/sh`.
fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

fn copy_verbatim(field: &mut [u8], value: &[u8]) -> io::Result<()> {
    if value.len() > field.len() {
        return Err(io::Error::other(format!(
            "raw tar name {:?} is longer than {} bytes",
            String::from_utf8_lossy(value),
            field.len()
        )));
    }
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
    Ok(())
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

    #[test]
    fn raw_names_and_link_names_survive_verbatim() {
        let hostile = [
            Entry::raw_file("../../escape", "x"),
            Entry::raw_file("/abs/file", "x"),
            Entry::raw_symlink("evil", "/"),
            Entry::raw_file("evil/pwned", "x"),
            Entry::raw_hardlink("hl", "../../../etc/passwd"),
            Entry::raw_char_device("dev/evil-null", 1, 3),
        ];
        let layer = Layer::new(&hostile, Compression::Gzip);
        let tar = uncompress(&layer);
        let mut archive = tar::Archive::new(tar.as_slice());
        let found: Vec<(Vec<u8>, Option<Vec<u8>>, EntryType)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let header = entry.header();
                let link = header.link_name_bytes().map(|l| l.into_owned());
                (entry.path_bytes().into_owned(), link, header.entry_type())
            })
            .collect();
        let expected: Vec<(Vec<u8>, Option<Vec<u8>>, EntryType)> = vec![
            (b"../../escape".to_vec(), None, EntryType::Regular),
            (b"/abs/file".to_vec(), None, EntryType::Regular),
            (b"evil".to_vec(), Some(b"/".to_vec()), EntryType::Symlink),
            (b"evil/pwned".to_vec(), None, EntryType::Regular),
            (b"hl".to_vec(), Some(b"../../../etc/passwd".to_vec()), EntryType::Link),
            (b"dev/evil-null".to_vec(), None, EntryType::Char),
        ];
        assert_eq!(found, expected);
        // The very first header block starts with the hostile name itself.
        assert!(tar.starts_with(b"../../escape\0"));
    }

    #[test]
    fn whiteouts_use_oci_names() {
        let layer = Layer::new(&[Entry::whiteout("/data/a"), Entry::opaque("/data/dir/")], Compression::Uncompressed);
        let mut archive = tar::Archive::new(layer.bytes());
        let names: Vec<Vec<u8>> =
            archive.entries().unwrap().map(|entry| entry.unwrap().path_bytes().into_owned()).collect();
        assert_eq!(names, vec![b"data/.wh.a".to_vec(), b"data/dir/.wh..wh..opq".to_vec()]);
    }
}
