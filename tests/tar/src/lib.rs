//! Tar archives for cm's tests: the one builder behind the unpacker's unit tests (cm-server) and the image
//! layers of the end-to-end fixtures (cm-e2e).
//!
//! A [`Tar`] is built entry by entry. [`Raw`] entries go into the header byte for byte (names with `..`,
//! absolute paths, any owner, mode, mtime or type, PAX records, a header changed before its checksum), so
//! hostile archives reach an unpacker as written. [`Entry`] values are the checked kind the image fixtures
//! use: leading `/` stripped, owner 0:0 and [`FIXED_MTIME`], long paths encoded as tar does; the same entries
//! always give the same bytes.

#![warn(missing_docs)]

use std::io;

pub use tar::{EntryType, Header};

/// Modification time of every entry unless a [`Raw`] says otherwise: 2026-01-01T00:00:00Z.
pub const FIXED_MTIME: u64 = 1_767_225_600;

/// One entry's header fields, written verbatim by [`Tar::raw`].
#[derive(Clone, Debug)]
pub struct Raw<'a> {
    /// Header name field (at most 100 bytes), unchanged.
    pub name: &'a [u8],
    /// Entry type: regular, directory, symlink, hard link, device, PAX header...
    pub kind: EntryType,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Header link name field (at most 100 bytes), unchanged.
    pub link: &'a [u8],
    /// Data following the header.
    pub data: &'a [u8],
    /// Device major and minor numbers (character and block devices).
    pub device: (u32, u32),
}

impl<'a> Raw<'a> {
    /// An entry `name` of `kind`: mode 0755 for a directory, else 0644; owner 0:0; [`FIXED_MTIME`]; no link,
    /// data or device numbers.
    pub fn new(name: &'a str, kind: EntryType) -> Self {
        Raw {
            name: name.as_bytes(),
            kind,
            mode: if kind == EntryType::Directory { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: FIXED_MTIME,
            link: b"",
            data: b"",
            device: (0, 0),
        }
    }
}

/// A tar stream being built; [`Tar::finish`] gives its bytes with the end-of-archive marker.
pub struct Tar {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for Tar {
    fn default() -> Self {
        Tar { builder: tar::Builder::new(Vec::new()) }
    }
}

impl Tar {
    /// An empty archive.
    pub fn new() -> Tar {
        Tar::default()
    }

    /// Appends an entry written verbatim.
    ///
    /// # Panics
    /// If the name or link name is longer than its 100-byte header field.
    pub fn raw(&mut self, raw: Raw<'_>) -> &mut Self {
        self.raw_with(raw, |_| {})
    }

    /// Appends an entry written verbatim; `adjust` may change the header before its checksum is computed
    /// (blank or garbage numeric fields, say).
    ///
    /// # Panics
    /// If the name or link name is longer than its 100-byte header field.
    pub fn raw_with(&mut self, raw: Raw<'_>, adjust: impl FnOnce(&mut Header)) -> &mut Self {
        let mut header = Header::new_gnu();
        copy_verbatim(&mut header.as_old_mut().name, raw.name);
        copy_verbatim(&mut header.as_old_mut().linkname, raw.link);
        header.set_entry_type(raw.kind);
        header.set_mode(raw.mode);
        header.set_uid(raw.uid);
        header.set_gid(raw.gid);
        header.set_mtime(raw.mtime);
        header.set_size(raw.data.len() as u64);
        if raw.device != (0, 0) {
            header.set_device_major(raw.device.0).expect("a GNU header has device fields");
            header.set_device_minor(raw.device.1).expect("a GNU header has device fields");
        }
        adjust(&mut header);
        header.set_cksum();
        self.builder.append(&header, raw.data).expect("appending to memory");
        self
    }

    /// A regular file `name` (verbatim) holding `data`.
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(Raw { data, ..Raw::new(name, EntryType::Regular) })
    }

    /// A directory `name` (verbatim).
    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(Raw::new(name, EntryType::Directory))
    }

