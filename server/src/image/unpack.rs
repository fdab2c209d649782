//! Unpacking one OCI image layer (an uncompressed tar stream) into an empty snapshot directory.
//!
//! Every entry is hostile. The snapshot directory is opened once (the root) and each entry's parent
//! directory is resolved relative to it with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so
//! `..`, absolute names and symlinks planted by earlier entries (absolute or relative) all stay
//! clamped inside the root, as in containerd. The entry itself is then made with `*at()` calls on its
//! last component that never follow a symlink there. OCI whiteouts become overlayfs whiteouts.
//!
//! The tar crate only parses; every write happens here. Layers are not trusted to set up overlay
//! state: `trusted.*` xattrs from the archive are dropped and device nodes are refused.
//!
//! Beside this pass over the entries: `types` (limits, statistics, errors), `names` (normalization and
//! whiteouts) and `fs` (descriptor-relative create-or-replace and removal).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

use self::fs::{create_replacing, is_dir_nofollow, remove_any, same_file};
use self::names::{EntryPath, Name, Whiteout, normalize, shown, whiteout};
pub use self::types::{Limits, Stats, UnpackError};
use crate::fsroot::{DIR_OPEN, DIR_PATH, open_in_root, open_or_create_dirs};

/// Unpacks an uncompressed tar stream (one OCI image layer) into `dest`, an existing empty directory,
/// turning OCI whiteouts into overlayfs whiteouts. Every entry is treated as hostile.
///
/// After the end-of-archive marker the rest of `tar` is read and discarded, so a hashing reader
/// underneath sees every byte of the blob. On error `dest` holds a partial layer; throw it away.
pub fn unpack_layer<R: Read>(tar: R, dest: &Path, limits: &Limits) -> Result<Stats, UnpackError> {
    let root = rfs::open(dest, DIR_PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| UnpackError::Dest { path: dest.to_owned(), source: e.into() })?;
    let mut unpacker = Unpacker::new(root, limits);
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        unpacker.entry(entry.map_err(UnpackError::Tar)?)?;
    }
    unpacker.apply_dir_times()?;
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(UnpackError::Tar)?;
    let stats = unpacker.finish();
    tracing::debug!(entries = stats.entries, bytes = stats.bytes, skipped = stats.skipped.len(), "layer unpacked");
    Ok(stats)
}

/// Size of the buffer regular-file data is copied through.
const COPY_BUFFER: usize = 256 * 1024;
/// Most notes kept in [`Stats::skipped`].
const MAX_NOTES: usize = 100;

/// The xattr that marks a directory opaque to overlayfs.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// PAX record key prefix carrying an extended attribute.
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
/// PAX record key prefix of GNU's PAX-format sparse files, which the tar crate does not expand.
const PAX_SPARSE_PREFIX: &[u8] = b"GNU.sparse.";

/// One pass over a layer's entries, writing them below `root`.
struct Unpacker<'a> {
    /// The destination directory (`O_PATH`); every path is resolved inside it.
    root: OwnedFd,
    limits: &'a Limits,
    stats: Stats,
    /// Notes that did not fit in `stats.skipped`.
    notes_dropped: u64,
    /// The previous entry's parent directory, when reusing it for the next entry is safe.
    cached_parent: Option<Parent>,
    /// Directories whose mtime is set once all entries are in (later entries change it).
    dir_times: Vec<DirTime>,
    buf: Vec<u8>,
}

/// An open parent directory and the normalized path it was resolved from.
struct Parent {
    path: Vec<u8>,
    fd: OwnedFd,
}

/// A directory's mtime from the archive; `path` is `None` for the root.
struct DirTime {
    path: Option<EntryPath>,
    mtime: Timespec,
}

