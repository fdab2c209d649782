//! The container side, run in the child the monitor cloned into new namespaces. One linear function in runc's
//! order: wait for the go-ahead, join the cgroup namespace and a new session keyring, the root filesystem
//! ([`rootfs`]: overlay, mounts resolved inside the root, pivot_root, masked and read-only paths), stdio,
//! hostname, user, seccomp, capabilities ([`caps`]), workdir, exec ([`command`]). A terminal is allocated inside the container ([`console`]). Any
//! failure is written to the error pipe (close-on-exec: a successful exec closes it empty) and ends the child
//! with 127 (not found), 126 (not executable) or 125 (setup failed), see [`error`].
//!
//! The privileged calls go through [`Syscall`](super::syscall::Syscall); the real path uses the zero-sized
//! [`Linux`](super::syscall::Linux).

pub mod caps;
pub mod command;
pub mod console;
pub mod error;
pub mod rootfs;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sched::CloneFlags;
use rustix::fs::{self as rfs, Mode, OFlags};

pub use self::error::InitError;
use self::error::{Never, io_err, setup_err};
use super::bundle::{Bundle, ExecSpec};
use super::sync::SyncMsg;
use super::syscall::{Linux, Syscall};
use super::user;
use crate::fsroot::DIR_PATH;

/// The child's ends of what the monitor made for it.
pub struct ChildIo {
    pub stdio: ChildStdio,
    /// Write end, close-on-exec: the reason the container could not start.
    pub errors: OwnedFd,
    /// The root filesystem, already built as a detached mount (user namespaces: see runtime::userns); None:
    /// the init mounts the overlay itself.
    pub rootfs: Option<OwnedFd>,
}

/// The container's stdio.
pub enum ChildStdio {
    /// Pipes; stdin None means /dev/null.
    Pipes { stdin: Option<OwnedFd>, stdout: OwnedFd, stderr: OwnedFd },
    /// A terminal: the init allocates it from the container's own devpts (so ttyname works inside), and
    /// sends the master to the monitor over this socket.
    Console(OwnedFd),
}

