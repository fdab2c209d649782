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

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Stat, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

use crate::fsroot::{DIR_OPEN, DIR_PATH, open_in_root, open_or_create_dirs};

/// Bounds on what one layer may contain.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most tar entries (of any kind, after long-name and PAX records are merged) in the layer.
    pub max_entries: u64,
    /// Longest entry name or link target, in bytes, as stored in the archive.
    pub max_path_len: usize,
    /// Most bytes of regular-file data in the layer.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_entries: 1_000_000, max_path_len: 4096, max_bytes: 64 << 30 }
    }
}

/// What [`unpack_layer`] did.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Tar entries read.
    pub entries: u64,
    /// Regular-file bytes written.
    pub bytes: u64,
    /// Human-readable notes on entries skipped or clamped (at most 100).
    pub skipped: Vec<String>,
}

/// Why a layer could not be unpacked. Entry names are shown as stored in the archive.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot open unpack destination {path:?}: {source}")]
    Dest {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("layer entry name {path:?} is longer than the limit of {limit} bytes")]
    PathTooLong { path: String, limit: usize },
    #[error("link target of layer entry {path:?} is longer than the limit of {limit} bytes")]
    LinkTargetTooLong { path: String, limit: usize },
    #[error("regular files in the layer exceed the limit of {limit} bytes (at entry {path:?})")]
    TooLarge { limit: u64, path: String },
    /// A malformed or truncated archive, or a read error from the reader underneath (which may
    /// itself be a decompressor or a download).
    #[error("cannot read the layer as a tar stream: {0}")]
    Tar(#[source] io::Error),
    #[error("layer entry {path:?} is a hardlink to {target:?}, which cannot be linked: {source}")]
    Hardlink {
        path: String,
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot unpack layer entry {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

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
/// Longest entry name shown in errors and notes, in characters.
const SHOWN_NAME_MAX: usize = 256;

/// An OCI opaque-directory marker's name.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of OCI whiteout names.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Prefix of OCI whiteout names reserved for metadata (`.wh..wh.plnk` and the like).
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
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

/// A non-root entry name after lexical normalization.
#[derive(Debug, Clone, PartialEq)]
struct EntryPath {
    /// The directory part: components joined by `/`, possibly with `..` (clamped at resolution);
    /// empty for the root.
    parent: Vec<u8>,
    /// The last component: never empty, `.`, `..`, and without `/`.
    name: Vec<u8>,
}

/// What an entry name refers to.
#[derive(Debug, PartialEq)]
enum Name {
    /// The root itself (`""`, `.`, `/`, `./`).
    Root,
    /// Something below the root.
    Child(EntryPath),
    /// A name whose last component is `..`; it can only name an ancestor, so it is not used.
    EndsInDotDot,
}

/// What an entry's last component says about OCI whiteouts.
#[derive(Debug, PartialEq)]
enum Whiteout<'a> {
    /// Not a whiteout.
    None,
    /// `.wh..wh..opq`: the parent directory hides everything below it in lower layers.
    Opaque,
    /// `.wh.NAME`: NAME is deleted.
    Hide(&'a [u8]),
    /// Any other `.wh.` name (`.wh..wh.plnk`, `.wh.`, `.wh..`, ...).
    Unsupported,
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

impl EntryPath {
    /// The normalized name, for messages.
    fn shown(&self) -> String {
        if self.parent.is_empty() {
            shown(&self.name)
        } else {
            shown(&[self.parent.as_slice(), b"/", self.name.as_slice()].concat())
        }
    }
}

impl UnpackError {
    fn io(path: &str, e: Errno) -> Self {
        UnpackError::Io { path: path.to_owned(), source: e.into() }
    }
}

/// Maps a syscall error to [`UnpackError::Io`] for entry `shown`.
fn at(shown: &str) -> impl Fn(Errno) -> UnpackError + '_ {
    move |e| UnpackError::io(shown, e)
}

/// An entry name for messages: lossy UTF-8, cut to `SHOWN_NAME_MAX` characters.
fn shown(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if text.chars().count() <= SHOWN_NAME_MAX {
        return text.into_owned();
    }
    let mut cut: String = text.chars().take(SHOWN_NAME_MAX).collect();
    cut.push_str("...");
    cut
}

/// Lexically normalizes an entry name: leading `/` and `./`, empty and `.` components go; `..`
/// components stay (openat2 clamps them at the root), except as the last component.
fn normalize(raw: &[u8]) -> Name {
    let mut components = raw.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".");
    let Some(name) = components.next_back() else {
        return Name::Root;
    };
    if name == b".." {
        return Name::EndsInDotDot;
    }
    let mut parent = Vec::new();
    for component in components {
        if !parent.is_empty() {
            parent.push(b'/');
        }
        parent.extend_from_slice(component);
    }
    Name::Child(EntryPath { parent, name: name.to_vec() })
}

/// Classifies an entry's last component as an OCI whiteout or not.
fn whiteout(name: &[u8]) -> Whiteout<'_> {
    if name == OPAQUE_MARKER {
        return Whiteout::Opaque;
    }
    if name.starts_with(WHITEOUT_META_PREFIX) {
        return Whiteout::Unsupported;
    }
    match name.strip_prefix(WHITEOUT_PREFIX) {
        None => Whiteout::None,
        Some(b"" | b"." | b"..") => Whiteout::Unsupported,
        Some(hidden) => Whiteout::Hide(hidden),
    }
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

/// Runs `create`; if the name is taken, removes whatever has it (a directory with everything in
/// it) and runs `create` once more. Returns whether something was replaced.
fn create_replacing<T>(
    dir: BorrowedFd<'_>,
    name: &[u8],
    mut create: impl FnMut() -> rustix::io::Result<T>,
) -> rustix::io::Result<(T, bool)> {
    match create() {
        Err(Errno::EXIST) => {
            remove_any(dir, name)?;
            Ok((create()?, true))
        }
        result => result.map(|made| (made, false)),
    }
}

/// Whether `name` in `dir` is a directory itself (not a symlink to one).
fn is_dir_nofollow(dir: BorrowedFd<'_>, name: &[u8]) -> bool {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
}

/// Whether two names (not following symlinks) are the same inode.
fn same_file(a_dir: BorrowedFd<'_>, a: &[u8], b_dir: BorrowedFd<'_>, b: &[u8]) -> bool {
    let nofollow = AtFlags::SYMLINK_NOFOLLOW;
    match (rfs::statat(a_dir, a, nofollow), rfs::statat(b_dir, b, nofollow)) {
        (Ok(a), Ok(b)) => same_inode(&a, &b),
        _ => false,
    }
}

fn same_inode(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Removes `name` from `dir` whatever it is, never following a symlink; a directory is emptied
/// first. Nothing outside `dir` is touched.
fn remove_any(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Err(Errno::ISDIR) => {}
        result => return result,
    }
    match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Err(Errno::NOTEMPTY) => {}
        result => return result,
    }
    empty_tree(rfs::openat(dir, name, DIR_OPEN, Mode::empty())?)?;
    rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// Deletes everything inside directory `top`, depth first. Iterative, because a hostile layer can
/// nest directories deeper than any stack, and holding two descriptors at a time. Going back up
/// uses `..`, checked against the directory that was left.
fn empty_tree(top: OwnedFd) -> rustix::io::Result<()> {
    /// A directory being emptied above the current one.
    struct Level {
        /// Name of the directory below it that is being emptied now.
        entered: Vec<u8>,
        /// Identity of this directory, to check the way back up.
        stat: Stat,
        /// Its non-empty subdirectories still to empty.
        pending: Vec<Vec<u8>>,
    }
    let mut dir = top;
    let mut pending = remove_all_but_full_dirs(dir.as_fd())?;
    let mut levels: Vec<Level> = Vec::new();
    loop {
        if let Some(sub) = pending.pop() {
            let next = rfs::openat(&dir, &sub, DIR_OPEN, Mode::empty())?;
            levels.push(Level { entered: sub, stat: rfs::fstat(&dir)?, pending: std::mem::take(&mut pending) });
            dir = next;
            pending = remove_all_but_full_dirs(dir.as_fd())?;
            continue;
        }
        // `dir` is empty now.
        let Some(level) = levels.pop() else {
            return Ok(());
        };
        let up = rfs::openat(&dir, "..", DIR_OPEN, Mode::empty())?;
        if !same_inode(&rfs::fstat(&up)?, &level.stat) {
            // Only a concurrent rename could cause this; stop rather than delete elsewhere.
            return Err(Errno::STALE);
        }
        rfs::unlinkat(&up, level.entered.as_slice(), AtFlags::REMOVEDIR)?;
        dir = up;
        pending = level.pending;
    }
}

/// Unlinks everything in `dir` except non-empty subdirectories, whose names it returns.
fn remove_all_but_full_dirs(dir: BorrowedFd<'_>) -> rustix::io::Result<Vec<Vec<u8>>> {
    let mut full = Vec::new();
    for entry in rfs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        match rfs::unlinkat(dir, name, AtFlags::empty()) {
            Err(Errno::ISDIR) => {}
            result => {
                result?;
                continue;
            }
        }
        match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Err(Errno::NOTEMPTY) => full.push(name.to_bytes().to_vec()),
            result => result?,
        }
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use std::path::PathBuf;

    /// Default mtime of test entries.
    const MTIME: u64 = 1_600_000_000;

    /// A tar stream built header by header, so hostile names reach the unpacker byte for byte.
    #[derive(Default)]
    struct Layer(Vec<u8>);

    /// One raw entry's fields.
    struct Raw<'a> {
        name: &'a [u8],
        kind: EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        link: &'a [u8],
        data: &'a [u8],
    }

    impl<'a> Raw<'a> {
        fn new(name: &'a str, kind: EntryType) -> Self {
            Raw {
                name: name.as_bytes(),
                kind,
                mode: if kind == EntryType::Directory { 0o755 } else { 0o644 },
                uid: 0,
                gid: 0,
                mtime: MTIME,
                link: b"",
                data: b"",
            }
        }
    }

    impl Layer {
        fn raw(&mut self, raw: Raw<'_>) -> &mut Self {
            self.raw_with(raw, |_| {})
        }

        /// Appends an entry; `adjust` may change the header before the checksum is computed.
        fn raw_with(&mut self, raw: Raw<'_>, adjust: impl FnOnce(&mut tar::Header)) -> &mut Self {
            let mut header = tar::Header::new_gnu();
            header.as_old_mut().name[..raw.name.len()].copy_from_slice(raw.name);
            header.as_old_mut().linkname[..raw.link.len()].copy_from_slice(raw.link);
            header.set_entry_type(raw.kind);
            header.set_mode(raw.mode);
            header.set_uid(raw.uid);
            header.set_gid(raw.gid);
            header.set_mtime(raw.mtime);
            header.set_size(raw.data.len() as u64);
            adjust(&mut header);
            header.set_cksum();
            self.0.extend_from_slice(header.as_bytes());
            self.0.extend_from_slice(raw.data);
            self.pad();
            self
        }

        fn pad(&mut self) {
            let rem = self.0.len() % 512;
            if rem != 0 {
                self.0.resize(self.0.len() + 512 - rem, 0);
            }
        }

        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.raw(Raw { data, ..Raw::new(name, EntryType::Regular) })
        }

        fn dir(&mut self, name: &str) -> &mut Self {
            self.raw(Raw::new(name, EntryType::Directory))
        }

        fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.raw(Raw { link: target.as_bytes(), mode: 0o777, ..Raw::new(name, EntryType::Symlink) })
        }

        fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.raw(Raw { link: target.as_bytes(), ..Raw::new(name, EntryType::Link) })
        }

        /// A PAX extended header applying `records` to the next entry.
        fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
            let mut data = Vec::new();
            for (key, value) in records {
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

        /// The stream with its end-of-archive marker.
        fn finish(&self) -> Vec<u8> {
            let mut out = self.0.clone();
            out.extend_from_slice(&[0; 1024]);
            out
        }
    }

    /// A temporary directory holding the snapshot `root` and, beside it, `outside/secret`.
    struct Fixture {
        tmp: tempfile::TempDir,
        root: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("root");
            fs::create_dir(&root).unwrap();
            fs::create_dir(tmp.path().join("outside")).unwrap();
            fs::write(tmp.path().join("outside/secret"), b"secret").unwrap();
            Fixture { tmp, root }
        }

        fn unpack(&self, layer: &Layer) -> Result<Stats, UnpackError> {
            self.unpack_with(layer, &Limits::default())
        }

        fn unpack_with(&self, layer: &Layer, limits: &Limits) -> Result<Stats, UnpackError> {
            unpack_layer(layer.finish().as_slice(), &self.root, limits)
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }

        fn secret(&self) -> PathBuf {
            self.tmp.path().join("outside/secret")
        }

        /// Asserts that nothing beside `root` was created, changed or linked.
        fn assert_outside_untouched(&self) {
            let mut top: Vec<_> = fs::read_dir(self.tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            top.sort();
            assert_eq!(top, ["outside", "root"]);
            let outside: Vec<_> =
                fs::read_dir(self.tmp.path().join("outside")).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(outside, ["secret"]);
            assert_eq!(fs::read(self.secret()).unwrap(), b"secret");
            let meta = fs::symlink_metadata(self.secret()).unwrap();
            assert_eq!(meta.nlink(), 1);
            assert_eq!(meta.mode() & 0o7777, 0o644);
        }
    }

    fn lmeta(path: impl AsRef<Path>) -> fs::Metadata {
        fs::symlink_metadata(path).unwrap()
    }

    fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
        let mut buf = [0u8; 256];
        rfs::lgetxattr(path, name, &mut buf).ok().map(|n| buf[..n].to_vec())
    }

    #[test]
    fn plain_entries_get_their_content_type_owner_and_mode() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer
            .dir("bin/")
            .raw(Raw {
                data: b"#!/bin/sh\n",
                mode: 0o4755,
                uid: 1000,
                gid: 1001,
                ..Raw::new("bin/su", EntryType::Regular)
            })
            .raw(Raw { mode: 0o1777, ..Raw::new("tmp/", EntryType::Directory) })
            .raw(Raw { mode: 0o2750, uid: 1000, gid: 1000, ..Raw::new("home/u/", EntryType::Directory) })
            .raw(Raw { link: b"../bin/su", uid: 1000, gid: 1001, ..Raw::new("usr/su", EntryType::Symlink) })
            .hardlink("bin/su-again", "bin/su")
            .file("./etc/hostname", b"box\n");
        let stats = fx.unpack(&layer).unwrap();

        assert_eq!(stats.entries, 7);
        assert_eq!(stats.bytes, 14);
        assert!(stats.skipped.is_empty(), "{:?}", stats.skipped);
        let su = lmeta(fx.path("bin/su"));
        assert_eq!(fs::read(fx.path("bin/su")).unwrap(), b"#!/bin/sh\n");
        assert_eq!((su.uid(), su.gid(), su.mode() & 0o7777), (1000, 1001, 0o4755));
        assert_eq!(lmeta(fx.path("tmp")).mode() & 0o7777, 0o1777);
        let home = lmeta(fx.path("home/u"));
        assert!(home.is_dir());
        assert_eq!((home.uid(), home.gid(), home.mode() & 0o7777), (1000, 1000, 0o2750));
        // "home" was not listed: made 0755 and root-owned.
        let parent = lmeta(fx.path("home"));
        assert_eq!((parent.uid(), parent.mode() & 0o7777), (0, 0o755));
        let link = lmeta(fx.path("usr/su"));
        assert!(link.file_type().is_symlink());
        assert_eq!((link.uid(), link.gid()), (1000, 1001));
        assert_eq!(fs::read_link(fx.path("usr/su")).unwrap(), Path::new("../bin/su"));
        let again = lmeta(fx.path("bin/su-again"));
        assert_eq!(again.ino(), su.ino());
        assert_eq!(again.nlink(), 2);
        assert_eq!(fs::read(fx.path("etc/hostname")).unwrap(), b"box\n");
        fx.assert_outside_untouched();
    }

    #[test]
    fn dotdot_and_absolute_names_are_clamped_inside_the_root() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer
            .file("../../escape", b"1")
            .file("/abs/path", b"2")
            .file("./a/../../b", b"3")
            .file("../outside/secret", b"4");
        fx.unpack(&layer).unwrap();

        assert_eq!(fs::read(fx.path("escape")).unwrap(), b"1");
        assert_eq!(fs::read(fx.path("abs/path")).unwrap(), b"2");
        assert_eq!(fs::read(fx.path("b")).unwrap(), b"3");
        assert_eq!(fs::read(fx.path("outside/secret")).unwrap(), b"4");
        fx.assert_outside_untouched();
    }

    #[test]
    fn names_ending_in_dotdot_are_skipped_and_remove_nothing() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer.dir("sub/").file("sub/..", b"x").symlink("..", "/").dir("../..");
        let stats = fx.unpack(&layer).unwrap();

        assert!(fx.path("sub").is_dir());
        assert_eq!(stats.skipped.len(), 3, "{:?}", stats.skipped);
        assert!(stats.skipped[0].contains("sub/.."));
        fx.assert_outside_untouched();
    }

    #[test]
    fn files_written_through_planted_symlinks_stay_inside_the_root() {
        let fx = Fixture::new();
        let unique = fx.tmp.path().file_name().unwrap().to_str().unwrap().to_owned();
        let (pwned, pwned2) = (format!("pwned-{unique}"), format!("pwned2-{unique}"));
        let mut layer = Layer::default();
        layer
            .symlink("evil", "/")
            .file(&format!("evil/{pwned}"), b"x")
            .symlink("evil2", "../../..")
            .file(&format!("evil2/{pwned2}"), b"y")
            .dir("outside/")
            .symlink("up", "../outside")
            .file("up/planted", b"z");
        fx.unpack(&layer).unwrap();

        assert_eq!(fs::read(fx.path(&pwned)).unwrap(), b"x");
        assert_eq!(fs::read(fx.path(&pwned2)).unwrap(), b"y");
        assert_eq!(fs::read(fx.path("outside/planted")).unwrap(), b"z");
        assert!(!Path::new("/").join(&pwned).exists());
        assert!(!Path::new("/").join(&pwned2).exists());
        fx.assert_outside_untouched();
    }

    #[test]
    fn parent_through_a_dangling_symlink_is_an_error_not_an_escape() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer.symlink("up", "../outside").file("up/planted", b"z");
        let err = fx.unpack(&layer).unwrap_err();
        assert!(
            matches!(&err, UnpackError::Io { path, source }
                if path == "up/planted" && source.kind() == io::ErrorKind::NotFound),
            "{err}"
        );
        assert!(!fx.path("outside").exists());
        fx.assert_outside_untouched();
    }

    #[test]
    fn entries_replace_a_symlink_instead_of_following_it() {
        let fx = Fixture::new();
        let secret = fx.secret();
        let outside_dir = fx.tmp.path().join("outside");
        let mut layer = Layer::default();
        layer
            .symlink("file", secret.to_str().unwrap())
            .file("file", b"mine")
            .symlink("dir", outside_dir.to_str().unwrap())
            .raw(Raw { mode: 0o777, ..Raw::new("dir/", EntryType::Directory) })
            .symlink("fifo", secret.to_str().unwrap())
            .raw(Raw::new("fifo", EntryType::Fifo));
        fx.unpack(&layer).unwrap();

        assert_eq!(fs::read(fx.path("file")).unwrap(), b"mine");
        assert!(lmeta(fx.path("dir")).is_dir());
        assert!(lmeta(fx.path("fifo")).file_type().is_fifo());
        assert_eq!(lmeta(&outside_dir).mode() & 0o777, 0o755);
        fx.assert_outside_untouched();
    }

    #[test]
    fn hardlinks_cannot_reach_files_outside_the_root() {
        let fx = Fixture::new();
        let absolute = fx.secret().to_str().unwrap().to_owned();
        for target in ["../outside/secret", "../../outside/secret", absolute.as_str()] {
            let mut layer = Layer::default();
            layer.hardlink("stolen", target);
            let err = fx.unpack(&layer).unwrap_err();
            assert!(matches!(err, UnpackError::Hardlink { .. }), "{target}: {err}");
            assert!(!fx.path("stolen").exists());
        }
        // Through a planted symlink to the outside directory.
        let mut layer = Layer::default();
        layer.symlink("esc", "../outside").hardlink("stolen", "esc/secret");
        let err = fx.unpack(&layer).unwrap_err();
        assert!(matches!(err, UnpackError::Hardlink { .. }), "{err}");
        assert!(!fx.path("stolen").exists());
        fx.assert_outside_untouched();
    }

    #[test]
    fn hardlink_to_a_missing_target_names_both_paths() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer.hardlink("usr/bin/b", "usr/bin/nope");
        let err = fx.unpack(&layer).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("usr/bin/b") && message.contains("usr/bin/nope"), "{message}");
    }

    #[test]
    fn hardlink_to_a_symlink_links_the_symlink_itself() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer.symlink("s", "/etc/passwd").hardlink("h", "s");
        fx.unpack(&layer).unwrap();

        let (s, h) = (lmeta(fx.path("s")), lmeta(fx.path("h")));
        assert!(h.file_type().is_symlink());
        assert_eq!(h.ino(), s.ino());
        assert_eq!(fs::read_link(fx.path("h")).unwrap(), Path::new("/etc/passwd"));
    }

    #[test]
    fn hardlink_onto_its_own_target_keeps_the_file() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer.file("a", b"data").hardlink("b", "a").hardlink("b", "a").hardlink("a", "a");
        fx.unpack(&layer).unwrap();

        assert_eq!(fs::read(fx.path("a")).unwrap(), b"data");
        assert_eq!(lmeta(fx.path("a")).nlink(), 2);
    }

    #[test]
    fn symlink_replaces_a_directory_and_later_entries_follow_the_new_symlink() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer
            .dir("target/")
            .dir("d/")
            .file("d/f1", b"1")
            .file("d/f1b", b"1b")
            .symlink("d", "/target")
            .file("d/f2", b"2");
        fx.unpack(&layer).unwrap();

        assert!(lmeta(fx.path("d")).file_type().is_symlink());
        assert_eq!(fs::read(fx.path("target/f2")).unwrap(), b"2");
        assert!(!fx.path("target/f1").exists());
        fx.assert_outside_untouched();
    }

    #[test]
    fn cached_parent_is_resolved_afresh_after_a_replacement() {
        // "a/x/.." names "a" only while "a/x" is a directory. Once a file replaces "a/x", the
        // same parent name must fail to resolve, as it would without the cache.
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer.dir("a/x/").file("a/x/../f", b"f").file("a/x/../x", b"now a file").file("a/x/../g", b"g");
        let err = fx.unpack(&layer).unwrap_err();
        assert!(
            matches!(&err, UnpackError::Io { path, source }
                if path == "a/x/../g" && source.raw_os_error() == Some(Errno::NOTDIR.raw_os_error())),
            "{err}"
        );
        assert_eq!(fs::read(fx.path("a/f")).unwrap(), b"f");
        assert_eq!(fs::read(fx.path("a/x")).unwrap(), b"now a file");
        assert!(!fx.path("a/g").exists());
    }

    #[test]
    fn directory_replaces_a_symlink_and_a_file() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer.symlink("s", "/").dir("s/").file("s/inner", b"i").file("f", b"was a file").dir("f/");
        fx.unpack(&layer).unwrap();

        assert!(lmeta(fx.path("s")).is_dir());
        assert_eq!(fs::read(fx.path("s/inner")).unwrap(), b"i");
        assert!(!fx.path("inner").exists());
        assert!(lmeta(fx.path("f")).is_dir());
    }

    #[test]
    fn file_replaces_a_deep_directory_tree() {
        let fx = Fixture::new();
        let deep = "x/".repeat(300);
        let mut layer = Layer::default();
        layer.dir("d/").file("d/a", b"a").dir("d/empty/").file("d/b/c/e", b"e");
        layer.pax(&[("path", format!("d/{deep}leaf").as_bytes())]).file("placeholder", b"l");
        layer.file("d", b"now a file");
        fx.unpack(&layer).unwrap();

        assert_eq!(fs::read(fx.path("d")).unwrap(), b"now a file");
        let mut left: Vec<_> = fs::read_dir(&fx.root).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["d"]);
        fx.assert_outside_untouched();
    }

    #[test]
    fn device_nodes_are_skipped_with_a_note() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer
            .raw_with(Raw::new("dev/null", EntryType::Char), |h| {
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
            })
            .raw_with(Raw::new("dev/sda", EntryType::Block), |h| {
                h.set_device_major(8).unwrap();
            })
            .raw(Raw::new("dev/wh0", EntryType::Char));
        let stats = fx.unpack(&layer).unwrap();

        assert!(!fx.path("dev/null").exists());
        assert!(!fx.path("dev/sda").exists());
        assert!(!fx.path("dev/wh0").exists());
        assert_eq!(
            stats.skipped,
            ["skipped character device dev/null", "skipped block device dev/sda", "skipped character device dev/wh0"]
        );
    }

    #[test]
    fn fifo_is_created_with_owner_mode_and_mtime() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer.raw(Raw { mode: 0o640, uid: 7, gid: 8, mtime: 1_234_567, ..Raw::new("run/pipe", EntryType::Fifo) });
        fx.unpack(&layer).unwrap();

        let meta = lmeta(fx.path("run/pipe"));
        assert!(meta.file_type().is_fifo());
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (7, 8, 0o640));
        assert_eq!(meta.mtime(), 1_234_567);
    }

    #[test]
    fn whiteout_becomes_a_0_0_character_device() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer
            .file(".wh.gone", b"")
            .dir("a/")
            .file("a/b", b"replaced")
            .file("a/.wh.b", b"")
            .file("c/.wh.d", b"")
            .file(".wh..wh.plnk", b"")
            .file("x/.wh..", b"");
        let stats = fx.unpack(&layer).unwrap();

        for path in ["gone", "a/b", "c/d"] {
            let meta = lmeta(fx.path(path));
            assert!(meta.file_type().is_char_device(), "{path}");
            assert_eq!(meta.rdev(), 0, "{path}");
        }
        assert!(!fx.path(".wh.gone").exists());
        assert!(!fx.path("a/.wh.b").exists());
        assert!(!fx.path(".wh..wh.plnk").exists());
        assert!(!fx.path("x").exists());
        assert_eq!(
            stats.skipped,
            ["skipped unsupported whiteout .wh..wh.plnk", "skipped unsupported whiteout x/.wh.."]
        );
    }

    #[test]
    fn opaque_marker_sets_trusted_overlay_opaque() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer.dir("etc/").file("etc/.wh..wh..opq", b"").file("etc/kept", b"k").file("new/dir/.wh..wh..opq", b"");
        fx.unpack(&layer).unwrap();

        assert_eq!(xattr(&fx.path("etc"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
        assert_eq!(xattr(&fx.path("new/dir"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
        assert!(!fx.path("etc/.wh..wh..opq").exists());
        assert_eq!(fs::read(fx.path("etc/kept")).unwrap(), b"k");
    }

    #[test]
    fn pax_xattrs_apply_user_and_capability_but_never_trusted() {
        let fx = Fixture::new();
        // VFS_CAP_REVISION_2, effective, CAP_NET_BIND_SERVICE permitted.
        let mut cap = Vec::new();
        for word in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
            cap.extend_from_slice(&word.to_le_bytes());
        }
        let mut layer = Layer::default();
        layer
            .pax(&[
                ("SCHILY.xattr.user.comment", b"hello"),
                ("SCHILY.xattr.trusted.overlay.redirect", b"/elsewhere"),
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                ("SCHILY.xattr.security.capability", &cap),
                ("SCHILY.xattr.security.selinux", b"system_u:object_r:shadow_t:s0"),
            ])
            .raw(Raw { uid: 1000, data: b"x", ..Raw::new("bin/ping", EntryType::Regular) })
            .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
            .dir("d/");
        let stats = fx.unpack(&layer).unwrap();

        let ping = fx.path("bin/ping");
        assert_eq!(xattr(&ping, "user.comment").as_deref(), Some(&b"hello"[..]));
        assert!(xattr(&ping, "security.capability").is_some());
        assert_eq!(xattr(&ping, "trusted.overlay.redirect"), None);
        assert_eq!(xattr(&ping, "trusted.overlay.opaque"), None);
        assert_eq!(xattr(&fx.path("d"), "trusted.overlay.opaque"), None);
        assert_eq!(
            stats.skipped,
            [
                "ignored xattr trusted.overlay.redirect on bin/ping",
                "ignored xattr trusted.overlay.opaque on bin/ping",
                "ignored xattr security.selinux on bin/ping",
                "ignored xattr trusted.overlay.opaque on d/"
            ]
        );
    }

    #[test]
    fn max_entries_is_enforced() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer.file("a", b"").file("b", b"").file("c", b"");
        let limits = Limits { max_entries: 2, ..Limits::default() };
        let err = fx.unpack_with(&layer, &limits).unwrap_err();
        assert!(matches!(err, UnpackError::TooManyEntries { limit: 2 }), "{err}");
        assert!(!fx.path("c").exists());
    }

    #[test]
    fn max_path_len_is_enforced_on_names_and_link_targets() {
        let fx = Fixture::new();
        let limits = Limits { max_path_len: 8, ..Limits::default() };
        let mut ok = Layer::default();
        ok.file("12345678", b"");
        fx.unpack_with(&ok, &limits).unwrap();

        let mut long = Layer::default();
        long.file("123456789", b"");
        let err = fx.unpack_with(&long, &limits).unwrap_err();
        assert!(matches!(err, UnpackError::PathTooLong { limit: 8, .. }), "{err}");

        let mut long_link = Layer::default();
        long_link.symlink("s", "123456789");
        let err = fx.unpack_with(&long_link, &limits).unwrap_err();
        assert!(matches!(err, UnpackError::LinkTargetTooLong { limit: 8, .. }), "{err}");

        // A PAX path beyond the default limit.
        let mut pax = Layer::default();
        pax.pax(&[("path", "a/".repeat(2100).as_bytes())]).file("short", b"");
        let err = fx.unpack(&pax).unwrap_err();
        assert!(matches!(err, UnpackError::PathTooLong { limit: 4096, .. }), "{err}");
    }

    #[test]
    fn max_bytes_is_enforced_before_writing() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer.file("a", b"123456").file("b", b"789012");
        let limits = Limits { max_bytes: 10, ..Limits::default() };
        let err = fx.unpack_with(&layer, &limits).unwrap_err();
        assert!(matches!(err, UnpackError::TooLarge { limit: 10, .. }), "{err}");
        assert!(fx.path("a").exists());
        assert!(!fx.path("b").exists());
    }

    #[test]
    fn garbage_and_truncated_input_are_tar_errors() {
        let fx = Fixture::new();
        let garbage = b"this is not a tar archive ".repeat(40);
        let err = unpack_layer(garbage.as_slice(), &fx.root, &Limits::default()).unwrap_err();
        assert!(matches!(err, UnpackError::Tar(_)), "{err}");

        let mut layer = Layer::default();
        layer.file("big", &[7; 2000]);
        let truncated = &layer.finish()[..1024];
        let err = unpack_layer(truncated, &fx.root, &Limits::default()).unwrap_err();
        assert!(matches!(err, UnpackError::Tar(_)), "{err}");
    }

    #[test]
    fn missing_destination_is_a_dest_error() {
        let fx = Fixture::new();
        let missing = fx.tmp.path().join("missing");
        let err = unpack_layer(Layer::default().finish().as_slice(), &missing, &Limits::default()).unwrap_err();
        assert!(matches!(&err, UnpackError::Dest { path, .. } if *path == missing), "{err}");
    }

    #[test]
    fn blank_numeric_fields_read_as_zero_and_garbage_ones_are_tar_errors() {
        let fx = Fixture::new();
        let blank = |h: &mut tar::Header| {
            let old = h.as_old_mut();
            old.uid = [0; 8];
            old.gid = [b' '; 8];
            old.mtime = [0; 12];
        };
        let mut layer = Layer::default();
        layer.raw_with(Raw { uid: 5, data: b"x", ..Raw::new("f", EntryType::Regular) }, blank);
        fx.unpack(&layer).unwrap();
        let meta = lmeta(fx.path("f"));
        assert_eq!((meta.uid(), meta.gid(), meta.mtime()), (0, 0, 0));

        let mut layer = Layer::default();
        layer.raw_with(Raw::new("g", EntryType::Regular), |h| h.as_old_mut().uid = *b"12x4567\0");
        let err = fx.unpack(&layer).unwrap_err();
        assert!(matches!(err, UnpackError::Tar(_)), "{err}");
    }

    #[test]
    fn uid_minus_one_is_rejected_without_panicking() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer.raw(Raw { uid: u64::from(u32::MAX), ..Raw::new("f", EntryType::Regular) });
        let err = fx.unpack(&layer).unwrap_err();
        assert!(matches!(err, UnpackError::Tar(_)), "{err}");
    }

    #[test]
    fn input_is_read_to_eof_after_the_end_marker() {
        /// Counts bytes read and remembers whether EOF was reached.
        struct Counting<R> {
            inner: R,
            read: usize,
            eof: bool,
        }
        impl<R: Read> Read for Counting<R> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.inner.read(buf)?;
                self.read += n;
                self.eof |= n == 0 && !buf.is_empty();
                Ok(n)
            }
        }
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer.file("a", b"a");
        let mut stream = layer.finish();
        stream.extend_from_slice(&[0xAB; 10_000]);
        let mut reader = Counting { inner: stream.as_slice(), read: 0, eof: false };
        unpack_layer(&mut reader, &fx.root, &Limits::default()).unwrap();
        assert_eq!(reader.read, stream.len());
        assert!(reader.eof);
    }

    #[test]
    fn directory_mtimes_survive_later_entries() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer
            .raw(Raw { mode: 0o750, mtime: 500_000, ..Raw::new("./", EntryType::Directory) })
            .raw(Raw { mtime: 1_000_000, ..Raw::new("d/", EntryType::Directory) })
            .raw(Raw { mtime: 3_000_000, ..Raw::new("d/sub/", EntryType::Directory) })
            .raw(Raw { mtime: 2_000_000, data: b"f", ..Raw::new("d/f", EntryType::Regular) })
            .raw(Raw { mtime: 4_000_000, link: b"f", ..Raw::new("d/sub/l", EntryType::Symlink) })
            .file("d/sub/g", b"g");
        fx.unpack(&layer).unwrap();

        assert_eq!(lmeta(&fx.root).mtime(), 500_000);
        assert_eq!(lmeta(&fx.root).permissions().mode() & 0o7777, 0o750);
        assert_eq!(lmeta(fx.path("d")).mtime(), 1_000_000);
        assert_eq!(lmeta(fx.path("d/sub")).mtime(), 3_000_000);
        assert_eq!(lmeta(fx.path("d/f")).mtime(), 2_000_000);
        assert_eq!(lmeta(fx.path("d/sub/l")).mtime(), 4_000_000);
    }

    #[test]
    fn non_directory_naming_the_root_is_skipped() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer.file(".", b"x").symlink("/", "/etc");
        let stats = fx.unpack(&layer).unwrap();

        assert!(lmeta(&fx.root).is_dir());
        assert_eq!(stats.skipped.len(), 2, "{:?}", stats.skipped);
        fx.assert_outside_untouched();
    }

    #[test]
    fn old_style_directory_with_trailing_slash_is_a_directory() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        layer.raw(Raw { mode: 0o711, ..Raw::new("old/", EntryType::Regular) });
        fx.unpack(&layer).unwrap();
        let meta = lmeta(fx.path("old"));
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, 0o711);
    }

    #[test]
    fn notes_are_capped_at_one_hundred() {
        let fx = Fixture::new();
        let mut layer = Layer::default();
        for i in 0..150 {
            layer.raw(Raw::new(&format!("dev/n{i}"), EntryType::Char));
        }
        let stats = fx.unpack(&layer).unwrap();
        assert_eq!(stats.skipped.len(), 100);
        assert_eq!(stats.skipped[99], "... and 51 more notes");
    }

    #[test]
    fn normalize_keeps_dotdot_in_the_parent_only() {
        let child = |parent: &str, name: &str| Name::Child(EntryPath { parent: parent.into(), name: name.into() });
        assert_eq!(normalize(b""), Name::Root);
        assert_eq!(normalize(b"./"), Name::Root);
        assert_eq!(normalize(b"//./."), Name::Root);
        assert_eq!(normalize(b"/a//b/./c/"), child("a/b", "c"));
        assert_eq!(normalize(b"../../x"), child("../..", "x"));
        assert_eq!(normalize(b"a/.."), Name::EndsInDotDot);
        assert_eq!(whiteout(b".wh..wh..opq"), Whiteout::Opaque);
        assert_eq!(whiteout(b".wh.x"), Whiteout::Hide(b"x"));
        assert_eq!(whiteout(b".wh..wh.plnk"), Whiteout::Unsupported);
        assert_eq!(whiteout(b".wh."), Whiteout::Unsupported);
        assert_eq!(whiteout(b"x.wh.y"), Whiteout::None);
    }
}
