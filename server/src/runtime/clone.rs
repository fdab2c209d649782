//! Fork-like clones of the (single-threaded) monitor: the container's init into new namespaces, and exec'd
//! processes. On cgroup v2 the child is born in the container's cgroup (clone3 with CLONE_INTO_CGROUP): no
//! cgroup.procs write, so no wait for the kernel's threadgroup lock, whose write side waits for an RCU grace
//! period (7-20 ms) after an idle moment. On v1 the child joins through the `tasks` files instead (see
//! `Cgroup::join_files`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// clone3's argument block (linux/sched.h, version 2: up to `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// CLONE_INTO_CGROUP (linux/sched.h), a 64-bit clone3-only flag.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Set (to anything) in cm-server's environment, this makes its monitors clone without CLONE_INTO_CGROUP, as on
/// a kernel without it, so the fallback (the child joins its cgroup itself) can be tested on any v2 kernel.
pub const NO_CLONE_INTO_CGROUP_ENV: &str = "CM_TEST_NO_CLONE_INTO_CGROUP";

/// Where a clone put its child: Ok(0) in the child, Ok(pid) in the parent.
pub struct Cloned {
    pub pid: i32,
    /// The child was born in the cgroup given to [`clone`] (it must not join it itself).
    pub in_cgroup: bool,
}

/// Clones the calling single-threaded process like fork(2), into new namespaces `flags` (CLONE_NEW*), and,
/// when `cgroup` (a v2 cgroup directory) is given and the kernel can (5.7+), straight into that cgroup.
///
/// # Safety
/// The caller must be single-threaded; the child continues on a copy of the caller's stack and must only
/// exec or _exit in the end (like after fork).
pub unsafe fn clone(flags: i32, cgroup: Option<BorrowedFd<'_>>) -> io::Result<Cloned> {
    if let Some(cgroup) = cgroup.filter(|_| std::env::var_os(NO_CLONE_INTO_CGROUP_ENV).is_none()) {
        let args = CloneArgs {
            flags: flags as u64 | CLONE_INTO_CGROUP,
            exit_signal: nix::libc::SIGCHLD as u64,
            cgroup: cgroup.as_raw_fd() as u64,
            ..Default::default()
        };
        // SAFETY: clone3 with no stack behaves like fork; the caller is single-threaded (see above).
        let pid = unsafe {
            nix::libc::syscall(nix::libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>())
        };
        if pid >= 0 {
            return Ok(Cloned { pid: pid as i32, in_cgroup: true });
        }
        let e = io::Error::last_os_error();
        // Older kernels: no clone3 (ENOSYS) or no CLONE_INTO_CGROUP (E2BIG, EINVAL); join the old way.
        if !matches!(e.raw_os_error(), Some(nix::libc::ENOSYS | nix::libc::E2BIG | nix::libc::EINVAL)) {
            return Err(e);
        }
    }
    // SAFETY: a fork-like clone (no new stack) of a single-threaded process.
    let pid = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_clone,
            flags as nix::libc::c_long | nix::libc::SIGCHLD as nix::libc::c_long,
            0,
            0,
            0,
            0,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Cloned { pid: pid as i32, in_cgroup: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// The mechanism, on this machine's cgroup v2 hierarchy (the unified one of a hybrid layout is enough:
    /// placement needs no controllers). Skipped where there is none or we may not create cgroups.
    #[test]
    fn a_child_is_born_in_the_given_v2_cgroup() {
        let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(std::path::Path::new)
            .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists());
        let Some(root) = root else { return };
        let dir = root.join(format!("cm-clone-test-{}", std::process::id()));
        if std::fs::create_dir(&dir).is_err() {
            return; // not root, or no write access to the hierarchy
        }
        let fd = std::fs::File::open(&dir).unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        // SAFETY: the test child only reads a pipe and _exits; the harness thread calling this is the only
        // one touching these descriptors.
        let cloned = unsafe { clone(0, Some(fd.as_fd())) }.unwrap();
        if cloned.pid == 0 {
            drop(w);
            let mut byte = [0u8];
            let _ = nix::unistd::read(&r, &mut byte);
            unsafe { nix::libc::_exit(0) };
        }
        drop(r);
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        drop(w);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(cloned.pid), None);
        let _ = std::fs::remove_dir(&dir);
        assert!(cloned.in_cgroup, "clone3 with CLONE_INTO_CGROUP is not available here");
        assert_eq!(procs.trim(), cloned.pid.to_string(), "the child is in the cgroup from birth");
    }
}