    /// A symbolic link `name -> target`, both verbatim.
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(Raw { link: target.as_bytes(), mode: 0o777, ..Raw::new(name, EntryType::Symlink) })
    }

    /// A hard link `name -> target`, both verbatim.
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(Raw { link: target.as_bytes(), ..Raw::new(name, EntryType::Link) })
    }

    /// A PAX extended header applying `records` (key, value) to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (key, value) in records {
            // "LEN KEY=VALUE\n", where LEN counts itself.
            let body = key.len() + value.len() + 3; // ' ', '=', '\n'
            let mut len = body + body.to_string().len();
            if len.to_string().len() != body.to_string().len() {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.raw(Raw { data: &data, ..Raw::new("pax", EntryType::XHeader) })
    }

    /// Appends a checked entry (see [`Entry`]).
    ///
    /// # Errors
    /// If a checked path cannot be encoded in tar (`..`), or a raw name is too long for its field.
    pub fn entry(&mut self, entry: &Entry) -> io::Result<&mut Self> {
        let mut header = Header::new_gnu();
        header.set_mtime(FIXED_MTIME);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        let builder = &mut self.builder;
        match entry {
            Entry::Dir { path, mode } => {
                header.set_entry_type(EntryType::Directory);
                header.set_mode(*mode);
                builder.append_data(&mut header, format!("{}/", relative(path)), io::empty())?;
            }
            Entry::File { path, mode, content } => {
                header.set_entry_type(EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(content.len() as u64);
                builder.append_data(&mut header, relative(path), content.as_slice())?;
            }
            Entry::Symlink { path, target } => {
                header.set_entry_type(EntryType::Symlink);
                header.set_mode(0o777);
                builder.append_link(&mut header, relative(path), target)?;
            }
            Entry::Hardlink { path, target } => {
                header.set_entry_type(EntryType::Link);
                header.set_mode(0o644);
                builder.append_link(&mut header, relative(path), relative(target))?;
            }
            Entry::Raw(raw) => {
                for field in [&raw.name, &raw.link_name] {
                    if field.len() > 100 {
                        return Err(io::Error::other(format!(
                            "raw tar name {:?} is longer than 100 bytes",
                            String::from_utf8_lossy(field)
                        )));
                    }
                }
                self.raw(Raw {
                    name: &raw.name,
                    kind: raw.kind,
                    mode: raw.mode,
                    uid: 0,
                    gid: 0,
                    mtime: FIXED_MTIME,
                    link: &raw.link_name,
                    data: &raw.content,
                    device: raw.device,
                });
            }
        }
        Ok(self)
    }

    /// The archive so far, followed by the end-of-archive marker (two zero blocks).
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.builder.get_ref().clone();
        out.extend_from_slice(&[0; 1024]);
        out
    }
}

/// The tar archive of `entries`, in order, with its end-of-archive marker.
///
/// # Errors
/// As [`Tar::entry`].
pub fn tar_of(entries: &[Entry]) -> io::Result<Vec<u8>> {
    let mut tar = Tar::new();
    for entry in entries {
        tar.entry(entry)?;
    }
    Ok(tar.finish())
}

/// One checked entry of a layer: paths may start with `/` (stripped, as in real layers); every entry is owned
/// by 0:0 with [`FIXED_MTIME`]. Hostile names go in [`Entry::Raw`].
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

/// An owned entry written byte for byte: `name` and `link_name` go into the header unchanged, so they may
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
        Entry::raw(EntryType::Regular, name, "", 0o644, content.into(), (0, 0))
    }

    /// A symbolic link `name -> target`, both verbatim.
    pub fn raw_symlink(name: &str, target: &str) -> Entry {
        Entry::raw(EntryType::Symlink, name, target, 0o777, Vec::new(), (0, 0))
    }

    /// A hard link `name -> target`, both verbatim.
    pub fn raw_hardlink(name: &str, target: &str) -> Entry {
        Entry::raw(EntryType::Link, name, target, 0o777, Vec::new(), (0, 0))
    }

    /// A character device node `name` with the given device numbers (e.g. `1, 3` is /dev/null).
    pub fn raw_char_device(name: &str, major: u32, minor: u32) -> Entry {
        Entry::raw(EntryType::Char, name, "", 0o666, Vec::new(), (major, minor))
    }

    fn raw(kind: EntryType, name: &str, link: &str, mode: u32, content: Vec<u8>, device: (u32, u32)) -> Entry {
        Entry::Raw(RawEntry { kind, name: name.into(), link_name: link.into(), mode, content, device })
    }
}

