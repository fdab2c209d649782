//! The container side, run in the child the monitor cloned into new namespaces. One linear function in runc's
//! order: wait for the go-ahead, join the cgroup namespace, stdio, overlay rootfs, mounts resolved inside the
//! root, pivot_root, masked and read-only paths, hostname, user, workdir, exec. Any failure is written to the
//! error pipe (close-on-exec: a successful exec closes it empty) and ends the child with 127 (not found), 126
//! (not executable) or 125 (setup failed).

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::bundle::{Bundle, ExecSpec, MountSpec};
use super::user;
use crate::fsroot::{DIR_PATH, open_or_create_dirs};

/// The child's ends of what the monitor made for it.
pub struct ChildIo {
    pub stdio: ChildStdio,
    /// Write end, close-on-exec: the reason the container could not start.
    pub errors: OwnedFd,
}

/// The container's stdio.
pub enum ChildStdio {
    /// Pipes; stdin None means /dev/null.
    Pipes { stdin: Option<OwnedFd>, stdout: OwnedFd, stderr: OwnedFd },
    /// A terminal: the init allocates it from the container's own devpts (so ttyname works inside), and
    /// sends the master to the monitor over this socket.
    Console(OwnedFd),
}

/// Why the container could not start, and the exit code that says so.
pub struct InitError {
    pub code: i32,
    pub message: String,
}

fn setup_err(what: &str) -> impl Fn(nix::Error) -> InitError + '_ {
    move |e| InitError { code: 125, message: format!("container setup: {what}: {e}") }
}

fn io_err(what: &str) -> impl Fn(Errno) -> InitError + '_ {
    move |e| InitError { code: 125, message: format!("container setup: {what}: {e}") }
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

/// Runs in the cloned child; never returns. `joined` gets one byte once the child is in the container's
/// cgroups. `sync` is the read end of the go-ahead pipe: `g`, then the initial tty rows and columns as
/// big-endian u16s; EOF means the start was abandoned.
pub fn run(bundle: &Bundle, io: ChildIo, sync: OwnedFd, joined: OwnedFd, join: bool) -> ! {
    reset_signals();
    let result = setup_and_exec(bundle, &io, &sync, joined, join);
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
    // SAFETY: _exit is always safe; it skips the monitor's atexit handlers and buffers, which belong to
    // the parent.
    unsafe { nix::libc::_exit(code) }
}

enum Never {}

/// Moves the calling (single-threaded) process into the container's cgroups.
fn join_cgroups(bundle: &Bundle) -> Result<(), InitError> {
    for file in &bundle.cgroup_join {
        std::fs::write(file, "0")
            .map_err(|e| InitError { code: 125, message: format!("cannot join the container's cgroup: {e}") })?;
    }
    Ok(())
}

