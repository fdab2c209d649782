//! cm-monitor: one small single-threaded process per running container. It detaches from cm-server, clones
//! the container's init into new namespaces, waits until the init has joined its cgroups, then serves its socket with a poll(2)
//! loop: output from the container goes to the log and to attached connections, stdin and resize and signal
//! frames go to the container. Exec'd processes are its children too, each owned by the connection that
//! asked for it. When the init exits it drains the output, records the exit status in `exit.json`, tells
//! every connection, and exits.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2};

use super::bundle::{self, Bundle, ExecSpec, ExitInfo, MonitorInfo};
use super::clone;
use super::init::{self, ChildIo, ChildStdio};
use super::logfile::{self, Stream};
use super::protocol::{Decoder, FromMonitor, ToMonitor};
use super::sync::SyncMsg;

/// Stdin bytes queued for the container beyond which the monitor stops reading client frames.
const STDIN_HIGH_WATER: usize = 1 << 20;
/// Exit statuses of finished execs kept for Wait.
const FINISHED_EXECS_KEPT: usize = 1024;
/// How long output is drained after a process exits.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Entry point of `cm-monitor DIR`. Prints "ok" (or the error) on stdout once the container's init exists
/// and the socket listens, then detaches; the process that started it can wait for it right away.
pub fn main(dir: &Path) -> i32 {
    let (status_r, status_w) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            println!("error: pipe: {e}");
            return 1;
        }
    };
    // SAFETY: the monitor is single-threaded here, so fork is safe.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => {
            drop(status_w);
            // One line: the container's init inherits the pipe until it execs, so EOF would come late.
            let mut status = String::new();
            let _ = io::BufRead::read_line(&mut io::BufReader::new(File::from(status_r)), &mut status);
            let status = if status.is_empty() { "error: the monitor died while starting".to_string() } else { status };
            print!("{status}");
            let _ = io::stdout().flush();
            if status.starts_with("ok") { 0 } else { 1 }
        }
        Ok(ForkResult::Child) => {
            drop(status_r);
            let mut status = File::from(status_w);
            match Monitor::start(dir) {
                Ok(mut monitor) => {
                    let _ = writeln!(status, "ok {}", monitor.init_pid());
                    drop(status);
                    monitor.run();
                    0
                }
                Err(e) => {
                    let _ = writeln!(status, "error: {e}");
                    1
                }
            }
        }
        Err(e) => {
            println!("error: fork: {e}");
            1
        }
    }
}

/// The monitor's ends of a process's stdio.
enum Stdio {
    /// The master is None until the process's own pty arrives, and again once its side closed (EOF/EIO).
    Pty {
        master: Option<OwnedFd>,
    },
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    },
}

