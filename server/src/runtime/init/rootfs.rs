//! The container's root filesystem, in runc's order: `/` made private, `lo` up (own network), the overlay
//! root, kernel filesystems and devices with every target resolved inside the root, the console, the
//! server's /etc files and the user's mounts, pivot_root, then the masked and read-only paths. Every
//! privileged call goes through [`Syscall`], so the tests below pin the sequence with a recording fake.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::error::{InitError, io_err, setup_err};
use crate::fsroot::{DIR_PATH, open_or_create_dirs};
use crate::runtime::bundle::{Bundle, MountSpec};
use crate::runtime::syscall::Syscall;

/// What runc and docker mask: kernel interfaces a container has no business reading.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READ_ONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Builds the root and switches into it. `console` runs once the container's /dev/pts exists (with the
/// root's fd), before the /etc files and user mounts, to attach a terminal.
pub fn prepare<S: Syscall>(
    sys: &S,
    bundle: &Bundle,
    premounted: Option<BorrowedFd<'_>>,
    console: impl FnOnce(&OwnedFd) -> Result<(), InitError>,
) -> Result<(), InitError> {
    // Nothing we mount propagates back to the host.
    sys.mount(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)
        .map_err(setup_err("make / private"))?;
    if !bundle.host_network {
        sys.loopback_up().map_err(setup_err("bring up lo"))?;
    }

    // The overlay root filesystem. Lower dirs are relative to the snapshots dir to keep options short.
    // In a user namespace the monitor built it (over idmapped layers): it is only attached here.
    let rootfs = &bundle.rootfs;
    if let Some(mount) = premounted {
        sys.move_mount(mount, &rootfs.merged).map_err(setup_err("attach the idmapped root filesystem"))?;
    } else {
        sys.chdir(&rootfs.snapshots_dir).map_err(setup_err("enter the snapshots dir"))?;
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            rootfs.lower.join(":"),
            rootfs.upper.display(),
            rootfs.work.display()
        );
        sys.mount(Some(Path::new("overlay")), &rootfs.merged, Some("overlay"), MsFlags::empty(), Some(&options))
            .map_err(setup_err("mount the overlay root filesystem"))?;
    }
    let root = rfs::open(&rootfs.merged, DIR_PATH | OFlags::CLOEXEC, Mode::empty()).map_err(io_err("open rootfs"))?;

    // Kernel filesystems and devices, every target resolved inside the root.
    let nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mount_in(sys, &root, "proc", "proc", "proc", nodev_noexec, None)?;
    let dev_flags = MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME;
    mount_in(sys, &root, "dev", "tmpfs", "tmpfs", dev_flags, Some("mode=755,size=65536k"))?;
    let pts_data = Some("newinstance,ptmxmode=0666,mode=0620,gid=5");
    mount_in(sys, &root, "dev/pts", "devpts", "devpts", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, pts_data)?;
    mount_in(sys, &root, "dev/shm", "shm", "tmpfs", nodev_noexec, Some("mode=1777,size=65536k"))?;
    mount_in(sys, &root, "dev/mqueue", "mqueue", "mqueue", nodev_noexec, None)?;
    // Privileged containers get a writable /sys and cgroup tree, as with docker.
    let sys_ro = if bundle.privileged { MsFlags::empty() } else { MsFlags::MS_RDONLY };
    mount_in(sys, &root, "sys", "sysfs", "sysfs", nodev_noexec | sys_ro, None)?;
    mount_cgroups(sys, &root, bundle.cgroup_v2, sys_ro)?;
    make_devices(sys, &root, bundle.privileged, bundle.id_map.is_some())?;
    console(&root)?;
    for (source, target) in &bundle.etc_files {
        bind_file_in(sys, &root, source, target)?;
        // A read-only container's /etc files are read-only too (docker's network files follow the root).
        if bundle.read_only_rootfs {
            remount_read_only_in(sys, &root, target)?;
        }
    }
    for m in &bundle.mounts {
        user_mount(sys, &root, m)?;
    }
    // A read-only root cannot take the working directory later: make it now, as docker does before start.
    if bundle.read_only_rootfs && !bundle.process.cwd.is_empty() {
        open_or_create_dirs(root.as_fd(), bundle.process.cwd.trim_start_matches('/').as_bytes())
            .map_err(io_err(&bundle.process.cwd))?;
    }

    // Switch root: pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the
    // container's.
    sys.chdir(&rootfs.merged).map_err(setup_err("enter the rootfs"))?;
    sys.pivot_root(Path::new("."), Path::new(".")).map_err(setup_err("pivot_root"))?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH).map_err(setup_err("detach the old root"))?;
    sys.chdir(Path::new("/")).map_err(setup_err("chdir /"))?;
    drop(root);

    if bundle.read_only_rootfs {
        // Only the root mount's own flag: /dev, /proc, /sys and the user's mounts keep theirs.
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        sys.mount(None, Path::new("/"), None, flags, None).map_err(setup_err("make the root filesystem read-only"))?;
    }
    // Privileged containers see the kernel's interfaces unmasked and /proc/sys writable, as with docker.
    if bundle.privileged {
        return Ok(());
    }
    // Masked and read-only paths; failures are ignored (a kernel may lack any of them).
    for path in MASKED_PATHS {
        mask(sys, Path::new(path));
    }
    for path in READ_ONLY_PATHS {
        let path = Path::new(path);
        let _ = sys.mount(Some(path), path, None, MsFlags::MS_BIND | MsFlags::MS_REC, None).and_then(|_| {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC;
            sys.mount(None, path, None, flags, None)
        });
    }
    Ok(())
}

