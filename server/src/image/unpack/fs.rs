//! The unpacker's file-system primitives: create-or-replace, removal of whatever a name holds (a whole
//! tree too, iteratively and never following a symlink), and inode comparisons. Every call is relative
//! to a directory descriptor; nothing here resolves a path.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, Stat};
use rustix::io::Errno;

use crate::fsroot::DIR_OPEN;

/// Runs `create`; if the name is taken, removes whatever has it (a directory with everything in
/// it) and runs `create` once more. Returns whether something was replaced.
pub(super) fn create_replacing<T>(
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
pub(super) fn is_dir_nofollow(dir: BorrowedFd<'_>, name: &[u8]) -> bool {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
}

/// Whether two names (not following symlinks) are the same inode.
pub(super) fn same_file(a_dir: BorrowedFd<'_>, a: &[u8], b_dir: BorrowedFd<'_>, b: &[u8]) -> bool {
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
pub(super) fn remove_any(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
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