/// The monitor's ends for a child it is about to create, and the child's.
fn make_stdio(tty: bool, stdin: bool) -> io::Result<(Stdio, ChildStdio, Option<UnixStream>)> {
    if tty {
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_read_timeout(Some(Duration::from_secs(10)))?;
        return Ok((Stdio::Pty { master: None }, ChildStdio::Console(theirs.into()), Some(ours)));
    }
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(err("pipe"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(err("pipe"))?;
    // The child's ends must block.
    set_cloexec_nonblock(out_w.as_fd(), false)?;
    set_cloexec_nonblock(err_w.as_fd(), false)?;
    let (stdin_monitor, stdin_child) = if stdin {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(err("pipe"))?;
        set_cloexec_nonblock(w.as_fd(), true)?;
        (Some(w), Some(r))
    } else {
        (None, None)
    };
    let stdio = Stdio::Pipes { stdin: stdin_monitor, stdout: Some(out_r), stderr: Some(err_r) };
    Ok((stdio, ChildStdio::Pipes { stdin: stdin_child, stdout: out_w, stderr: err_w }, None))
}

/// One process the monitor owns: the container's init or an exec.
struct Proc {
    pid: i32,
    pidfd: OwnedFd,
    stdio: Stdio,
    stdin_queue: VecDeque<u8>,
    close_stdin_after_queue: bool,
    /// Where the child sends the pty master it allocates (tty processes, until it arrives).
    console: Option<UnixStream>,
    /// Why the child could not exec (the pipe closes empty when exec succeeds).
    errors: Option<OwnedFd>,
    error_text: Vec<u8>,
    exit: Option<ExitInfo>,
}

impl Proc {
    fn new(pid: i32, stdio: Stdio, console: Option<UnixStream>, errors: OwnedFd) -> io::Result<Proc> {
        // SAFETY: pidfd_open on our own child.
        let pidfd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
        if pidfd < 0 {
            let e = io::Error::last_os_error();
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            return Err(io::Error::other(format!("pidfd_open: {e}")));
        }
        set_cloexec_nonblock(errors.as_fd(), true)?;
        Ok(Proc {
            pid,
            // SAFETY: a new fd owned by nothing else.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) },
            stdio,
            stdin_queue: VecDeque::new(),
            close_stdin_after_queue: false,
            console,
            errors: Some(errors),
            error_text: Vec::new(),
            exit: None,
        })
    }

    fn fds(&self) -> (Option<BorrowedFd<'_>>, Option<BorrowedFd<'_>>, Option<BorrowedFd<'_>>) {
        match &self.stdio {
            Stdio::Pty { master } => (master.as_ref().map(|m| m.as_fd()), None, master.as_ref().map(|m| m.as_fd())),
            Stdio::Pipes { stdin, stdout, stderr } => (
                stdout.as_ref().map(|f| f.as_fd()),
                stderr.as_ref().map(|f| f.as_fd()),
                stdin.as_ref().map(|f| f.as_fd()),
            ),
        }
    }

    /// The poll entries this process needs.
    fn watch<'a>(&'a self, who: Who, watched: &mut Vec<(Slot, BorrowedFd<'a>, PollFlags)>) {
        let read = PollFlags::POLLIN;
        let (out, err, input) = self.fds();
        if self.exit.is_none() {
            watched.push((Slot::Exit(who), self.pidfd.as_fd(), read));
        }
        if let Some(fd) = out {
            watched.push((Slot::Stdout(who), fd, read));
        }
        if let Some(fd) = err {
            watched.push((Slot::Stderr(who), fd, read));
        }
        if let (Some(fd), false) = (input, self.stdin_queue.is_empty()) {
            watched.push((Slot::Stdin(who), fd, PollFlags::POLLOUT));
        }
        if let Some(fd) = self.errors.as_ref() {
            watched.push((Slot::Errors(who), fd.as_fd(), read));
        }
    }

    /// Reads what the process wrote: Some(data), or None when nothing came (closing the stream at EOF).
    fn read_output(&mut self, stream: Stream) -> Option<Vec<u8>> {
        let fd = match (&self.stdio, stream) {
            (Stdio::Pty { master: Some(master) }, _) => master.as_raw_fd(),
            (Stdio::Pipes { stdout: Some(f), .. }, Stream::Stdout) => f.as_raw_fd(),
            (Stdio::Pipes { stderr: Some(f), .. }, Stream::Stderr) => f.as_raw_fd(),
            _ => return None,
        };
        let mut buf = vec![0u8; 64 << 10];
        // SAFETY: reading into our own buffer from a valid fd.
        let n = unsafe { nix::libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            buf.truncate(n as usize);
            return Some(buf);
        }
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
            return None;
        }
        // EOF (or EIO on a pty whose other side is gone): this stream is done.
        match &mut self.stdio {
            Stdio::Pty { master } => *master = None,
            Stdio::Pipes { stdout, stderr, .. } => match stream {
                Stream::Stdout => *stdout = None,
                Stream::Stderr => *stderr = None,
            },
        }
        None
    }

    fn output_open(&self) -> bool {
        match &self.stdio {
            Stdio::Pty { master } => master.is_some(),
            Stdio::Pipes { stdout, stderr, .. } => stdout.is_some() || stderr.is_some(),
        }
    }

    fn queue_stdin(&mut self, data: Vec<u8>) {
        self.stdin_queue.extend(data);
        self.feed_stdin();
    }

    /// Writes queued stdin to the process as far as it takes it.
    fn feed_stdin(&mut self) {
        let (_, _, Some(fd)) = self.fds() else {
            self.stdin_queue.clear();
            return;
        };
        let fd = fd.as_raw_fd();
        while !self.stdin_queue.is_empty() {
            let (front, _) = self.stdin_queue.as_slices();
            // SAFETY: writing from our own buffer to a valid fd.
            let n = unsafe { nix::libc::write(fd, front.as_ptr().cast(), front.len()) };
            if n <= 0 {
                if io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                    // The process closed its stdin: drop what it will never read.
                    self.stdin_queue.clear();
                }
                break;
            }
            self.stdin_queue.drain(..n as usize);
        }
        if self.stdin_queue.is_empty() && self.close_stdin_after_queue {
            self.close_stdin();
        }
    }

    fn request_close_stdin(&mut self) {
        self.close_stdin_after_queue = true;
        if self.stdin_queue.is_empty() {
            self.close_stdin();
        }
    }

    fn close_stdin(&mut self) {
        if let Stdio::Pipes { stdin, .. } = &mut self.stdio {
            *stdin = None;
        }
    }

    fn read_errors(&mut self) {
        let Some(fd) = self.errors.as_ref() else { return };
        let mut buf = [0u8; 4096];
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => self.errors = None,
            Ok(n) => self.error_text.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::AGAIN) => {}
            Err(_) => self.errors = None,
        }
    }

    /// Takes the pty master the child allocated inside the container. If the child fails before sending
    /// it, the socket closes and the process runs without output (its error is reported on exit).
    fn receive_console(&mut self) {
        let Some(console) = self.console.take() else { return };
        let mut byte = [0u8; 1];
        let mut iov = [io::IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!(RawFd);
        let flags = nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC;
        let Ok(msg) = nix::sys::socket::recvmsg::<()>(console.as_raw_fd(), &mut iov, Some(&mut space), flags) else {
            return;
        };
        let Ok(cmsgs) = msg.cmsgs() else { return };
        for cmsg in cmsgs {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = cmsg {
                for fd in fds {
                    // SAFETY: the kernel just gave us this descriptor.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    if let (Stdio::Pty { master }, Ok(())) = (&mut self.stdio, set_cloexec_nonblock(fd.as_fd(), true)) {
                        *master = Some(fd);
                    }
                }
            }
        }
    }

    fn resize(&self, rows: u16, cols: u16) {
        if let (Stdio::Pty { master: Some(master) }, true) = (&self.stdio, rows > 0 && cols > 0) {
            let size = nix::libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
            // SAFETY: TIOCSWINSZ with a valid winsize on the pty master.
            unsafe { nix::libc::ioctl(master.as_raw_fd(), nix::libc::TIOCSWINSZ, &size) };
        }
    }

    fn signal(&self, sig: i32) {
        if self.exit.is_none() {
            // SAFETY: pidfd_send_signal on our own child's pidfd: never hits a recycled pid.
            unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), sig, 0usize, 0u32) };
        }
    }

    /// Waits (bounded) until the child has exec'd (its error pipe closes empty) or failed (it wrote why);
    /// true when it failed.
    fn wait_for_exec(&mut self) -> bool {
        let deadline = Instant::now() + DRAIN_LIMIT;
        while self.errors.is_some() && self.error_text.is_empty() && Instant::now() < deadline {
            if let Some(fd) = self.errors.as_ref() {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(100u8));
            }
            self.read_errors();
        }
        !self.error_text.is_empty()
    }

    fn reap_blocking(&mut self) {
        while self.exit.is_none() {
            let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(100u8));
            self.reap();
        }
    }

    /// Collects the exit status once the pidfd says the process ended.
    fn reap(&mut self) {
        let status = match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => (code, 0),
            Ok(WaitStatus::Signaled(_, sig, _)) => (128 + sig as i32, sig as i32),
            Ok(_) => return,
            Err(e) => {
                eprintln!("cm-monitor: waitpid {}: {e}", self.pid);
                (255, 0)
            }
        };
        self.exit =
            Some(ExitInfo { code: status.0, signal: status.1, error: String::new(), finished_unix_nanos: now_nanos() });
    }

    /// After the exit: the rest of the output (bounded in time) and the exec error, if any.
    fn drain(&mut self, mut sink: impl FnMut(Stream, Vec<u8>)) -> ExitInfo {
        let deadline = Instant::now() + DRAIN_LIMIT;
        while self.output_open() && Instant::now() < deadline {
            let (out, err, _) = self.fds();
            let mut fds: Vec<PollFd> =
                out.into_iter().chain(err).map(|fd| PollFd::new(fd, PollFlags::POLLIN)).collect();
            let _ = poll(&mut fds, PollTimeout::from(100u8));
            drop(fds);
            for stream in [Stream::Stdout, Stream::Stderr] {
                if let Some(data) = self.read_output(stream) {
                    sink(stream, data);
                }
            }
        }
        while self.errors.is_some() {
            self.read_errors();
            if self.errors.is_some() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let mut exit = self.exit.clone().unwrap_or_default();
        exit.error = String::from_utf8_lossy(&self.error_text).trim().to_string();
        exit
    }
}

