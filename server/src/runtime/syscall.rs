//! The privileged kernel calls the container's init makes (mounts, pivot_root, hostname, device nodes,
//! namespaces), behind one small trait so the init's steps can be unit-tested without root: [`Linux`] makes
//! the calls, the test-only `fake::Recorder` writes them down. The init is generic over the trait and
//! [`Linux`] is a unit struct, so the real path compiles to the direct calls.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use rustix::fs::{self as rfs, FileType, Mode};
use rustix::io::Errno;

#[cfg(test)]
pub mod fake;

/// The calls, with nix's and rustix's argument types. Paths may be `/proc/self/fd/N` magic links.
pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()>;
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// Enters the namespaces `flags` (CLONE_NEW* bits) of the process behind `pidfd`.
    fn setns(&self, pidfd: BorrowedFd<'_>, flags: i32) -> nix::Result<()>;
    /// A character device `name` in `dir` with mode `mode` exactly (mknod's mode is cut by the umask).
    fn mknod_char(&self, dir: BorrowedFd<'_>, name: &str, mode: u32, major: u32, minor: u32) -> Result<(), Errno>;
    /// A character or block device, as [`Syscall::mknod_char`] (a privileged container's host devices).
    fn mknod(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        block: bool,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), Errno>;
    /// The device nodes under the host's /dev (not its pts, shm or mqueue), for a privileged container.
    fn host_devices(&self) -> Vec<HostDevice>;
    fn symlink(&self, target: &str, dir: BorrowedFd<'_>, name: &str) -> Result<(), Errno>;
    /// Whether `path` (not following a last symlink) is a directory; None when it does not exist.
    fn is_dir(&self, path: &Path) -> Option<bool>;
    /// /proc/self/mountinfo, for the host's cgroup v1 hierarchies.
    fn mountinfo(&self) -> String;
    /// Sets the `lo` interface up in the current network namespace.
    fn loopback_up(&self) -> nix::Result<()>;
    /// Attaches the detached mount `mount` (from fsmount or open_tree) at `target`.
    fn move_mount(&self, mount: BorrowedFd<'_>, target: &Path) -> nix::Result<()>;
}

/// A device node of the host: its path below /dev, kind, permission bits and numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    pub path: String,
    pub block: bool,
    pub mode: u32,
    pub major: u32,
    pub minor: u32,
}

/// /dev's directories a privileged container does not take devices from: its own pts, shm and mqueue.
const SKIPPED_DEV_DIRS: &[&str] = &["pts", "shm", "mqueue", "fd", ".udev", ".lxc"];

fn walk_devices(dir: &Path, prefix: &str, out: &mut Vec<HostDevice>) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        let kind = meta.file_type();
        if kind.is_dir() && !SKIPPED_DEV_DIRS.contains(&path.as_str()) {
            walk_devices(&entry.path(), &path, out);
        } else if kind.is_char_device() || kind.is_block_device() {
            let rdev = meta.rdev();
            out.push(HostDevice {
                path,
                block: kind.is_block_device(),
                mode: meta.mode() & 0o7777,
                major: rfs::major(rdev),
                minor: rfs::minor(rdev),
            });
        }
    }
}

/// The real calls.
#[derive(Clone, Copy, Default)]
pub struct Linux;

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chdir(path)
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }

    fn setns(&self, pidfd: BorrowedFd<'_>, flags: i32) -> nix::Result<()> {
        // SAFETY: setns with a valid pidfd and namespace flags; the kernel validates both.
        if unsafe { nix::libc::setns(pidfd.as_raw_fd(), flags) } < 0 {
            return Err(nix::Error::last());
        }
        Ok(())
    }

    fn mknod_char(&self, dir: BorrowedFd<'_>, name: &str, mode: u32, major: u32, minor: u32) -> Result<(), Errno> {
        let mode = Mode::from_raw_mode(mode);
        rfs::mknodat(dir, name, FileType::CharacterDevice, mode, rfs::makedev(major, minor))?;
        rfs::chmodat(dir, name, mode, rfs::AtFlags::empty())
    }

    fn mknod(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        block: bool,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), Errno> {
        let kind = if block { FileType::BlockDevice } else { FileType::CharacterDevice };
        let mode = Mode::from_raw_mode(mode);
        rfs::mknodat(dir, name, kind, mode, rfs::makedev(major, minor))?;
        rfs::chmodat(dir, name, mode, rfs::AtFlags::empty())
    }

    fn host_devices(&self) -> Vec<HostDevice> {
        let mut out = Vec::new();
        walk_devices(Path::new("/dev"), "", &mut out);
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    fn symlink(&self, target: &str, dir: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
        rfs::symlinkat(target, dir, name)
    }

    fn is_dir(&self, path: &Path) -> Option<bool> {
        std::fs::symlink_metadata(path).ok().map(|m| m.is_dir())
    }

    fn mountinfo(&self) -> String {
        std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
    }

    fn move_mount(&self, mount: BorrowedFd<'_>, target: &Path) -> nix::Result<()> {
        const MOVE_MOUNT_F_EMPTY_PATH: u32 = 4;
        let target = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()).map_err(|_| nix::Error::EINVAL)?;
        // SAFETY: move_mount of a mount fd (empty path) onto a NUL-terminated target path.
        let moved = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_move_mount,
                mount.as_raw_fd(),
                c"".as_ptr(),
                nix::libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if moved < 0 {
            return Err(nix::Error::last());
        }
        Ok(())
    }

    fn loopback_up(&self) -> nix::Result<()> {
        // SAFETY: plain socket + SIOCGIFFLAGS/SIOCSIFFLAGS ioctls on a zeroed ifreq naming "lo"; the socket
        // is closed before returning.
        unsafe {
            let sock = nix::libc::socket(nix::libc::AF_INET, nix::libc::SOCK_DGRAM | nix::libc::SOCK_CLOEXEC, 0);
            if sock < 0 {
                return Err(nix::Error::last());
            }
            let mut req: nix::libc::ifreq = std::mem::zeroed();
            for (i, b) in b"lo\0".iter().enumerate() {
                req.ifr_name[i] = *b as nix::libc::c_char;
            }
            let mut result = nix::libc::ioctl(sock, nix::libc::SIOCGIFFLAGS, &mut req);
            if result == 0 {
                req.ifr_ifru.ifru_flags |= nix::libc::IFF_UP as nix::libc::c_short;
                result = nix::libc::ioctl(sock, nix::libc::SIOCSIFFLAGS, &req);
            }
            let err = nix::Error::last();
            nix::libc::close(sock);
            if result < 0 {
                return Err(err);
            }
        }
        Ok(())
    }
}