/// An entry's metadata from its header and PAX records.
struct Meta {
    uid: Uid,
    gid: Gid,
    /// Permission bits, including setuid, setgid and sticky.
    mode: Mode,
    mtime: Timespec,
    /// Extended attributes that may be applied (`user.*`, `security.capability`).
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Names of extended attributes that were dropped.
    refused_xattrs: Vec<String>,
    /// The entry is a GNU PAX-format sparse file, which is not supported.
    pax_sparse: bool,
}

impl<'a> Unpacker<'a> {
    fn new(root: OwnedFd, limits: &'a Limits) -> Self {
        Unpacker {
            root,
            limits,
            stats: Stats::default(),
            notes_dropped: 0,
            cached_parent: None,
            dir_times: Vec::new(),
            buf: vec![0; COPY_BUFFER],
        }
    }

    /// Checks an entry against the limits, then dispatches it by whiteout name and type.
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        self.stats.entries += 1;
        if self.stats.entries > self.limits.max_entries {
            return Err(UnpackError::TooManyEntries { limit: self.limits.max_entries });
        }
        let raw = entry.path_bytes().into_owned();
        let shown = shown(&raw);
        if raw.len() > self.limits.max_path_len {
            return Err(UnpackError::PathTooLong { path: shown, limit: self.limits.max_path_len });
        }
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Archive-wide defaults (git archive writes a comment here); nothing to apply.
            return Ok(());
        }
        if kind.is_pax_local_extensions() || kind.is_gnu_longname() || kind.is_gnu_longlink() {
            // Only reaches here behind a header the tar crate does not recognize as ustar or GNU.
            self.note(format!("skipped {shown}: stray {:?} record", char::from(kind.as_byte())));
            return Ok(());
        }
        // Old (v7) archives mark directories with a trailing slash on a regular-file entry.
        let is_dir = kind == EntryType::Directory || (kind == EntryType::Regular && raw.ends_with(b"/"));
        let meta = Meta::read(&mut entry, &shown)?;
        for name in &meta.refused_xattrs {
            self.note(format!("ignored xattr {name} on {shown}"));
        }

        let path = match normalize(&raw) {
            Name::Child(path) => path,
            Name::Root if is_dir => return self.root_dir(&meta, &shown),
            Name::Root => {
                self.note(format!("skipped {shown}: only a directory may name the root"));
                return Ok(());
            }
            Name::EndsInDotDot => {
                self.note(format!("skipped {shown}: name ends in \"..\""));
                return Ok(());
            }
        };
        match whiteout(&path.name) {
            Whiteout::None => {}
            Whiteout::Opaque => return self.opaque(&path.parent, &shown),
            Whiteout::Hide(hidden) => return self.whiteout(&path.parent, hidden, &shown),
            Whiteout::Unsupported => {
                self.note(format!("skipped unsupported whiteout {shown}"));
                return Ok(());
            }
        }
        if meta.pax_sparse {
            self.note(format!("skipped {shown}: PAX-format sparse files are not supported"));
            return Ok(());
        }

        match kind {
            _ if is_dir => self.directory(&path, &meta, &shown),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let size = entry.size();
                self.file(&mut entry, size, &path, &meta, &shown)
            }
            EntryType::Symlink => {
                let link = self.link_target(&entry, &shown)?;
                self.symlink(&path, &link, &meta, &shown)
            }
            EntryType::Link => {
                let link = self.link_target(&entry, &shown)?;
                self.hardlink(&path, &link, &shown)
            }
            EntryType::Fifo => self.fifo(&path, &meta, &shown),
            EntryType::Char => {
                self.note(format!("skipped character device {shown}"));
                Ok(())
            }
            EntryType::Block => {
                self.note(format!("skipped block device {shown}"));
                Ok(())
            }
            other => {
                let byte = other.as_byte();
                self.note(format!("skipped {shown}: unsupported entry type {:?}", char::from(byte)));
                Ok(())
            }
        }
    }

    /// A directory entry naming the root: applies its owner, mode, xattrs and (later) mtime.
    fn root_dir(&mut self, meta: &Meta, shown: &str) -> Result<(), UnpackError> {
        let fd = rfs::openat(&self.root, ".", DIR_OPEN, Mode::empty()).map_err(at(shown))?;
        set_owner_and_mode(fd.as_fd(), meta, shown)?;
        self.set_xattrs(fd.as_fd(), meta, shown)?;
        self.dir_times.push(DirTime { path: None, mtime: meta.mtime });
        Ok(())
    }

    /// A directory: made if missing, kept if it already is one, replaced if it is anything else.
    fn directory(&mut self, path: &EntryPath, meta: &Meta, shown: &str) -> Result<(), UnpackError> {
        let parent = self.take_parent(&path.parent).map_err(at(shown))?;
        let dir = parent.fd.as_fd();
        let initial = Mode::from_raw_mode(0o700);
        match rfs::mkdirat(dir, &path.name, initial) {
            Err(Errno::EXIST) if !is_dir_nofollow(dir, &path.name) => {
                remove_any(dir, &path.name).map_err(at(shown))?;
                rfs::mkdirat(dir, &path.name, initial).map_err(at(shown))?;
            }
            Err(Errno::EXIST) => {} // An existing directory is kept; its metadata is updated.
            other => other.map_err(at(shown))?,
        }
        let fd = rfs::openat(dir, &path.name, DIR_OPEN, Mode::empty()).map_err(at(shown))?;
        set_owner_and_mode(fd.as_fd(), meta, shown)?;
        self.set_xattrs(fd.as_fd(), meta, shown)?;
        self.dir_times.push(DirTime { path: Some(path.clone()), mtime: meta.mtime });
        Ok(())
    }

    /// A regular file: counted against `max_bytes`, created exclusively (replacing whatever had the
    /// name), filled from `data`, then given its owner, mode, xattrs and mtime.
    fn file(
        &mut self,
        data: &mut impl Read,
        size: u64,
        path: &EntryPath,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let total = self
            .stats
            .bytes
            .checked_add(size)
            .filter(|&total| total <= self.limits.max_bytes)
            .ok_or_else(|| UnpackError::TooLarge { limit: self.limits.max_bytes, path: shown.to_owned() })?;
        let parent = self.take_parent(&path.parent).map_err(at(shown))?;
        let dir = parent.fd.as_fd();
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let create = || rfs::openat(dir, &path.name, flags, Mode::from_raw_mode(0o600));
        let (fd, replaced) = create_replacing(dir, &path.name, create).map_err(at(shown))?;
        let mut file = File::from(fd);
        self.copy_data(data, &mut file, size, shown)?;
        self.stats.bytes = total;
        // Data first (writing clears file capabilities), then owner (chown clears setuid bits and
        // capabilities), then mode and xattrs.
        set_owner_and_mode(file.as_fd(), meta, shown)?;
        self.set_xattrs(file.as_fd(), meta, shown)?;
        rfs::futimens(&file, &times(meta.mtime)).map_err(at(shown))?;
        if !replaced {
            // Creating a regular file where nothing was cannot change how any path resolves.
            self.cached_parent = Some(parent);
        }
        Ok(())
    }

    /// Copies exactly `size` bytes of entry data into `file`; a shorter stream is a truncated archive.
    fn copy_data(&mut self, data: &mut impl Read, file: &mut File, size: u64, shown: &str) -> Result<(), UnpackError> {
        let mut written: u64 = 0;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UnpackError::Tar(e)),
            };
            file.write_all(&self.buf[..n]).map_err(|source| UnpackError::Io { path: shown.to_owned(), source })?;
            written += n as u64;
        }
        if written != size {
            return Err(UnpackError::Tar(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("archive ends inside {shown} ({written} of {size} bytes)"),
            )));
        }
        Ok(())
    }

    /// A symlink, with its target stored verbatim (it is only ever followed inside the root).
    fn symlink(&mut self, path: &EntryPath, link: &[u8], meta: &Meta, shown: &str) -> Result<(), UnpackError> {
        let parent = self.take_parent(&path.parent).map_err(at(shown))?;
        let dir = parent.fd.as_fd();
        create_replacing(dir, &path.name, || rfs::symlinkat(link, dir, &path.name)).map_err(at(shown))?;
        let nofollow = AtFlags::SYMLINK_NOFOLLOW;
        rfs::chownat(dir, &path.name, Some(meta.uid), Some(meta.gid), nofollow).map_err(at(shown))?;
        rfs::utimensat(dir, &path.name, &times(meta.mtime), nofollow).map_err(at(shown))?;
        self.note_unapplied_xattrs(meta, shown);
        Ok(())
    }

    /// A hardlink to an earlier entry, whose name is resolved inside the root like any other. A link
    /// to a symlink links the symlink itself. The shared inode keeps the target's metadata.
    fn hardlink(&mut self, path: &EntryPath, link: &[u8], shown: &str) -> Result<(), UnpackError> {
        let link_error =
            |e: Errno| UnpackError::Hardlink { path: shown.to_owned(), target: self::shown(link), source: e.into() };
        let source = match normalize(link) {
            Name::Child(source) => source,
            // The root or an ancestor: a directory, which cannot be hardlinked.
            Name::Root | Name::EndsInDotDot => return Err(link_error(Errno::PERM)),
        };
        let source_dir = open_in_root(self.root.as_fd(), &source.parent, DIR_PATH).map_err(link_error)?;
        let parent = self.take_parent(&path.parent).map_err(at(shown))?;
        let dir = parent.fd.as_fd();
        let link_it = || rfs::linkat(&source_dir, &source.name, dir, &path.name, AtFlags::empty());
        match link_it() {
            Err(Errno::EXIST) if same_file(source_dir.as_fd(), &source.name, dir, &path.name) => {}
            Err(Errno::EXIST) => {
                remove_any(dir, &path.name).map_err(at(shown))?;
                link_it().map_err(link_error)?;
            }
            other => other.map_err(link_error)?,
        }
        Ok(())
    }

    /// A named pipe.
    fn fifo(&mut self, path: &EntryPath, meta: &Meta, shown: &str) -> Result<(), UnpackError> {
        let parent = self.take_parent(&path.parent).map_err(at(shown))?;
        let dir = parent.fd.as_fd();
        let initial = Mode::from_raw_mode(0o600);
        create_replacing(dir, &path.name, || rfs::mknodat(dir, &path.name, FileType::Fifo, initial, 0))
            .map_err(at(shown))?;
        // Opening a FIFO for reading with O_NONBLOCK returns at once; O_NOFOLLOW pins the open to
        // the node just made.
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(dir, &path.name, flags, Mode::empty()).map_err(at(shown))?;
        set_owner_and_mode(fd.as_fd(), meta, shown)?;
        rfs::futimens(&fd, &times(meta.mtime)).map_err(at(shown))?;
        self.note_unapplied_xattrs(meta, shown);
        Ok(())
    }

    /// `.wh.NAME`: removes NAME if present and puts an overlayfs whiteout (a 0/0 character device)
    /// in its place.
    fn whiteout(&mut self, parent: &[u8], hidden: &[u8], shown: &str) -> Result<(), UnpackError> {
        let parent = self.take_parent(parent).map_err(at(shown))?;
        let dir = parent.fd.as_fd();
        match remove_any(dir, hidden) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(UnpackError::io(shown, e)),
        }
        let dev = rfs::makedev(0, 0);
        rfs::mknodat(dir, hidden, FileType::CharacterDevice, Mode::empty(), dev).map_err(at(shown))?;
        Ok(())
    }

    /// `.wh..wh..opq`: marks the directory holding it opaque for overlayfs.
    fn opaque(&mut self, dir_path: &[u8], shown: &str) -> Result<(), UnpackError> {
        let parent = self.take_parent(dir_path).map_err(at(shown))?;
        // "." names the directory itself; the O_PATH handle cannot carry xattrs.
        let fd = rfs::openat(&parent.fd, ".", DIR_OPEN, Mode::empty()).map_err(at(shown))?;
        rfs::fsetxattr(&fd, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty()).map_err(at(shown))?;
        // Setting an xattr changes no path, so the handle stays valid for the next entry.
        self.cached_parent = Some(parent);
        Ok(())
    }

    /// Applies the permitted xattrs; a filesystem without xattr support gets a note, not an error.
    fn set_xattrs(&mut self, fd: BorrowedFd<'_>, meta: &Meta, shown: &str) -> Result<(), UnpackError> {
        for (name, value) in &meta.xattrs {
            match rfs::fsetxattr(fd, name.as_slice(), value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(Errno::NOTSUP) => {
                    let name = String::from_utf8_lossy(name);
                    self.note(format!("xattr {name} on {shown} left out: not supported by the filesystem"));
                }
                Err(e) => {
                    return Err(UnpackError::Io {
                        path: shown.to_owned(),
                        source: io::Error::new(
                            io::Error::from(e).kind(),
                            format!("setting xattr {}: {e}", String::from_utf8_lossy(name)),
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Notes xattrs that the entry's type cannot carry (only files and directories get them).
    fn note_unapplied_xattrs(&mut self, meta: &Meta, shown: &str) {
        for (name, _) in &meta.xattrs {
            let name = String::from_utf8_lossy(name);
            self.note(format!("ignored xattr {name} on {shown}: not a file or directory"));
        }
    }

    /// The link target of a symlink or hardlink entry, checked against `max_path_len`.
    fn link_target<R: Read>(&self, entry: &tar::Entry<'_, R>, shown: &str) -> Result<Vec<u8>, UnpackError> {
        let link = entry.link_name_bytes().ok_or_else(|| {
            UnpackError::Tar(io::Error::new(io::ErrorKind::InvalidData, format!("link entry {shown} has no target")))
        })?;
        if link.len() > self.limits.max_path_len {
            return Err(UnpackError::LinkTargetTooLong { path: shown.to_owned(), limit: self.limits.max_path_len });
        }
        Ok(link.into_owned())
    }

    /// The directory `path` (normalized, relative to the root), taken from the cache or resolved
    /// inside the root, with missing directories created. Callers put it back in `cached_parent`
    /// only when their entry cannot have changed how any path resolves.
    fn take_parent(&mut self, path: &[u8]) -> rustix::io::Result<Parent> {
        if let Some(parent) = self.cached_parent.take()
            && parent.path == path
        {
            return Ok(parent);
        }
        let fd = open_or_create_dirs(self.root.as_fd(), path)?;
        Ok(Parent { path: path.to_vec(), fd })
    }

    /// Sets the recorded directory mtimes, last record winning. Directories that a later entry
    /// removed or replaced are left alone.
    fn apply_dir_times(&mut self) -> Result<(), UnpackError> {
        self.cached_parent = None;
        for DirTime { path, mtime } in std::mem::take(&mut self.dir_times) {
            let opened = match &path {
                None => rfs::openat(&self.root, ".", DIR_OPEN, Mode::empty()),
                Some(path) => open_in_root(self.root.as_fd(), &path.parent, DIR_PATH)
                    .and_then(|parent| rfs::openat(&parent, &path.name, DIR_OPEN, Mode::empty())),
            };
            let shown = || path.as_ref().map_or_else(|| ".".to_owned(), EntryPath::shown);
            let fd = match opened {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => return Err(UnpackError::io(&shown(), e)),
            };
            rfs::futimens(&fd, &times(mtime)).map_err(|e| UnpackError::io(&shown(), e))?;
        }
        Ok(())
    }

    /// Records a note in `Stats::skipped`, keeping at most `MAX_NOTES`.
    fn note(&mut self, note: String) {
        if self.stats.skipped.len() < MAX_NOTES {
            tracing::debug!(%note, "layer entry skipped or clamped");
            self.stats.skipped.push(note);
        } else {
            self.notes_dropped += 1;
        }
    }

    /// The statistics, the last note summarizing any that did not fit.
    fn finish(mut self) -> Stats {
        if self.notes_dropped > 0
            && let Some(last) = self.stats.skipped.last_mut()
        {
            *last = format!("... and {} more notes", self.notes_dropped + 1);
        }
        self.stats
    }
}

impl Meta {
    /// Reads owner, mode and mtime from the header and the xattrs from the entry's PAX records.
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Self, UnpackError> {
        let header = entry.header();
        let old = header.as_old();
        let uid = Uid::from_raw(id_field(numeric(&old.uid, || header.uid())?, "uid", shown)?);
        let gid = Gid::from_raw(id_field(numeric(&old.gid, || header.gid())?, "gid", shown)?);
        let mode = numeric(&old.mode, || header.mode().map(u64::from))? & 0o7777;
        let mode = Mode::from_raw_mode(mode as u32); // At most 0o7777.
        let mtime = numeric(&old.mtime, || header.mtime())?;
        let mtime = Timespec { tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX), tv_nsec: 0 };
        let mut meta =
            Meta { uid, gid, mode, mtime, xattrs: Vec::new(), refused_xattrs: Vec::new(), pax_sparse: false };
        if let Some(records) = entry.pax_extensions().map_err(UnpackError::Tar)? {
            for record in records {
                let record = record.map_err(UnpackError::Tar)?;
                let key = record.key_bytes();
                if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    if xattr_allowed(name) {
                        meta.xattrs.push((name.to_vec(), record.value_bytes().to_vec()));
                    } else {
                        let name = String::from_utf8_lossy(name).into_owned();
                        meta.refused_xattrs.push(name);
                    }
                } else if key.starts_with(PAX_SPARSE_PREFIX) {
                    meta.pax_sparse = true;
                }
            }
        }
        Ok(meta)
    }
}

/// Maps a syscall error to [`UnpackError::Io`] for entry `shown`.
fn at(shown: &str) -> impl Fn(Errno) -> UnpackError + '_ {
    move |e| UnpackError::io(shown, e)
}

/// Whether a layer may set this xattr: `user.*` and file capabilities only. `trusted.*` (overlay
/// state) and other `security.*` attributes (LSM labels) are the host's business.
fn xattr_allowed(name: &[u8]) -> bool {
    (name.starts_with(b"user.") && name.len() > b"user.".len()) || name == b"security.capability"
}

/// A numeric header field parsed by the tar crate, except that a blank one (all NUL or spaces)
/// reads as 0, as in Go's archive/tar and so in containerd and Docker.
fn numeric(field: &[u8], parse: impl FnOnce() -> io::Result<u64>) -> Result<u64, UnpackError> {
    if field.iter().all(|&b| b == 0 || b == b' ') { Ok(0) } else { parse().map_err(UnpackError::Tar) }
}

/// A uid or gid; -1 and anything wider than 32 bits are rejected.
fn id_field(value: u64, what: &str, shown: &str) -> Result<u32, UnpackError> {
    u32::try_from(value).ok().filter(|&id| id != u32::MAX).ok_or_else(|| {
        UnpackError::Tar(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} {value} of {shown} is out of range"),
        ))
    })
}

/// Owner first, then mode, so setuid and setgid bits survive the chown.
fn set_owner_and_mode(fd: BorrowedFd<'_>, meta: &Meta, shown: &str) -> Result<(), UnpackError> {
    rfs::fchown(fd, Some(meta.uid), Some(meta.gid)).map_err(at(shown))?;
    rfs::fchmod(fd, meta.mode).map_err(at(shown))?;
    Ok(())
}

/// Access and modification time both set to `mtime`.
fn times(mtime: Timespec) -> Timestamps {
    Timestamps { last_access: mtime, last_modification: mtime }
}

mod fs;
mod names;
mod types;

#[cfg(test)]
mod tests;