struct Client {
    /// Stable id: clients come and go while a poll round is handled.
    id: u64,
    stream: UnixStream,
    decoder: Decoder,
    attached: bool,
    /// The peer shut down its sending side: it still gets frames, it sends none.
    input_closed: bool,
    /// The exec this connection started and owns.
    exec: Option<u64>,
}

/// A process started by Exec.
struct Exec {
    key: u64,
    id: String,
    proc: Proc,
    /// The connection that owns it (gets its output and exit).
    owner: u64,
    /// Connections waiting for its exit (WaitExec).
    waiters: Vec<u64>,
}

/// Which process a poll slot belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Init,
    Exec(u64),
}

struct Monitor {
    dir: std::path::PathBuf,
    bundle: Bundle,
    init: Proc,
    sync: Option<OwnedFd>,
    /// cgroup v2: the container's cgroup directory, which exec'd processes are cloned into.
    cgroup_dir: Option<OwnedFd>,
    started: bool,
    execs: Vec<Exec>,
    next_exec: u64,
    /// Exit statuses of execs that ended, by exec id (bounded).
    finished_execs: HashMap<String, ExitInfo>,
    /// Forks land in the container's PID namespace once the first exec joined it.
    in_container_pidns: bool,
    listener: UnixListener,
    clients: Vec<Client>,
    next_client: u64,
    /// The output log, written unbuffered: each record is one write, so Logs sees it at once and a killed
    /// monitor loses nothing. Rotated by size as the bundle says.
    log: logfile::Writer,
}