/// Every signal back to its default action and none blocked: the monitor ignores SIGPIPE, and an ignored
/// signal would stay ignored across exec.
fn reset_signals() {
    /// The kernel's struct sigaction (libc's signal() refuses the signals glibc reserves, 32 and 33).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction { handler: nix::libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
    // SAFETY: rt_sigaction/sigprocmask system calls with valid arguments in a single-threaded child.
    unsafe {
        for sig in 1..=64 {
            if sig != nix::libc::SIGKILL && sig != nix::libc::SIGSTOP {
                nix::libc::syscall(nix::libc::SYS_rt_sigaction, sig, &default, std::ptr::null_mut::<u8>(), 8usize);
            }
        }
        let mut none: nix::libc::sigset_t = std::mem::zeroed();
        nix::libc::sigemptyset(&mut none);
        nix::libc::sigprocmask(nix::libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// Runs in the cloned child; never returns. `joined` gets [`SyncMsg::Joined`] once the child is in the
/// container's cgroups. `sync` is the read end of the go-ahead pipe: [`SyncMsg::Go`] with the initial tty
/// size; EOF means the start was abandoned.
pub fn run(bundle: &Bundle, io: ChildIo, sync: OwnedFd, joined: OwnedFd, join: bool) -> ! {
    reset_signals();
    let result = setup_and_exec(&Linux, bundle, &io, &sync, joined, join);
    report_and_exit(&io, result)
}

/// Reports why the child could not exec on the error pipe and ends it with the matching code.
fn report_and_exit(io: &ChildIo, result: Result<Never, InitError>) -> ! {
    let code = match result {
        Ok(never) => match never {},
        Err(e) => {
            let _ = rustix::io::write(&io.errors, e.message.as_bytes());
            e.code
        }
    };
    exit(code)
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit is always safe; it skips the monitor's atexit handlers and buffers, which belong to
    // the parent.
    unsafe { nix::libc::_exit(code) }
}

/// Moves the calling (single-threaded) process into the container's cgroups.
fn join_cgroups(bundle: &Bundle) -> Result<(), InitError> {
    for file in &bundle.cgroup_join {
        std::fs::write(file, "0").map_err(|e| InitError::setup(format!("cannot join the container's cgroup: {e}")))?;
    }
    Ok(())
}

fn open_devnull() -> Result<OwnedFd, InitError> {
    rfs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(io_err("open /dev/null"))
}

fn setup_and_exec<S: Syscall>(
    sys: &S,
    bundle: &Bundle,
    io: &ChildIo,
    sync: &OwnedFd,
    joined: OwnedFd,
    join: bool,
) -> Result<Never, InitError> {
    // 1. Join the container's cgroups ourselves unless we were cloned into them (see runtime::clone) and
    // say so; then wait for the go-ahead: the server has connected our network namespace by then.
    if join {
        join_cgroups(bundle)?;
    }
    // A pod member enters its sandbox's network, IPC and UTS namespaces (by their files) before the server
    // is told we are ready: its network is the sandbox's from the start.
    join_namespaces(sys, bundle)?;
    let _ = SyncMsg::Joined.send(&joined);
    drop(joined);
    let tty_size = match SyncMsg::receive(sync) {
        Ok(Some(SyncMsg::Go { rows, cols })) => (rows, cols),
        // The start was abandoned: leave quietly.
        _ => exit(0),
    };
    if bundle.holder {
        return hold(sys, bundle, io);
    }
    // The cgroup namespace is made now, so its root is the container's cgroup, not the monitor's.
    sys.unshare(CloneFlags::CLONE_NEWCGROUP).map_err(setup_err("unshare cgroup namespace"))?;
    // In its own user namespace (the monitor wrote the maps before the go-ahead) the init becomes that
    // namespace's root, so what it makes (the /dev tmpfs's nodes, mount points) is the container root's.
    if bundle.id_map.is_some() {
        become_namespace_root()?;
    }

    // A session keyring of its own, not the host's (runc does the same).
    join_new_session_keyring()?;

    // 2.-6. The root filesystem, the terminal inside it, pivot_root, masked and read-only paths.
    rootfs::prepare(sys, bundle, io.rootfs.as_ref().map(|fd| fd.as_fd()), |root| match &io.stdio {
        ChildStdio::Console(socket) => console::attach(root, socket.as_fd(), tty_size),
        ChildStdio::Pipes { .. } => Ok(()),
    })?;
    // 7. stdio for pipes, now that /dev/null is the container's own (the host's would let the container
    // change the host's node through /proc/self/fd/0).
    if let ChildStdio::Pipes { stdin, stdout, stderr } = &io.stdio {
        let devnull = open_devnull()?;
        let stdin = stdin.as_ref().map_or(devnull.as_fd(), |f| f.as_fd());
        console::dup_stdio([stdin, stdout.as_fd(), stderr.as_fd()])?;
    }

    // 8. Identity, environment, exec. A joined UTS namespace has its hostname already (the sandbox's).
    if bundle.joined("uts").is_none() {
        sys.sethostname(&bundle.hostname).map_err(setup_err("sethostname"))?;
    }
    let process = &bundle.process;
    become_and_exec(bundle, &process.user, &process.cwd, &[], &process.args, true)
}

fn become_namespace_root() -> Result<(), InitError> {
    let (uid, gid) = (nix::unistd::Uid::from_raw(0), nix::unistd::Gid::from_raw(0));
    nix::unistd::setresgid(gid, gid, gid).map_err(setup_err("setgid 0 in the user namespace"))?;
    nix::unistd::setgroups(&[]).map_err(setup_err("setgroups in the user namespace"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(setup_err("setuid 0 in the user namespace"))
}

/// Enters the namespaces the bundle joins by path (net, IPC, UTS; the monitor entered a PID namespace for us).
fn join_namespaces<S: Syscall>(sys: &S, bundle: &Bundle) -> Result<(), InitError> {
    for join in &bundle.join_namespaces {
        let Some(flag) = join.flag().filter(|f| *f != nix::libc::CLONE_NEWPID) else { continue };
        let file = std::fs::File::open(&join.path).map_err(|e| {
            InitError::setup(format!("cannot open the {} namespace {}: {e}", join.kind, join.path.display()))
        })?;
        sys.setns(file.as_fd(), flag).map_err(|e| {
            InitError::setup(format!("cannot join the {} namespace {}: {e}", join.kind, join.path.display()))
        })?;
    }
    Ok(())
}

/// A pod sandbox's holder: sets the namespaces up (loopback, hostname), gives up every capability, tells the
/// monitor it is ready by closing the error pipe (as an exec would), then reaps the pod's orphans (it is PID 1
/// of a pod-wide PID namespace) until it is killed.
fn hold<S: Syscall>(sys: &S, bundle: &Bundle, io: &ChildIo) -> Result<Never, InitError> {
    sys.mount(None, Path::new("/"), None, nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE, None)
        .map_err(setup_err("make / private"))?;
    if !bundle.host_network && bundle.joined("net").is_none() {
        sys.loopback_up().map_err(setup_err("bring up lo"))?;
    }
    if bundle.joined("uts").is_none() {
        sys.sethostname(&bundle.hostname).map_err(setup_err("sethostname"))?;
    }
    std::env::set_current_dir("/").map_err(|e| InitError::setup(format!("cannot enter /: {e}")))?;
    let none = caps::limit_bounding(0)?;
    caps::set(none, true)?;
    let mut chld = nix::sys::signal::SigSet::empty();
    chld.add(nix::sys::signal::Signal::SIGCHLD);
    chld.thread_block().map_err(setup_err("block SIGCHLD"))?;
    // SAFETY: closing our own descriptors: the error pipe (the monitor reads EOF as "ready") and every other
    // inherited one but stdio. The holder never returns, so nothing uses them again.
    unsafe {
        nix::libc::close(std::os::fd::AsRawFd::as_raw_fd(&io.errors));
        nix::libc::syscall(nix::libc::SYS_close_range, 3u32, u32::MAX, 0);
    }
    loop {
        while let Ok(status) = nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
        let _ = chld.wait();
    }
}

/// Runs in a child the monitor forked (already in the container's PID namespace) to exec a process in a
/// running container: join its cgroup and its other namespaces through the init's pidfd, set up stdio, then
/// become the user and exec, as the init does. Never returns.
/// `join`: the process was not cloned into the container's cgroup and joins it itself.
pub fn exec_in_container(bundle: &Bundle, spec: &ExecSpec, init_pidfd: BorrowedFd<'_>, io: ChildIo, join: bool) -> ! {
    reset_signals();
    let result = enter_and_exec(&Linux, bundle, spec, init_pidfd, &io, join);
    report_and_exit(&io, result)
}

fn enter_and_exec<S: Syscall>(
    sys: &S,
    bundle: &Bundle,
    spec: &ExecSpec,
    init_pidfd: BorrowedFd<'_>,
    io: &ChildIo,
    join: bool,
) -> Result<Never, InitError> {
    if join {
        join_cgroups(bundle)?;
    }
    let mut flags =
        nix::libc::CLONE_NEWNS | nix::libc::CLONE_NEWUTS | nix::libc::CLONE_NEWIPC | nix::libc::CLONE_NEWCGROUP;
    if !bundle.host_network {
        flags |= nix::libc::CLONE_NEWNET;
    }
    if bundle.id_map.is_some() {
        flags |= nix::libc::CLONE_NEWUSER;
    }
    // The pidfd enters all these namespaces at once; the mount namespace switch also moves our root and
    // cwd to the container's root.
    sys.setns(init_pidfd, flags).map_err(setup_err("enter the container's namespaces"))?;
    join_new_session_keyring()?;
    let devnull = open_devnull()?;
    match &io.stdio {
        ChildStdio::Pipes { stdin, stdout, stderr } => {
            console::dup_stdio([stdin.as_ref().map_or(devnull.as_fd(), |f| f.as_fd()), stdout.as_fd(), stderr.as_fd()])?
        }
        ChildStdio::Console(socket) => {
            let root = rfs::open("/", DIR_PATH | OFlags::CLOEXEC, Mode::empty()).map_err(io_err("open /"))?;
            let size = if spec.rows > 0 && spec.cols > 0 { (spec.rows, spec.cols) } else { (24, 80) };
            console::attach(&root, socket.as_fd(), size)?;
        }
    }
    let process = &spec.process;
    let user = if process.user.is_empty() { &bundle.process.user } else { &process.user };
    let cwd = if process.cwd.is_empty() { &bundle.process.cwd } else { &process.cwd };
    become_and_exec(bundle, user, cwd, &process.env, &process.args, false)
}

/// The last steps of every container process: resolve the user from the container's own /etc/passwd and
/// /etc/group, build the environment, enter the working directory (creating it for the main process, as
/// docker does), drop to the user, close every inherited descriptor, exec.
fn become_and_exec(
    bundle: &Bundle,
    user_spec: &str,
    cwd: &str,
    extra_env: &[String],
    args: &[String],
    create_cwd: bool,
) -> Result<Never, InitError> {
    let passwd = user::read_db("/etc/passwd").map_err(InitError::setup)?;
    let group = user::read_db("/etc/group").map_err(InitError::setup)?;
    let who = user::resolve(user_spec, &passwd, &group).map_err(InitError::setup)?;
    let mut env = command::process_env(bundle, &who.home);
    command::overlay_env(&mut env, extra_env);
    let cwd = if cwd.is_empty() { "/" } else { cwd };
    if !cwd.starts_with('/') {
        return Err(InitError::setup(format!("working directory {cwd:?} must be absolute")));
    }
    if create_cwd {
        std::fs::create_dir_all(cwd)
            .map_err(|e| InitError::setup(format!("cannot create working directory {cwd}: {e}")))?;
    }
    // runc's order: with no_new_privs the filter comes last, just before exec; without it, installing one
    // needs CAP_SYS_ADMIN, so it goes on while we still have it (the calls left are all in docker's profile).
    if bundle.no_new_privileges {
        // SAFETY: prctl with integer arguments.
        if unsafe { nix::libc::prctl(nix::libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err(setup_err("set no_new_privs")(nix::Error::last()));
        }
    } else {
        install_seccomp(bundle)?;
    }
    let keep = caps::limit_bounding(bundle.capabilities)?;
    let groups: Vec<nix::unistd::Gid> = who.groups.iter().map(|g| nix::unistd::Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(setup_err("setgroups"))?;
    let (uid, gid) = (nix::unistd::Uid::from_raw(who.uid), nix::unistd::Gid::from_raw(who.gid));
    nix::unistd::setresgid(gid, gid, gid).map_err(setup_err("setgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(setup_err("setuid"))?;
    // What the kernel says we are now, not what we asked for (an id the calls took as "no change" is caught).
    let ids = nix::unistd::getresuid().map_err(setup_err("getresuid"))?;
    let gids = nix::unistd::getresgid().map_err(setup_err("getresgid"))?;
    if [ids.real, ids.effective, ids.saved] != [uid; 3] || [gids.real, gids.effective, gids.saved] != [gid; 3] {
        return Err(InitError::setup(format!("the process did not become uid {uid} gid {gid}")));
    }
    caps::set(keep, who.uid == 0)?;
    nix::unistd::chdir(Path::new(cwd))
        .map_err(|e| InitError::setup(format!("cannot enter working directory {cwd}: {e}")))?;
    // Nothing of the monitor's leaks past exec.
    // SAFETY: close_range only marks descriptors close-on-exec.
    unsafe { nix::libc::syscall(nix::libc::SYS_close_range, 3u32, u32::MAX, nix::libc::CLOSE_RANGE_CLOEXEC) };
    if bundle.no_new_privileges {
        install_seccomp(bundle)?;
    }
    command::exec(args, &env)
}

fn install_seccomp(bundle: &Bundle) -> Result<(), InitError> {
    super::seccomp::install(&bundle.seccomp)
        .map_err(|e| InitError::setup(format!("cannot install the seccomp filter: {e}")))
}

/// Joins a new anonymous session keyring, so the container's processes cannot reach keys in the session
/// keyring of the server (KEYCTL_JOIN_SESSION_KEYRING, as runc). A kernel without keys is fine.
fn join_new_session_keyring() -> Result<(), InitError> {
    const KEYCTL_JOIN_SESSION_KEYRING: nix::libc::c_long = 1;
    // SAFETY: keyctl with a null name (an anonymous keyring).
    let rc = unsafe {
        nix::libc::syscall(nix::libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, std::ptr::null::<nix::libc::c_char>())
    };
    if rc < 0 && nix::Error::last() != nix::Error::ENOSYS {
        return Err(setup_err("join a new session keyring")(nix::Error::last()));
    }
    Ok(())
}

/// The first step of every child the monitor clones (the init and exec'd processes), before anything of the
/// container can see it: non-dumpable until it execs, so no container process can open its
/// /proc/<pid>/exe (the host's monitor binary), fd/ or mem (CVE-2019-5736; execve makes a process dumpable
/// again), and holding none of the monitor's descriptors but 0-2 and `keep`.
pub fn harden_child(keep: &[RawFd]) {
    // SAFETY: prctl with integer arguments.
    unsafe { nix::libc::prctl(nix::libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|fd| *fd > 2).collect();
    keep.sort_unstable();
    let mut next = 3u32;
    for fd in keep.into_iter().map(|fd| fd as u32).chain([u32::MAX]) {
        if fd > next {
            // SAFETY: close_range closes descriptors of this single-threaded child that nothing uses.
            unsafe { nix::libc::syscall(nix::libc::SYS_close_range, next, fd - 1, 0u32) };
        }
        next = fd.saturating_add(1);
    }
}

impl ChildIo {
    /// The descriptors the child needs.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.errors.as_raw_fd()];
        match &self.stdio {
            ChildStdio::Pipes { stdin, stdout, stderr } => {
                fds.extend(stdin.iter().map(|f| f.as_raw_fd()));
                fds.extend([stdout.as_raw_fd(), stderr.as_raw_fd()]);
            }
            ChildStdio::Console(socket) => fds.push(socket.as_raw_fd()),
        }
        fds.extend(self.rootfs.iter().map(|f| f.as_raw_fd()));
        fds
    }
}