/// Archive paths are relative: `/bin/sh` is stored as `bin/sh`.
fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// Writes `value` into a fixed header field, zero-filled.
///
/// # Panics
/// If `value` does not fit.
fn copy_verbatim(field: &mut [u8], value: &[u8]) {
    assert!(
        value.len() <= field.len(),
        "raw tar name {:?} is longer than {} bytes",
        String::from_utf8_lossy(value),
        field.len()
    );
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, link name, type) of every entry of `tar`.
    fn listing(tar: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>, EntryType)> {
        tar::Archive::new(tar)
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let header = entry.header();
                let link = header.link_name_bytes().map(|l| l.into_owned());
                (entry.path_bytes().into_owned(), link, header.entry_type())
            })
            .collect()
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
        let tar = tar_of(&hostile).unwrap();
        let expected: Vec<(Vec<u8>, Option<Vec<u8>>, EntryType)> = vec![
            (b"../../escape".to_vec(), None, EntryType::Regular),
            (b"/abs/file".to_vec(), None, EntryType::Regular),
            (b"evil".to_vec(), Some(b"/".to_vec()), EntryType::Symlink),
            (b"evil/pwned".to_vec(), None, EntryType::Regular),
            (b"hl".to_vec(), Some(b"../../../etc/passwd".to_vec()), EntryType::Link),
            (b"dev/evil-null".to_vec(), None, EntryType::Char),
        ];
        assert_eq!(listing(&tar), expected);
        // The very first header block starts with the hostile name itself.
        assert!(tar.starts_with(b"../../escape\0"));
    }

    #[test]
    fn whiteouts_use_oci_names() {
        let tar = tar_of(&[Entry::whiteout("/data/a"), Entry::opaque("/data/dir/")]).unwrap();
        let names: Vec<Vec<u8>> = listing(&tar).into_iter().map(|(name, _, _)| name).collect();
        assert_eq!(names, vec![b"data/.wh.a".to_vec(), b"data/dir/.wh..wh..opq".to_vec()]);
    }

    #[test]
    fn checked_entries_are_relative_and_owned_by_root_at_the_fixed_time() {
        let long = format!("/{}/file", "d".repeat(120));
        let tar = tar_of(&[Entry::file("/etc/motd", 0o644, "hi"), Entry::file(&long, 0o600, "x")]).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let found: Vec<(Vec<u8>, u64, u64, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (e.path_bytes().into_owned(), h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap())
            })
            .collect();
        assert_eq!(found[0], (b"etc/motd".to_vec(), 0, 0, FIXED_MTIME));
        assert_eq!(found[1].0, &long.as_bytes()[1..], "a long path is encoded, not cut");
    }

    #[test]
    fn finish_ends_with_two_zero_blocks_and_can_be_called_again() {
        let mut tar = Tar::new();
        tar.file("a", b"a");
        let first = tar.finish();
        assert_eq!(first.len(), 512 * 2 + 1024);
        assert!(first.ends_with(&[0; 1024]));
        tar.file("b", b"b");
        assert_eq!(listing(&tar.finish()).len(), 2);
    }

    #[test]
    fn pax_records_apply_to_the_next_entry() {
        let mut tar = Tar::new();
        let deep = format!("{}leaf", "x/".repeat(80));
        tar.pax(&[("path", deep.as_bytes())]).file("placeholder", b"l");
        assert_eq!(listing(&tar.finish())[0].0, deep.as_bytes());
    }
}