fn err(what: &str) -> impl Fn(nix::Error) -> io::Error + '_ {
    move |e| io::Error::other(format!("{what}: {e}"))
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

impl Monitor {
    fn start(dir: &Path) -> io::Result<Monitor> {
        nix::unistd::setsid().map_err(err("setsid"))?;
        std::env::set_current_dir(dir)?;
        // Our own diagnostics go to monitor.log; stdin and stdout to /dev/null.
        let log = std::fs::OpenOptions::new().create(true).append(true).open(bundle::MONITOR_LOG_FILE)?;
        let null = File::options().read(true).write(true).open("/dev/null")?;
        // SAFETY: dup2 onto our own standard descriptors; SIGPIPE ignored so a gone peer is an EPIPE error.
        unsafe {
            nix::libc::dup2(null.as_raw_fd(), 0);
            nix::libc::dup2(null.as_raw_fd(), 1);
            nix::libc::dup2(log.as_raw_fd(), 2);
            nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_IGN);
        }
        let bundle = Bundle::load(Path::new("."))?;
        let (stdio, child_stdio, console) = make_stdio(bundle.process.tty, bundle.process.stdin)?;
        let (sync_r, sync_w) = pipe2(OFlag::O_CLOEXEC).map_err(err("pipe"))?;
        let (errors_r, errors_w) = pipe2(OFlag::O_CLOEXEC).map_err(err("pipe"))?;
        let (joined_r, joined_w) = pipe2(OFlag::O_CLOEXEC).map_err(err("pipe"))?;

