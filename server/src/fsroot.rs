//! Path resolution confined to a root directory: every lookup goes through `openat2(RESOLVE_IN_ROOT)`, so
//! `..`, absolute symlinks and relative symlinks planted by an image cannot lead outside it. Used by the
//! layer unpacker and by container rootfs setup.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// How often `openat2` is retried when the kernel asks for it (`EAGAIN`).
const OPENAT2_RETRIES: usize = 16;
/// Flags for an `O_PATH` handle on a directory.
pub const DIR_PATH: OFlags = OFlags::PATH.union(OFlags::DIRECTORY);
/// Flags for opening a directory to read it, never through a symlink.
pub const DIR_OPEN: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// Opens `path` (relative, normalized; empty for the root itself) with every component resolved inside
/// `root`; /proc-style magic links are refused.
pub fn open_in_root(root: BorrowedFd<'_>, path: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let path = if path.is_empty() { b".".as_slice() } else { path };
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut retries = 0;
    loop {
        // EAGAIN means a concurrent rename somewhere raced the lookup; simply try again.
        match rfs::openat2(root, path, flags | OFlags::CLOEXEC, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if retries < OPENAT2_RETRIES => retries += 1,
            result => return result,
        }
    }
}

/// Opens directory `path` inside `root`, first creating any missing component (mode 0755), one step at a
/// time and each step resolved inside the root.
pub fn open_or_create_dirs(root: BorrowedFd<'_>, path: &[u8]) -> rustix::io::Result<OwnedFd> {
    match open_in_root(root, path, DIR_PATH) {
        Err(Errno::NOENT) => {}
        result => return result,
    }
    let mut dir = open_in_root(root, b"", DIR_PATH)?;
    let mut end = 0;
    for component in path.split(|&b| b == b'/') {
        end += component.len();
        let prefix = &path[..end];
        end += 1; // The separator before the next component.
        if component.is_empty() {
            continue;
        }
        dir = match open_in_root(root, prefix, DIR_PATH) {
            Err(Errno::NOENT) => make_implicit_dir(dir.as_fd(), component)?,
            result => result?,
        };
    }
    Ok(dir)
}

/// Makes `name` in `dir` a 0755 directory whatever the umask, and opens it. An existing name here is a
/// symlink whose target is missing, and reported as such (NOENT).
pub fn make_implicit_dir(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    let mode = Mode::from_raw_mode(0o755);
    match rfs::mkdirat(dir, name, mode) {
        Err(Errno::EXIST) => return Err(Errno::NOENT),
        result => result?,
    }
    let fd = rfs::openat(dir, name, DIR_OPEN, Mode::empty())?;
    rfs::fchmod(&fd, mode)?;
    Ok(fd)
}