/// Hides a path: /dev/null over a file, an empty read-only tmpfs over a directory. Missing paths are fine.
fn mask<S: Syscall>(sys: &S, path: &Path) {
    match sys.is_dir(path) {
        Some(true) => {
            let _ = sys.mount(Some(Path::new("tmpfs")), path, Some("tmpfs"), MsFlags::MS_RDONLY, None);
        }
        Some(false) => {
            let _ = sys.mount(Some(Path::new("/dev/null")), path, None, MsFlags::MS_BIND, None);
        }
        None => {}
    }
}

/// Opens (creating if missing) directory `path` inside the root; a symlink or file there is refused, as runc
/// refuses to mount on anything but a real directory.
pub fn dir_in_root(root: &OwnedFd, path: &str) -> Result<OwnedFd, InitError> {
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    let parent_fd = open_or_create_dirs(root.as_fd(), parent.as_bytes()).map_err(io_err(path))?;
    match rfs::mkdirat(&parent_fd, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    rfs::openat(&parent_fd, name, DIR_PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
        InitError::setup(format!("container setup: the image's /{path} is not a directory ({e}); cannot mount there"))
    })
}

/// The magic-link path of an fd, to mount onto exactly the inode we resolved.
fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn mount_in<S: Syscall>(
    sys: &S,
    root: &OwnedFd,
    path: &str,
    source: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    let target = dir_in_root(root, path)?;
    sys.mount(Some(Path::new(source)), Path::new(&fd_path(target.as_fd())), Some(fstype), flags, data)
        .map_err(|e| InitError::setup(format!("container setup: mount {fstype} on /{path}: {e}")))
}

/// /sys/fs/cgroup: on v2 the cgroup2 filesystem, on v1 a tmpfs with each controller hierarchy the host
/// mounts; all read-only. The cgroup namespace makes the container's cgroup their root.
fn mount_cgroups<S: Syscall>(sys: &S, root: &OwnedFd, v2: bool, read_only: MsFlags) -> Result<(), InitError> {
    let ro = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | read_only;
    if v2 {
        return mount_in(sys, root, "sys/fs/cgroup", "cgroup2", "cgroup2", ro, None);
    }
    let base = dir_in_root(root, "sys/fs/cgroup")?;
    let base_path = fd_path(base.as_fd());
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    sys.mount(Some(Path::new("tmpfs")), Path::new(&base_path), Some("tmpfs"), flags, Some("mode=755"))
        .map_err(setup_err("mount tmpfs on /sys/fs/cgroup"))?;
    for (name, options) in v1_hierarchies(&sys.mountinfo()) {
        mount_in(sys, root, &format!("sys/fs/cgroup/{name}"), "cgroup", "cgroup", ro, Some(&options))?;
    }
    let base = dir_in_root(root, "sys/fs/cgroup")?;
    sys.mount(None, Path::new(&fd_path(base.as_fd())), None, MsFlags::MS_REMOUNT | ro, Some("mode=755"))
        .map_err(setup_err("make /sys/fs/cgroup read-only"))
}

/// The host's cgroup v1 hierarchies from mountinfo: (directory name under /sys/fs/cgroup, mount options
/// naming its controllers, e.g. "memory" or "cpu,cpuacct" or "name=systemd").
pub fn v1_hierarchies(mountinfo: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else { continue };
        let mut after = after.split(' ');
        if after.next() != Some("cgroup") {
            continue;
        }
        let super_options = after.nth(1).unwrap_or("");
        let Some(mount_point) = before.split(' ').nth(4) else { continue };
        let Some(name) = mount_point.strip_prefix("/sys/fs/cgroup/") else { continue };
        let controllers: Vec<&str> = super_options.split(',').filter(|o| *o != "rw" && *o != "ro").collect();
        if !name.contains('/') && !controllers.is_empty() {
            out.push((name.to_string(), controllers.join(",")));
        }
    }
    out
}