        let mut flags =
            nix::libc::CLONE_NEWNS | nix::libc::CLONE_NEWUTS | nix::libc::CLONE_NEWIPC | nix::libc::CLONE_NEWPID;
        if !bundle.host_network {
            flags |= nix::libc::CLONE_NEWNET;
        }
        // cgroup v2: children are cloned straight into the container's cgroup.
        let cgroup_dir = match &bundle.cgroup_clone_into {
            Some(dir) => Some(OwnedFd::from(
                File::open(dir).map_err(|e| io::Error::other(format!("opening cgroup {}: {e}", dir.display())))?,
            )),
            None => None,
        };
        // SAFETY: this process is single-threaded; the child runs the init, which execs or exits.
        let cloned = unsafe { clone::clone(flags, cgroup_dir.as_ref().map(|fd| fd.as_fd())) }
            .map_err(|e| io::Error::other(format!("clone: {e}")))?;
        let pid = cloned.pid;
        if pid == 0 {
            // The child dies with its monitor.
            // SAFETY: prctl in the child.
            unsafe { nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) };
            let io = ChildIo { stdio: child_stdio, errors: errors_w };
            init::run(&bundle, io, sync_r, joined_w, !cloned.in_cgroup);
        }
        drop((child_stdio, sync_r, errors_w, joined_w));
        let mut init = Proc::new(pid as i32, stdio, console, errors_r)?;
        // The init joins its cgroups itself (see Cgroup::join_files); we report ready only once it is in them,
        // so everything the server does from here on (and its cleanup on failure) finds it there.
        if SyncMsg::receive(&joined_r) != Ok(Some(SyncMsg::Joined)) {
            init.wait_for_exec();
            init.signal(nix::libc::SIGKILL);
            init.reap_blocking();
            let why = String::from_utf8_lossy(&init.error_text).into_owned();
            return Err(io::Error::other(if why.is_empty() {
                "the container's init died at once".into()
            } else {
                why
            }));
        }
        let _ = std::fs::remove_file(bundle::SOCKET_FILE);
        let listener = UnixListener::bind(bundle::SOCKET_FILE)?;
        listener.set_nonblocking(true)?;
        std::fs::set_permissions(bundle::SOCKET_FILE, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let info = MonitorInfo { monitor_pid: std::process::id() as i32, init_pid: init.pid };
        // Rewritten at every start; only a running server reads it.
        let info = serde_json::to_vec(&info).map_err(io::Error::other)?;
        crate::store::write_replace(Path::new(bundle::MONITOR_FILE), &info)?;
        let log = logfile::Writer::open(Path::new("."), bundle.log)?;
        Ok(Monitor {
            dir: dir.to_path_buf(),
            bundle,
            init,
            sync: Some(sync_w),
            cgroup_dir,
            started: false,
            execs: Vec::new(),
            next_exec: 0,
            finished_execs: HashMap::new(),
            in_container_pidns: false,
            listener,
            clients: Vec::new(),
            next_client: 0,
            log,
        })
    }

    fn init_pid(&self) -> i32 {
        self.init.pid
    }

    fn run(&mut self) {
        while self.init.exit.is_none() {
            if let Err(e) = self.step() {
                eprintln!("cm-monitor {}: {e}", self.dir.display());
            }
        }
        self.finish();
    }

    fn proc_mut(&mut self, who: Who) -> Option<&mut Proc> {
        match who {
            Who::Init => Some(&mut self.init),
            Who::Exec(key) => self.execs.iter_mut().find(|e| e.key == key).map(|e| &mut e.proc),
        }
    }

    /// One poll round.
    fn step(&mut self) -> io::Result<()> {
        let read = PollFlags::POLLIN;
        let mut watched: Vec<(Slot, BorrowedFd<'_>, PollFlags)> = vec![(Slot::Listener, self.listener.as_fd(), read)];
        self.init.watch(Who::Init, &mut watched);
        for e in &self.execs {
            e.proc.watch(Who::Exec(e.key), &mut watched);
        }
        let stdin_backlog =
            self.init.stdin_queue.len() + self.execs.iter().map(|e| e.proc.stdin_queue.len()).sum::<usize>();
        if stdin_backlog < STDIN_HIGH_WATER {
            for c in self.clients.iter().filter(|c| !c.input_closed) {
                watched.push((Slot::Client(c.id), c.stream.as_fd(), read));
            }
        }
        let slots: Vec<Slot> = watched.iter().map(|w| w.0).collect();
        let mut pollfds: Vec<PollFd> = watched.iter().map(|(_, fd, flags)| PollFd::new(*fd, *flags)).collect();
        match poll(&mut pollfds, PollTimeout::NONE) {
            Err(nix::Error::EINTR) => return Ok(()),
            Err(e) => return Err(io::Error::other(format!("poll: {e}"))),
            Ok(_) => {}
        }
        let ready: Vec<Slot> = slots
            .iter()
            .zip(&pollfds)
            .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(slot, _)| *slot)
            .collect();
        drop(pollfds);
        let mut gone = Vec::new();
        for slot in ready {
            match slot {
                Slot::Stdout(who) => self.pump(who, Stream::Stdout)?,
                Slot::Stderr(who) => self.pump(who, Stream::Stderr)?,
                Slot::Stdin(who) => {
                    if let Some(p) = self.proc_mut(who) {
                        p.feed_stdin();
                    }
                }
                Slot::Errors(who) => {
                    if let Some(p) = self.proc_mut(who) {
                        p.read_errors();
                    }
                }
                Slot::Listener => self.accept(),
                Slot::Client(id) => {
                    if !self.serve_client(id) {
                        gone.push(id);
                    }
                }
                Slot::Exit(Who::Init) => self.init.reap(),
                Slot::Exit(Who::Exec(key)) => self.exec_exited(key),
            }
        }
        self.clients.retain(|c| !gone.contains(&c.id));
        Ok(())
    }

    /// Passes output on: the init's to the log and attached connections, an exec's to its owner.
    fn pump(&mut self, who: Who, stream: Stream) -> io::Result<()> {
        let Some(data) = self.proc_mut(who).and_then(|p| p.read_output(stream)) else { return Ok(()) };
        self.deliver(who, stream, data)
    }

    fn deliver(&mut self, who: Who, stream: Stream, data: Vec<u8>) -> io::Result<()> {
        if who == Who::Init {
            self.log.write(now_nanos(), stream, &data)?;
        }
        let frame = match stream {
            Stream::Stdout => FromMonitor::Stdout(data),
            Stream::Stderr => FromMonitor::Stderr(data),
        }
        .encode();
        match who {
            Who::Init => self.broadcast(&frame, true),
            Who::Exec(key) => {
                if let Some(owner) = self.execs.iter().find(|e| e.key == key).map(|e| e.owner) {
                    self.send_to(&[owner], &frame);
                }
            }
        }
        Ok(())
    }

    /// Sends a frame to every connection (only attached ones, for output). Connections block, with a send
    /// timeout: a connection that cannot take a frame in time is dropped.
    fn broadcast(&mut self, frame: &[u8], output: bool) {
        self.clients.retain_mut(|c| {
            (output && !c.attached)
                || c.stream.write_all(frame).map_err(|e| eprintln!("cm-monitor: dropping a connection: {e}")).is_ok()
        });
    }

    fn send_to(&mut self, ids: &[u64], frame: &[u8]) {
        self.clients.retain_mut(|c| {
            !ids.contains(&c.id)
                || c.stream.write_all(frame).map_err(|e| eprintln!("cm-monitor: dropping a connection: {e}")).is_ok()
        });
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
            self.next_client += 1;
            self.clients.push(Client {
                id: self.next_client,
                stream,
                decoder: Decoder::default(),
                attached: false,
                input_closed: false,
                exec: None,
            });
        }
    }

    /// Reads and handles a connection's frames (it is readable, so the read does not block); false when it
    /// is gone or broke the protocol.
    fn serve_client(&mut self, id: u64) -> bool {
        let Some(i) = self.clients.iter().position(|c| c.id == id) else { return true };
        let mut buf = [0u8; 64 << 10];
        let n = match io::Read::read(&mut self.clients[i].stream, &mut buf) {
            Ok(0) => {
                // A half-close (the server's side of a stream ended): keep sending it frames.
                self.clients[i].input_closed = true;
                return true;
            }
            Ok(n) => n,
            Err(e) => {
                eprintln!("cm-monitor: dropping a connection: {e}");
                return false;
            }
        };
        self.clients[i].decoder.push(&buf[..n]);
        loop {
            let Some(i) = self.clients.iter().position(|c| c.id == id) else { return true };
            match self.clients[i].decoder.next_to_monitor() {
                Ok(Some(frame)) => self.handle(id, frame),
                Ok(None) => return true,
                Err(e) => {
                    eprintln!("cm-monitor: dropping a connection: {e}");
                    return false;
                }
            }
        }
    }

    /// The process a connection's stdin, resize and signal frames go to: its exec, or the init.
    fn target(&self, client: u64) -> Who {
        self.clients.iter().find(|c| c.id == client).and_then(|c| c.exec).map_or(Who::Init, Who::Exec)
    }

    fn handle(&mut self, client: u64, frame: ToMonitor) {
        let who = self.target(client);
        match frame {
            ToMonitor::Attach => {
                if let Some(c) = self.clients.iter_mut().find(|c| c.id == client) {
                    c.attached = true;
                }
            }
            ToMonitor::Start { rows, cols } => {
                if self.started {
                    return;
                }
                if let Some(sync) = self.sync.take() {
                    let _ = SyncMsg::Go { rows, cols }.send(&sync);
                }
                self.init.receive_console();
                // Started means the container's command runs: until the init has exec'd, its mount namespace
                // is half built (no pivot_root yet), and an exec joining it would see the host's files.
                self.init.wait_for_exec();
                self.started = true;
                self.broadcast(&FromMonitor::Started { pid: self.init_pid() }.encode(), false);
            }
            ToMonitor::Stdin(data) => {
                if let Some(p) = self.proc_mut(who) {
                    p.queue_stdin(data);
                }
            }
            ToMonitor::CloseStdin => {
                if let Some(p) = self.proc_mut(who) {
                    p.request_close_stdin();
                }
            }
            ToMonitor::Resize { rows, cols } => {
                if let Some(p) = self.proc_mut(who) {
                    p.resize(rows, cols);
                }
            }
            ToMonitor::Signal(sig) => {
                if let Some(p) = self.proc_mut(who) {
                    p.signal(sig);
                }
            }
            ToMonitor::Exec(spec) => self.exec(client, spec),
            // Answered with Started { pid } (the exec exists and was signalled) or NoSuchExec.
            ToMonitor::SignalExec { exec_id, signal } => {
                let reply = match self.execs.iter().find(|e| e.id == exec_id) {
                    Some(e) => {
                        e.proc.signal(signal);
                        FromMonitor::Started { pid: e.proc.pid }
                    }
                    None => FromMonitor::NoSuchExec(exec_id),
                };
                self.send_to(&[client], &reply.encode());
            }
            ToMonitor::WaitExec(exec_id) => {
                if let Some(e) = self.execs.iter_mut().find(|e| e.id == exec_id) {
                    e.waiters.push(client);
                } else if let Some(exit) = self.finished_execs.get(&exec_id).cloned() {
                    self.send_to(&[client], &FromMonitor::Exit(exit).encode());
                } else {
                    self.send_to(&[client], &FromMonitor::NoSuchExec(exec_id).encode());
                }
            }
        }
    }

    /// Starts an exec owned by `client`; it gets Started once the process has exec'd, then the output, then
    /// Exit. A process that cannot start gets only the Exit, with the reason.
    fn exec(&mut self, client: u64, spec: ExecSpec) {
        let result = self.spawn_exec(&spec).map(|mut proc| {
            let failed = proc.wait_for_exec();
            (proc, failed)
        });
        let frame = match result {
            Ok((mut proc, true)) => {
                proc.reap_blocking();
                let mut exit = proc.drain(|_, _| {});
                if exit.code == 0 {
                    exit.code = 125;
                }
                FromMonitor::Exit(exit)
            }
            Ok((proc, false)) => {
                self.next_exec += 1;
                let key = self.next_exec;
                let pid = proc.pid;
                if let Some(c) = self.clients.iter_mut().find(|c| c.id == client) {
                    c.exec = Some(key);
                }
                self.execs.push(Exec { key, id: spec.exec_id.clone(), proc, owner: client, waiters: Vec::new() });
                FromMonitor::Started { pid }
            }
            Err(e) => FromMonitor::Exit(ExitInfo {
                code: 125,
                error: format!("cannot start the process: {e}"),
                finished_unix_nanos: now_nanos(),
                ..Default::default()
            }),
        };
        self.send_to(&[client], &frame.encode());
    }

    fn spawn_exec(&mut self, spec: &ExecSpec) -> io::Result<Proc> {
        if self.init.exit.is_some() || !self.started {
            return Err(io::Error::other("the container is not running"));
        }
        if !self.in_container_pidns {
            // From now on our children are born in the container's PID namespace, so an exec is both in
            // it and our own child to wait for. The monitor forks nothing else after its init.
            // SAFETY: setns on the init's pidfd, PID namespace only.
            if unsafe { nix::libc::setns(self.init.pidfd.as_raw_fd(), nix::libc::CLONE_NEWPID) } < 0 {
                return Err(io::Error::other(format!("join the PID namespace: {}", io::Error::last_os_error())));
            }
            self.in_container_pidns = true;
        }
        let (stdio, child_stdio, console) = make_stdio(spec.process.tty, spec.process.stdin)?;
        let (errors_r, errors_w) = pipe2(OFlag::O_CLOEXEC).map_err(err("pipe"))?;
        // SAFETY: the monitor is single-threaded; the child execs or exits.
        let cloned = unsafe { clone::clone(0, self.cgroup_dir.as_ref().map(|fd| fd.as_fd())) }
            .map_err(|e| io::Error::other(format!("fork: {e}")))?;
        if cloned.pid == 0 {
            // SAFETY: prctl in the child.
            unsafe { nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) };
            let io = ChildIo { stdio: child_stdio, errors: errors_w };
            init::exec_in_container(&self.bundle, spec, self.init.pidfd.as_fd(), io, !cloned.in_cgroup);
        }
        drop((child_stdio, errors_w));
        let mut proc = Proc::new(cloned.pid, stdio, console, errors_r)?;
        proc.receive_console();
        Ok(proc)
    }

    /// An exec ended: the rest of its output and its exit go to its owner and waiters.
    fn exec_exited(&mut self, key: u64) {
        let Some(index) = self.execs.iter().position(|e| e.key == key) else { return };
        self.execs[index].proc.reap();
        if self.execs[index].proc.exit.is_none() {
            return;
        }
        let mut exec = self.execs.remove(index);
        let mut output = Vec::new();
        let exit = exec.proc.drain(|stream, data| output.push((stream, data)));
        // Delivered through a temporary entry so the owner still resolves.
        let owner = exec.owner;
        for (stream, data) in output {
            let frame = match stream {
                Stream::Stdout => FromMonitor::Stdout(data),
                Stream::Stderr => FromMonitor::Stderr(data),
            };
            self.send_to(&[owner], &frame.encode());
        }
        exec.waiters.push(owner);
        self.send_to(&exec.waiters, &FromMonitor::Exit(exit.clone()).encode());
        if self.finished_execs.len() >= FINISHED_EXECS_KEPT {
            self.finished_execs.clear();
        }
        self.finished_execs.insert(exec.id, exit);
        // The owner's connection keeps pointing at the finished exec: its late frames (a close or a kill
        // when the client goes away) must not reach the container's main process.
    }

    /// After the init's exit: drain output, record the status, tell every connection, go.
    fn finish(&mut self) {
        let mut output = Vec::new();
        let exit = self.init.drain(|stream, data| output.push((stream, data)));
        for (stream, data) in output {
            let _ = self.deliver(Who::Init, stream, data);
        }
        if let Err(e) = crate::store::write_json(Path::new(bundle::EXIT_FILE), &exit) {
            eprintln!("cm-monitor: cannot record the exit status: {e}");
        }
        let frame = FromMonitor::Exit(exit).encode();
        // Execs died with the PID namespace; their owners learn it from the connection closing.
        self.broadcast(&frame, false);
        let _ = std::fs::remove_file(bundle::SOCKET_FILE);
    }
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    Listener,
    Client(u64),
    Exit(Who),
    Stdout(Who),
    Stderr(Who),
    Stdin(Who),
    Errors(Who),
}

fn set_cloexec_nonblock(fd: BorrowedFd<'_>, nonblock: bool) -> io::Result<()> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).map_err(err("fcntl"))?;
    let mut flags = OFlag::from_bits_truncate(flags);
    flags.set(OFlag::O_NONBLOCK, nonblock);
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(err("fcntl"))?;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).map_err(err("fcntl"))?;
    Ok(())
}
