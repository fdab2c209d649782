//! Extra processes run in a running container (Exec): each is the monitor's child, born in the container's
//! PID namespace, owned by the connection that asked for it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::fcntl::OFlag;
use nix::unistd::pipe2;

use super::proc::{Proc, err, make_stdio};
use crate::runtime::bundle::{Bundle, ExecSpec};
use crate::runtime::clone;
use crate::runtime::init::{self, ChildIo};

/// A process started by Exec.
pub(super) struct Exec {
    pub(super) key: u64,
    pub(super) id: String,
    pub(super) proc: Proc,
    /// The connection that owns it (gets its output and exit).
    pub(super) owner: u64,
    /// Connections waiting for its exit (WaitExec).
    pub(super) waiters: Vec<u64>,
    /// Killed when its owner's connection is gone (not started with detach-on-disconnect).
    pub(super) kill_on_disconnect: bool,
    /// Whether it was killed for that already.
    pub(super) killed: bool,
}

/// Starts the process `spec` asks for in the running container whose init is behind `init_pidfd`:
/// cloned (into the container's cgroup `cgroup_dir` on v2) into the container's PID namespace, which the
/// monitor joins at the first exec (`in_container_pidns` remembers it).
pub(super) fn spawn(
    bundle: &Bundle,
    spec: &ExecSpec,
    init_pidfd: BorrowedFd<'_>,
    cgroup_dir: Option<BorrowedFd<'_>>,
    in_container_pidns: &mut bool,
) -> io::Result<Proc> {
    if !*in_container_pidns {
        // From now on our children are born in the container's PID namespace, so an exec is both in
        // it and our own child to wait for. The monitor forks nothing else after its init.
        // SAFETY: setns on the init's pidfd, PID namespace only.
        if unsafe { nix::libc::setns(init_pidfd.as_raw_fd(), nix::libc::CLONE_NEWPID) } < 0 {
            return Err(io::Error::other(format!("join the PID namespace: {}", io::Error::last_os_error())));
        }
        *in_container_pidns = true;
    }
    let (stdio, child_stdio, console) = make_stdio(spec.process.tty, spec.process.stdin)?;
    let (errors_r, errors_w) = pipe2(OFlag::O_CLOEXEC).map_err(err("pipe"))?;
    // SAFETY: the monitor is single-threaded; the child execs or exits.
    let cloned = unsafe { clone::clone(0, cgroup_dir) }.map_err(|e| io::Error::other(format!("fork: {e}")))?;
    if cloned.pid == 0 {
        // SAFETY: prctl in the child.
        unsafe { nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) };
        let io = ChildIo { stdio: child_stdio, errors: errors_w, rootfs: None };
        let mut keep = io.fds();
        keep.push(init_pidfd.as_raw_fd());
        init::harden_child(&keep);
        init::exec_in_container(bundle, spec, init_pidfd, io, !cloned.in_cgroup);
    }
    drop((child_stdio, errors_w));
    let mut proc = Proc::new(cloned.pid, stdio, console, errors_r)?;
    proc.receive_console();
    Ok(proc)
}