/// Device nodes docker gives every container, and the usual /dev symlinks; a privileged container also gets
/// every device node of the host's /dev (but its pts, shm and mqueue), with the host's modes.
/// In a user namespace, where no device node can be made, the host's nodes are bind-mounted instead (as runc
/// does).
fn make_devices<S: Syscall>(sys: &S, root: &OwnedFd, privileged: bool, userns: bool) -> Result<(), InitError> {
    let dev = dir_in_root(root, "dev")?;
    let dev = rfs::openat(&dev, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(io_err("open /dev"))?;
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        if userns {
            bind_file_in(sys, root, Path::new(&format!("/dev/{name}")), &format!("/dev/{name}"))?;
            continue;
        }
        sys.mknod_char(dev.as_fd(), name, 0o666, major, minor).map_err(io_err(name))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        sys.symlink(target, dev.as_fd(), name).map_err(io_err(name))?;
    }
    if privileged {
        for device in sys.host_devices() {
            let (parent, name) = device.path.rsplit_once('/').unwrap_or(("", &device.path));
            let dir = open_or_create_dirs(dev.as_fd(), parent.as_bytes()).map_err(io_err(&device.path))?;
            match sys.mknod(dir.as_fd(), name, device.block, device.mode, device.major, device.minor) {
                // The default nodes and links above stay as they are.
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(io_err(&device.path)(e)),
            }
        }
    }
    Ok(())
}

/// Makes the mount at `target` (inside the root) read-only.
fn remount_read_only_in<S: Syscall>(sys: &S, root: &OwnedFd, target: &str) -> Result<(), InitError> {
    let (parent, name) = target.trim_start_matches('/').rsplit_once('/').unwrap_or(("", target));
    let parent_fd = open_or_create_dirs(root.as_fd(), parent.as_bytes()).map_err(io_err(target))?;
    let file = rfs::openat(&parent_fd, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
        .map_err(io_err(target))?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    sys.mount(None, Path::new(&fd_path(file.as_fd())), None, flags, None)
        .map_err(|e| InitError::setup(format!("container setup: make {target} read-only: {e}")))
}

/// Bind-mounts a host file (the container's /etc/hosts ...) over `target` inside the root, replacing a
/// symlink or other non-file there with an empty file first.
fn bind_file_in<S: Syscall>(sys: &S, root: &OwnedFd, source: &Path, target: &str) -> Result<(), InitError> {
    let (parent, name) = target.trim_start_matches('/').rsplit_once('/').unwrap_or(("", target));
    let parent_fd = open_or_create_dirs(root.as_fd(), parent.as_bytes()).map_err(io_err(target))?;
    let is_file = rfs::statat(&parent_fd, name, rfs::AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile);
    match is_file {
        Ok(true) => {}
        Ok(false) => {
            let _ = rfs::unlinkat(&parent_fd, name, rfs::AtFlags::empty());
            let _ = rfs::unlinkat(&parent_fd, name, rfs::AtFlags::REMOVEDIR);
            create_empty(&parent_fd, name, target)?;
        }
        Err(_) => create_empty(&parent_fd, name, target)?,
    }
    let file = rfs::openat(&parent_fd, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
        .map_err(io_err(target))?;
    sys.mount(Some(source), Path::new(&fd_path(file.as_fd())), None, MsFlags::MS_BIND, None)
        .map_err(|e| InitError::setup(format!("container setup: bind {} on {target}: {e}", source.display())))
}

fn create_empty(dir: &OwnedFd, name: &str, shown: &str) -> Result<(), InitError> {
    rfs::openat(
        dir,
        name,
        OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map(drop)
    .map_err(io_err(shown))
}

/// A user's bind or tmpfs mount; the target is resolved inside the root.
fn user_mount<S: Syscall>(sys: &S, root: &OwnedFd, m: &MountSpec) -> Result<(), InitError> {
    let target = m.target.trim_start_matches('/');
    let ro = if m.read_only { MsFlags::MS_RDONLY } else { MsFlags::empty() };
    match m.kind.as_str() {
        "tmpfs" => {
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | ro;
            mount_in(sys, root, target, "tmpfs", "tmpfs", flags, Some("mode=1777"))
        }
        _ if m.source.is_dir() => {
            let fd = dir_in_root(root, target)?;
            let path = fd_path(fd.as_fd());
            sys.mount(Some(&m.source), Path::new(&path), None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
                .map_err(|e| InitError::setup(format!("bind {} on {}: {e}", m.source.display(), m.target)))?;
            if m.read_only {
                let fd = dir_in_root(root, target)?;
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                sys.mount(None, Path::new(&fd_path(fd.as_fd())), None, flags, None)
                    .map_err(|e| InitError::setup(format!("make {} read-only: {e}", m.target)))?;
            }
            Ok(())
        }
        _ => bind_file_in(sys, root, &m.source, target),
    }
}

#[cfg(test)]
#[path = "rootfs_tests.rs"]
mod tests;