fn setup_and_exec(
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
    let _ = rustix::io::write(&joined, b"j");
    drop(joined);
    let mut go = [0u8; 5];
    match rustix::io::read(sync, &mut go) {
        Ok(5) if go[0] == b'g' => {}
        // The start was abandoned: leave quietly.
        _ => unsafe { nix::libc::_exit(0) },
    }
    let tty_size = (u16::from_be_bytes([go[1], go[2]]), u16::from_be_bytes([go[3], go[4]]));
    // The cgroup namespace is made now, so its root is the container's cgroup, not the monitor's.
    unshare(CloneFlags::CLONE_NEWCGROUP).map_err(setup_err("unshare cgroup namespace"))?;

    // 2. stdio, for pipes (a terminal comes once the container's /dev/pts exists).
    let devnull =
        rfs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(io_err("open /dev/null"))?;
    if let ChildStdio::Pipes { stdin, stdout, stderr } = &io.stdio {
        let stdin = stdin.as_ref().map_or(devnull.as_fd(), |f| f.as_fd());
        dup_stdio([stdin, stdout.as_fd(), stderr.as_fd()])?;
    }

    // 3. Nothing we mount propagates back to the host.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(setup_err("make / private"))?;
    if !bundle.host_network {
        bring_up_loopback()?;
    }

    // 4. The overlay root filesystem. Lower dirs are relative to the snapshots dir to keep options short.
    let rootfs = &bundle.rootfs;
    nix::unistd::chdir(&rootfs.snapshots_dir).map_err(setup_err("enter the snapshots dir"))?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        rootfs.lower.join(":"),
        rootfs.upper.display(),
        rootfs.work.display()
    );
    mount(Some("overlay"), &rootfs.merged, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
        .map_err(setup_err("mount the overlay root filesystem"))?;
    let root = rfs::open(&rootfs.merged, DIR_PATH | OFlags::CLOEXEC, Mode::empty()).map_err(io_err("open rootfs"))?;

    // 5. Kernel filesystems and devices, every target resolved inside the root.
    let nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mount_in(&root, "proc", "proc", "proc", nodev_noexec, None)?;
    mount_in(
        &root,
        "dev",
        "tmpfs",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    mount_in(
        &root,
        "dev/pts",
        "devpts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    mount_in(&root, "dev/shm", "shm", "tmpfs", nodev_noexec, Some("mode=1777,size=65536k"))?;
    mount_in(&root, "dev/mqueue", "mqueue", "mqueue", nodev_noexec, None)?;
    mount_in(&root, "sys", "sysfs", "sysfs", nodev_noexec | MsFlags::MS_RDONLY, None)?;
    mount_cgroups(&root, bundle.cgroup_v2)?;
    make_devices(&root)?;
    if let ChildStdio::Console(socket) = &io.stdio {
        let slave = open_console(&root, socket.as_fd(), tty_size)?;
        make_controlling_terminal(&slave)?;
        dup_stdio([slave.as_fd(), slave.as_fd(), slave.as_fd()])?;
    }
    for (source, target) in &bundle.etc_files {
        bind_file_in(&root, source, target)?;
    }
    for m in &bundle.mounts {
        user_mount(&root, m)?;
    }

    // 6. Switch root: pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only
    // the container's.
    nix::unistd::chdir(&rootfs.merged).map_err(setup_err("enter the rootfs"))?;
    nix::unistd::pivot_root(".", ".").map_err(setup_err("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(setup_err("detach the old root"))?;
    nix::unistd::chdir("/").map_err(setup_err("chdir /"))?;
    drop(root);

    // 7. Masked and read-only paths.
    for path in MASKED_PATHS {
        mask(path);
    }
    for path in READ_ONLY_PATHS {
        let _ =
            mount(Some(*path), *path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).and_then(|_| {
                mount(
                    None::<&str>,
                    *path,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
                    None::<&str>,
                )
            });
    }

    // 8. Identity, environment, exec.
    nix::unistd::sethostname(&bundle.hostname).map_err(setup_err("sethostname"))?;
    let process = &bundle.process;
    become_and_exec(bundle, &process.user, &process.cwd, &[], &process.args, true)
}

/// Runs in a child the monitor forked (already in the container's PID namespace) to exec a process in a
/// running container: join its cgroup and its other namespaces through the init's pidfd, set up stdio, then
/// become the user and exec, as the init does. Never returns.
/// `join`: the process was not cloned into the container's cgroup and joins it itself.
pub fn exec_in_container(bundle: &Bundle, spec: &ExecSpec, init_pidfd: BorrowedFd<'_>, io: ChildIo, join: bool) -> ! {
    reset_signals();
    let result = enter_and_exec(bundle, spec, init_pidfd, &io, join);
    report_and_exit(&io, result)
}

fn enter_and_exec(
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
    // SAFETY: setns with the init's pidfd enters all these namespaces at once; the mount namespace
    // switch also moves our root and cwd to the container's root.
    if unsafe { nix::libc::setns(init_pidfd.as_raw_fd(), flags) } < 0 {
        return Err(setup_err("enter the container's namespaces")(nix::Error::last()));
    }
    let devnull =
        rfs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(io_err("open /dev/null"))?;
    match &io.stdio {
        ChildStdio::Pipes { stdin, stdout, stderr } => {
            dup_stdio([stdin.as_ref().map_or(devnull.as_fd(), |f| f.as_fd()), stdout.as_fd(), stderr.as_fd()])?
        }
        ChildStdio::Console(socket) => {
            let root = rfs::open("/", DIR_PATH | OFlags::CLOEXEC, Mode::empty()).map_err(io_err("open /"))?;
            let size = if spec.rows > 0 && spec.cols > 0 { (spec.rows, spec.cols) } else { (24, 80) };
            let slave = open_console(&root, socket.as_fd(), size)?;
            make_controlling_terminal(&slave)?;
            dup_stdio([slave.as_fd(), slave.as_fd(), slave.as_fd()])?;
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
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let who = user::resolve(user_spec, &passwd, &group).map_err(|message| InitError { code: 125, message })?;
    let mut env = process_env(bundle, &who.home);
    for e in extra_env {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        env.retain(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) != key);
        env.push(e.clone());
    }
    let cwd = if cwd.is_empty() { "/" } else { cwd };
    if !cwd.starts_with('/') {
        return Err(InitError { code: 125, message: format!("working directory {cwd:?} must be absolute") });
    }
    if create_cwd {
        std::fs::create_dir_all(cwd)
            .map_err(|e| InitError { code: 125, message: format!("cannot create working directory {cwd}: {e}") })?;
    }
    limit_capabilities(bundle.capabilities)?;
    let groups: Vec<nix::unistd::Gid> = who.groups.iter().map(|g| nix::unistd::Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(setup_err("setgroups"))?;
    let (uid, gid) = (nix::unistd::Uid::from_raw(who.uid), nix::unistd::Gid::from_raw(who.gid));
    nix::unistd::setresgid(gid, gid, gid).map_err(setup_err("setgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(setup_err("setuid"))?;
    nix::unistd::chdir(cwd)
        .map_err(|e| InitError { code: 125, message: format!("cannot enter working directory {cwd}: {e}") })?;
    // Nothing of the monitor's leaks past exec.
    // SAFETY: close_range only marks descriptors close-on-exec.
    unsafe { nix::libc::syscall(nix::libc::SYS_close_range, 3u32, u32::MAX, nix::libc::CLOSE_RANGE_CLOEXEC) };
    exec(args, &env)
}

/// Leaves container processes the capabilities `keep` (docker's default set, see bundle): every other one
/// leaves the bounding set (so no exec can regain it), and the effective, permitted and inheritable sets
/// become `keep`; ambient ones are cleared. A non-root user then loses them all at setuid, as with docker.
fn limit_capabilities(keep: u64) -> Result<(), InitError> {
    let last: u32 =
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40);
    for cap in 0..=last.min(63) {
        if keep & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments.
            if unsafe { nix::libc::prctl(nix::libc::PR_CAPBSET_DROP, cap as nix::libc::c_ulong, 0, 0, 0) } < 0 {
                return Err(setup_err("drop a capability from the bounding set")(nix::Error::last()));
            }
        }
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header { version: 0x2008_0522, pid: 0 }; // _LINUX_CAPABILITY_VERSION_3: two 32-bit words
    let (low, high) = (keep as u32, (keep >> 32) as u32);
    let data = [
        Data { effective: low, permitted: low, inheritable: low },
        Data { effective: high, permitted: high, inheritable: high },
    ];
    // SAFETY: capset on ourselves with a v3 header and its two data words; prctl with integer arguments.
    unsafe {
        if nix::libc::syscall(nix::libc::SYS_capset, &header as *const Header, data.as_ptr()) < 0 {
            return Err(setup_err("set the capabilities")(nix::Error::last()));
        }
        nix::libc::prctl(nix::libc::PR_CAP_AMBIENT, nix::libc::PR_CAP_AMBIENT_CLEAR_ALL as nix::libc::c_ulong, 0, 0, 0);
    }
    Ok(())
}

fn make_controlling_terminal(slave: &OwnedFd) -> Result<(), InitError> {
    nix::unistd::setsid().map_err(setup_err("setsid"))?;
    // SAFETY: TIOCSCTTY on a valid pty slave fd.
    if unsafe { nix::libc::ioctl(slave.as_raw_fd(), nix::libc::TIOCSCTTY, 0) } < 0 {
        return Err(setup_err("make the pty the controlling terminal")(nix::Error::last()));
    }
    Ok(())
}

fn dup_stdio(fds: [BorrowedFd<'_>; 3]) -> Result<(), InitError> {
    for (target, fd) in fds.into_iter().enumerate() {
        // SAFETY: dup2 onto the standard descriptors of this single-threaded child.
        if unsafe { nix::libc::dup2(fd.as_raw_fd(), target as i32) } < 0 {
            return Err(setup_err("set up stdio")(nix::Error::last()));
        }
    }
    Ok(())
}

/// Allocates a pty from the container's devpts, applies the initial size (before the command starts), sends
/// the master to the monitor, and returns the slave.
fn open_console(root: &OwnedFd, socket: BorrowedFd<'_>, (rows, cols): (u16, u16)) -> Result<OwnedFd, InitError> {
    let pts = dir_in_root(root, "dev/pts")?;
    let master = rfs::openat(&pts, "ptmx", OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())
        .map_err(io_err("open /dev/pts/ptmx"))?;
    let unlock: nix::libc::c_int = 0;
    // SAFETY: pty ioctls on the master we just opened, with properly typed arguments.
    let slave = unsafe {
        if nix::libc::ioctl(master.as_raw_fd(), nix::libc::TIOCSPTLCK, &unlock) < 0 {
            return Err(setup_err("unlock the pty")(nix::Error::last()));
        }
        if rows > 0 && cols > 0 {
            let size = nix::libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
            nix::libc::ioctl(master.as_raw_fd(), nix::libc::TIOCSWINSZ, &size);
        }
        let fd = nix::libc::ioctl(master.as_raw_fd(), nix::libc::TIOCGPTPEER, nix::libc::O_RDWR | nix::libc::O_NOCTTY);
        if fd < 0 {
            return Err(setup_err("open the pty slave")(nix::Error::last()));
        }
        OwnedFd::from_raw_fd(fd)
    };
    let fds = [master.as_raw_fd()];
    nix::sys::socket::sendmsg::<()>(
        socket.as_raw_fd(),
        &[std::io::IoSlice::new(b"m")],
        &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(setup_err("send the pty to the monitor"))?;
    Ok(slave)
}

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

/// Hides a path: /dev/null over a file, an empty read-only tmpfs over a directory. Missing paths are fine.
fn mask(path: &str) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>);
        }
        Ok(_) => {
            let _ = mount(Some("/dev/null"), path, None::<&str>, MsFlags::MS_BIND, None::<&str>);
        }
        Err(_) => {}
    }
}

/// The environment: image + user env (already merged by the server), with PATH, HOSTNAME, HOME and TERM
/// filled in when missing.
fn process_env(bundle: &Bundle, home: &str) -> Vec<String> {
    let mut env = bundle.process.env.clone();
    let has = |env: &[String], key: &str| env.iter().any(|e| e.split_once('=').is_some_and(|(k, _)| k == key));
    if !has(&env, "PATH") {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    if !has(&env, "HOSTNAME") {
        env.push(format!("HOSTNAME={}", bundle.hostname));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={home}"));
    }
    if bundle.process.tty && !has(&env, "TERM") {
        env.push("TERM=xterm".into());
    }
    env
}

/// Finds the executable like execvp does, with the container's PATH, and execs it.
fn exec(args: &[String], env: &[String]) -> Result<Never, InitError> {
    let Some(name) = args.first() else {
        return Err(InitError { code: 127, message: "no command given and the image has none".into() });
    };
    let path = resolve_executable(name, env)?;
    let cargs: Vec<CString> = args.iter().map(|a| CString::new(a.as_str()).unwrap_or_default()).collect();
    let cenv: Vec<CString> = env.iter().filter_map(|e| CString::new(e.as_str()).ok()).collect();
    let cpath = CString::new(path.as_str()).unwrap_or_default();
    let err = nix::unistd::execve(&cpath, &cargs, &cenv).unwrap_err();
    Err(exec_error(name, err))
}

fn exec_error(name: &str, err: nix::Error) -> InitError {
    match err {
        nix::Error::ENOENT => InitError { code: 127, message: format!("exec {name:?}: no such file or directory") },
        e => InitError { code: 126, message: format!("exec {name:?}: {}", e.desc().to_lowercase()) },
    }
}

/// A name with a slash is used as is; otherwise the first PATH entry holding a regular file of that name.
fn resolve_executable(name: &str, env: &[String]) -> Result<String, InitError> {
    if name.contains('/') {
        return Ok(name.to_string());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut not_executable = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = format!("{dir}/{name}");
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() => {
                use std::os::unix::fs::PermissionsExt;
                if m.permissions().mode() & 0o111 != 0 {
                    return Ok(candidate);
                }
                not_executable.get_or_insert(candidate);
            }
            _ => {}
        }
    }
    match not_executable {
        Some(c) => {
            Err(InitError { code: 126, message: format!("exec {name:?}: {c} is not executable (permission denied)") })
        }
        None => Err(InitError { code: 127, message: format!("exec {name:?}: executable file not found in $PATH") }),
    }
}

/// Opens (creating if missing) directory `path` inside the root; a symlink or file there is refused, as runc
/// refuses to mount on anything but a real directory.
fn dir_in_root(root: &OwnedFd, path: &str) -> Result<OwnedFd, InitError> {
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    let parent_fd = open_or_create_dirs(root.as_fd(), parent.as_bytes()).map_err(io_err(path))?;
    match rfs::mkdirat(&parent_fd, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    rfs::openat(&parent_fd, name, DIR_PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).map_err(|e| InitError {
        code: 125,
        message: format!("container setup: the image's /{path} is not a directory ({e}); cannot mount there"),
    })
}

/// The magic-link path of an fd, to mount onto exactly the inode we resolved.
fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn mount_in(
    root: &OwnedFd,
    path: &str,
    source: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    let target = dir_in_root(root, path)?;
    mount(Some(source), fd_path(target.as_fd()).as_str(), Some(fstype), flags, data)
        .map_err(|e| InitError { code: 125, message: format!("container setup: mount {fstype} on /{path}: {e}") })
}

/// /sys/fs/cgroup: on v2 the cgroup2 filesystem, on v1 a tmpfs with each controller hierarchy the host
/// mounts; all read-only. The cgroup namespace makes the container's cgroup their root.
fn mount_cgroups(root: &OwnedFd, v2: bool) -> Result<(), InitError> {
    let ro = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | MsFlags::MS_RDONLY;
    if v2 {
        return mount_in(root, "sys/fs/cgroup", "cgroup2", "cgroup2", ro, None);
    }
    let base = dir_in_root(root, "sys/fs/cgroup")?;
    let base_path = fd_path(base.as_fd());
    mount(
        Some("tmpfs"),
        base_path.as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
        Some("mode=755"),
    )
    .map_err(setup_err("mount tmpfs on /sys/fs/cgroup"))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for (name, options) in v1_hierarchies(&mountinfo) {
        mount_in(root, &format!("sys/fs/cgroup/{name}"), "cgroup", "cgroup", ro, Some(&options))?;
    }
    let base = dir_in_root(root, "sys/fs/cgroup")?;
    mount(
        None::<&str>,
        fd_path(base.as_fd()).as_str(),
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
        Some("mode=755"),
    )
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

/// Device nodes docker gives every container, and the usual /dev symlinks.
fn make_devices(root: &OwnedFd) -> Result<(), InitError> {
    let dev = dir_in_root(root, "dev")?;
    let dev = rfs::openat(&dev, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(io_err("open /dev"))?;
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        rfs::mknodat(&dev, name, FileType::CharacterDevice, Mode::from_raw_mode(0o666), rfs::makedev(major, minor))
            .map_err(io_err(name))?;
        rfs::chmodat(&dev, name, Mode::from_raw_mode(0o666), rfs::AtFlags::empty()).map_err(io_err(name))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        rfs::symlinkat(target, &dev, name).map_err(io_err(name))?;
    }
    Ok(())
}

/// Bind-mounts a host file (the container's /etc/hosts ...) over `target` inside the root, replacing a
/// symlink or other non-file there with an empty file first.
fn bind_file_in(root: &OwnedFd, source: &Path, target: &str) -> Result<(), InitError> {
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
    mount(Some(source), fd_path(file.as_fd()).as_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| {
        InitError { code: 125, message: format!("container setup: bind {} on {target}: {e}", source.display()) }
    })
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
fn user_mount(root: &OwnedFd, m: &MountSpec) -> Result<(), InitError> {
    let target = m.target.trim_start_matches('/');
    let ro = if m.read_only { MsFlags::MS_RDONLY } else { MsFlags::empty() };
    match m.kind.as_str() {
        "tmpfs" => {
            mount_in(root, target, "tmpfs", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | ro, Some("mode=1777"))
        }
        _ if m.source.is_dir() => {
            let fd = dir_in_root(root, target)?;
            let path = fd_path(fd.as_fd());
            mount(Some(&m.source), path.as_str(), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                .map_err(|e| InitError {
                    code: 125,
                    message: format!("bind {} on {}: {e}", m.source.display(), m.target),
                })?;
            if m.read_only {
                let fd = dir_in_root(root, target)?;
                mount(
                    None::<&str>,
                    fd_path(fd.as_fd()).as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .map_err(|e| InitError { code: 125, message: format!("make {} read-only: {e}", m.target) })?;
            }
            Ok(())
        }
        _ => bind_file_in(root, &m.source, target),
    }
}

/// Brings up `lo` in the container's fresh network namespace.
fn bring_up_loopback() -> Result<(), InitError> {
    // SAFETY: plain socket + SIOCGIFFLAGS/SIOCSIFFLAGS ioctls on a zeroed ifreq naming "lo".
    unsafe {
        let sock = nix::libc::socket(nix::libc::AF_INET, nix::libc::SOCK_DGRAM | nix::libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(setup_err("socket for lo")(nix::Error::last()));
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
            return Err(setup_err("bring up lo")(err));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_hierarchies_come_from_cgroup_mounts_only() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            v1_hierarchies(mountinfo),
            vec![
                ("cpu".into(), "cpu".into()),
                ("memory".into(), "memory".into()),
                ("cpu,cpuacct".into(), "cpu,cpuacct".into()),
                ("systemd".into(), "name=systemd".into()),
            ]
        );
    }

    #[test]
    fn env_gets_path_home_hostname_and_term_only_when_missing() {
        let bundle = Bundle {
            id: "x".into(),
            rootfs: super::super::bundle::Rootfs {
                snapshots_dir: "/".into(),
                lower: vec![],
                upper: "/".into(),
                work: "/".into(),
                merged: "/".into(),
            },
            process: super::super::bundle::Process {
                args: vec![],
                env: vec!["PATH=/bin".into(), "A=1".into()],
                cwd: String::new(),
                user: String::new(),
                tty: true,
                stdin: false,
            },
            hostname: "abc".into(),
            host_network: false,
            cgroup_join: vec![],
            cgroup_clone_into: None,
            capabilities: super::super::bundle::DEFAULT_CAPABILITIES,
            cgroup_v2: false,
            etc_files: vec![],
            mounts: vec![],
            log: Default::default(),
        };
        let env = process_env(&bundle, "/root");
        assert_eq!(env, vec!["PATH=/bin", "A=1", "HOSTNAME=abc", "HOME=/root", "TERM=xterm"]);
    }
}
