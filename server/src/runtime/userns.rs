//! User namespaces, the monitor's side: the id maps of a child, and the container's root filesystem as a
//! detached overlay mount whose image layers are idmapped (mount_setattr MOUNT_ATTR_IDMAP), so the image's
//! root-owned files are owned by the container's root without a copy. Idmapping needs CAP_SYS_ADMIN over the
//! layers' filesystem, which only the host's root has, so the monitor builds the mount before it clones the
//! init into the new user namespace; the init attaches it with move_mount. The layers stay untouched and
//! shared; the container's upper dir belongs to its mapped root. Nothing is mounted on the host: the mounts
//! live as long as their descriptors.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::bundle::{IdMap, Rootfs};
use super::clone;

fn last_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn owned(fd: nix::libc::c_long, what: &str) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(last_error(what));
    }
    // SAFETY: a new descriptor the kernel just gave us, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn c_string(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{s:?} has a NUL byte")))
}

/// Writes the uid_map and gid_map of process `pid` (a child in a new user namespace): container ids
/// 0..size are host ids map.uid.. and map.gid...
pub fn write_maps(pid: i32, map: &IdMap) -> io::Result<()> {
    for (file, start) in [("uid_map", map.uid), ("gid_map", map.gid)] {
        std::fs::write(format!("/proc/{pid}/{file}"), format!("0 {start} {}\n", map.size))
            .map_err(|e| io::Error::new(e.kind(), format!("writing the {file} of {pid}: {e}")))?;
    }
    Ok(())
}

/// A user namespace with `map`, to idmap mounts with: a short-lived child made in it, its maps written,
/// its namespace opened, the child ended.
fn user_namespace(map: &IdMap) -> io::Result<OwnedFd> {
    let (r, w) = nix::unistd::pipe().map_err(io::Error::from)?;
    // SAFETY: the monitor is single-threaded here; the child only blocks on the pipe and _exits.
    let cloned = unsafe { clone::clone(nix::libc::CLONE_NEWUSER, None) }?;
    if cloned.pid == 0 {
        drop(w);
        let mut byte = [0u8];
        let _ = nix::unistd::read(&r, &mut byte);
        // SAFETY: _exit in the child.
        unsafe { nix::libc::_exit(0) };
    }
    drop(r);
    let result = write_maps(cloned.pid, map)
        .and_then(|()| std::fs::File::open(format!("/proc/{}/ns/user", cloned.pid)).map(OwnedFd::from));
    drop(w);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(cloned.pid), None);
    result
}

/// A detached, idmapped copy of the directory `path`.
fn idmapped_tree(path: &std::path::Path, userns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: u32 = 1;
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let c_path = c_string(&path.display().to_string())?;
    // SAFETY: open_tree with a valid NUL-terminated path and flags.
    let tree = owned(
        unsafe {
            nix::libc::syscall(
                nix::libc::SYS_open_tree,
                nix::libc::AT_FDCWD,
                c_path.as_ptr(),
                OPEN_TREE_CLONE | nix::libc::O_CLOEXEC as u32,
            )
        },
        &format!("open_tree {}", path.display()),
    )?;
    let attr =
        MountAttr { attr_set: MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    // SAFETY: mount_setattr on our detached tree with an empty path and a valid mount_attr of its size.
    let set = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            nix::libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if set < 0 {
        return Err(last_error(&format!(
            "idmapping {} (this kernel or filesystem cannot idmap mounts; --userns auto needs Linux 5.19+)",
            path.display()
        )));
    }
    Ok(tree)
}

/// The container's root filesystem for a user namespace with `map`: an overlay of the idmapped image
/// layers and the container's upper dir, as a detached mount (see the module doc).
pub fn idmapped_rootfs(rootfs: &Rootfs, map: &IdMap) -> io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: u32 = 1;
    const FSCONFIG_SET_STRING: u32 = 1;
    const FSCONFIG_CMD_CREATE: u32 = 6;
    const FSMOUNT_CLOEXEC: u32 = 1;
    let userns = user_namespace(map)?;
    let mut layers = Vec::new();
    for lower in &rootfs.lower {
        layers.push(idmapped_tree(&rootfs.snapshots_dir.join(lower), std::os::fd::AsFd::as_fd(&userns))?);
    }
    // SAFETY: fsopen with a NUL-terminated filesystem name.
    let fs = owned(
        unsafe { nix::libc::syscall(nix::libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) },
        "fsopen overlay",
    )?;
    let lowerdir: Vec<String> = layers.iter().map(|l| format!("/proc/self/fd/{}", l.as_raw_fd())).collect();
    let options = [
        ("lowerdir", lowerdir.join(":")),
        ("upperdir", rootfs.upper.display().to_string()),
        ("workdir", rootfs.work.display().to_string()),
    ];
    for (key, value) in options {
        let (c_key, c_value) = (c_string(key)?, c_string(&value)?);
        // SAFETY: fsconfig on our fs context with NUL-terminated key and value.
        let set = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                c_key.as_ptr(),
                c_value.as_ptr(),
                0,
            )
        };
        if set < 0 {
            return Err(last_error(&format!("overlay {key}={value}")));
        }
    }
    // SAFETY: fsconfig create with no key or value.
    if unsafe {
        nix::libc::syscall(
            nix::libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    } < 0
    {
        return Err(last_error("creating the overlay over idmapped layers"));
    }
    // SAFETY: fsmount on the created context.
    owned(unsafe { nix::libc::syscall(nix::libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) }, "fsmount overlay")
}
