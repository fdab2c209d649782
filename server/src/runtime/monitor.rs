//! cm-monitor: one small single-threaded process per running container. It detaches from cm-server, clones
//! the container's init into new namespaces, places it in its cgroup, then serves its socket with a poll(2)
//! loop: output from the container goes to the log and to attached connections, stdin and resize and signal
//! frames go to the container. When the init exits it drains the output, records the exit status in
//! `exit.json`, tells every connection, and exits.

use std::collections::VecDeque;
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

use super::bundle::{self, Bundle, ExitInfo, MonitorInfo};
use super::init::{self, ChildIo, ChildStdio};
use super::logfile::{self, Stream};
use super::protocol::{Decoder, FromMonitor, ToMonitor};

/// Stdin bytes queued for the container beyond which the monitor stops reading client frames.
const STDIN_HIGH_WATER: usize = 1 << 20;
/// How long output is drained after the init exits.
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
                    let _ = writeln!(status, "ok {}", monitor.init_pid);
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

/// The monitor's ends of the container's stdio.
enum Stdio {
    /// The master is None once the container side has closed (EOF or EIO).
    Pty {
        master: Option<OwnedFd>,
    },
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    },
}

struct Client {
    /// Stable id: clients come and go while a poll round is handled.
    id: u64,
    stream: UnixStream,
    decoder: Decoder,
    attached: bool,
    /// The peer shut down its sending side: it still gets frames, it sends none.
    input_closed: bool,
}

struct Monitor {
    dir: std::path::PathBuf,
    init_pid: i32,
    pidfd: OwnedFd,
    stdio: Stdio,
    stdin_queue: VecDeque<u8>,
    close_stdin_after_queue: bool,
    sync: Option<OwnedFd>,
    /// Where the init sends the pty master it allocates (tty containers, until it arrives).
    console: Option<UnixStream>,
    errors: Option<OwnedFd>,
    error_text: Vec<u8>,
    listener: UnixListener,
    clients: Vec<Client>,
    next_client: u64,
    log: io::BufWriter<File>,
    started: bool,
    exit: Option<ExitInfo>,
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
        // SAFETY: dup2 onto our own standard descriptors.
        unsafe {
            nix::libc::dup2(null.as_raw_fd(), 0);
            nix::libc::dup2(null.as_raw_fd(), 1);
            nix::libc::dup2(log.as_raw_fd(), 2);
            nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_IGN);
        }
        let bundle = Bundle::load(Path::new("."))?;

        let (stdio, child_stdio, console) = if bundle.process.tty {
            let (ours, theirs) = UnixStream::pair()?;
            ours.set_read_timeout(Some(Duration::from_secs(10)))?;
            (Stdio::Pty { master: None }, ChildStdio::Console(theirs.into()), Some(ours))
        } else {
            let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(err("pipe"))?;
            let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(err("pipe"))?;
            // The child's ends must block.
            set_cloexec_nonblock(out_w.as_fd(), false)?;
            set_cloexec_nonblock(err_w.as_fd(), false)?;
            let (stdin_monitor, stdin_child) = if bundle.process.stdin {
                let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(err("pipe"))?;
                set_cloexec_nonblock(w.as_fd(), true)?;
                (Some(w), Some(r))
            } else {
                (None, None)
            };
            let stdio = Stdio::Pipes { stdin: stdin_monitor, stdout: Some(out_r), stderr: Some(err_r) };
            (stdio, ChildStdio::Pipes { stdin: stdin_child, stdout: out_w, stderr: err_w }, None)
        };
        let (sync_r, sync_w) = pipe2(OFlag::O_CLOEXEC).map_err(err("pipe"))?;
        let (errors_r, errors_w) = pipe2(OFlag::O_CLOEXEC).map_err(err("pipe"))?;
        set_cloexec_nonblock(errors_r.as_fd(), true)?;

        let mut flags =
            nix::libc::CLONE_NEWNS | nix::libc::CLONE_NEWUTS | nix::libc::CLONE_NEWIPC | nix::libc::CLONE_NEWPID;
        if !bundle.host_network {
            flags |= nix::libc::CLONE_NEWNET;
        }
        // SAFETY: a fork-like clone (no new stack) of this single-threaded process.
        let pid = unsafe { nix::libc::syscall(nix::libc::SYS_clone, flags | nix::libc::SIGCHLD, 0, 0, 0, 0) };
        if pid < 0 {
            return Err(io::Error::other(format!("clone: {}", io::Error::last_os_error())));
        }
        if pid == 0 {
            // The child dies with its monitor.
            // SAFETY: prctl in the child.
            unsafe { nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) };
            let io = ChildIo { stdio: child_stdio, sync: sync_r, errors: errors_w };
            init::run(&bundle, io);
        }
        let init_pid = pid as i32;
        drop((child_stdio, sync_r, errors_w));
        // SAFETY: pidfd_open on our own child.
        let pidfd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, init_pid, 0) };
        if pidfd < 0 {
            let e = io::Error::last_os_error();
            let _ = nix::sys::signal::kill(Pid::from_raw(init_pid), nix::sys::signal::Signal::SIGKILL);
            return Err(io::Error::other(format!("pidfd_open: {e}")));
        }
        // SAFETY: a new fd owned by nothing else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
        for procs in &bundle.cgroup_procs {
            if let Err(e) = std::fs::write(procs, init_pid.to_string()) {
                let _ = nix::sys::signal::kill(Pid::from_raw(init_pid), nix::sys::signal::Signal::SIGKILL);
                return Err(io::Error::other(format!("cannot put the container in {}: {e}", procs.display())));
            }
        }
        let _ = std::fs::remove_file(bundle::SOCKET_FILE);
        let listener = UnixListener::bind(bundle::SOCKET_FILE)?;
        listener.set_nonblocking(true)?;
        std::fs::set_permissions(bundle::SOCKET_FILE, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let info = MonitorInfo { monitor_pid: std::process::id() as i32, init_pid };
        crate::store::write_json(Path::new(bundle::MONITOR_FILE), &info)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(bundle::LOG_FILE)?;
        Ok(Monitor {
            dir: dir.to_path_buf(),
            init_pid,
            pidfd,
            stdio,
            stdin_queue: VecDeque::new(),
            close_stdin_after_queue: false,
            sync: Some(sync_w),
            console,
            errors: Some(errors_r),
            error_text: Vec::new(),
            listener,
            clients: Vec::new(),
            next_client: 0,
            log: io::BufWriter::with_capacity(64 << 10, log),
            started: false,
            exit: None,
        })
    }

    fn run(&mut self) {
        while self.exit.is_none() {
            if let Err(e) = self.step() {
                eprintln!("cm-monitor {}: {e}", self.dir.display());
            }
        }
        self.finish();
    }

    /// One poll round.
    fn step(&mut self) -> io::Result<()> {
        let (out_fd, err_fd, in_fd) = self.stdio_fds();
        let read = PollFlags::POLLIN;
        let mut watched: Vec<(Slot, BorrowedFd<'_>, PollFlags)> =
            vec![(Slot::Exit, self.pidfd.as_fd(), read), (Slot::Listener, self.listener.as_fd(), read)];
        if let Some(fd) = out_fd {
            watched.push((Slot::Stdout, fd, read));
        }
        if let Some(fd) = err_fd {
            watched.push((Slot::Stderr, fd, read));
        }
        if let (Some(fd), false) = (in_fd, self.stdin_queue.is_empty()) {
            watched.push((Slot::Stdin, fd, PollFlags::POLLOUT));
        }
        if let Some(fd) = self.errors.as_ref() {
            watched.push((Slot::Errors, fd.as_fd(), read));
        }
        if self.stdin_queue.len() < STDIN_HIGH_WATER {
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
                Slot::Stdout => self.pump(Stream::Stdout)?,
                Slot::Stderr => self.pump(Stream::Stderr)?,
                Slot::Stdin => self.feed_stdin(),
                Slot::Errors => self.read_errors(),
                Slot::Listener => self.accept(),
                Slot::Client(id) => {
                    if !self.serve_client(id) {
                        gone.push(id);
                    }
                }
                Slot::Exit => self.reap(),
            }
        }
        self.clients.retain(|c| !gone.contains(&c.id));
        Ok(())
    }

    fn stdio_fds(&self) -> (Option<BorrowedFd<'_>>, Option<BorrowedFd<'_>>, Option<BorrowedFd<'_>>) {
        match &self.stdio {
            Stdio::Pty { master } => (master.as_ref().map(|m| m.as_fd()), None, master.as_ref().map(|m| m.as_fd())),
            Stdio::Pipes { stdin, stdout, stderr } => (
                stdout.as_ref().map(|f| f.as_fd()),
                stderr.as_ref().map(|f| f.as_fd()),
                stdin.as_ref().map(|f| f.as_fd()),
            ),
        }
    }

    /// Reads what the container wrote and passes it on. Returns at EOF (closing that stream).
    fn pump(&mut self, stream: Stream) -> io::Result<()> {
        let mut buf = vec![0u8; 64 << 10];
        let fd = match (&self.stdio, stream) {
            (Stdio::Pty { master: Some(master) }, _) => master.as_raw_fd(),
            (Stdio::Pipes { stdout: Some(f), .. }, Stream::Stdout) => f.as_raw_fd(),
            (Stdio::Pipes { stderr: Some(f), .. }, Stream::Stderr) => f.as_raw_fd(),
            _ => return Ok(()),
        };
        // SAFETY: reading into our own buffer from a valid fd.
        let n = unsafe { nix::libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            let data = &buf[..n as usize];
            logfile::write_record(&mut self.log, now_nanos(), stream, data)?;
            let frame = match stream {
                Stream::Stdout => FromMonitor::Stdout(data.to_vec()),
                Stream::Stderr => FromMonitor::Stderr(data.to_vec()),
            }
            .encode();
            self.broadcast(&frame, true);
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if n < 0 && e.kind() == io::ErrorKind::WouldBlock {
            return Ok(());
        }
        // EOF (or EIO on a pty whose other side is gone): this stream is done.
        match &mut self.stdio {
            Stdio::Pty { master } => *master = None,
            Stdio::Pipes { stdout, stderr, .. } => match stream {
                Stream::Stdout => *stdout = None,
                Stream::Stderr => *stderr = None,
            },
        }
        Ok(())
    }

    /// True while some output stream is still open.
    fn output_open(&self) -> bool {
        match &self.stdio {
            Stdio::Pty { master } => master.is_some(),
            Stdio::Pipes { stdout, stderr, .. } => stdout.is_some() || stderr.is_some(),
        }
    }

    /// Sends a frame to every connection (only attached ones for output). Connections block, with a send
    /// timeout: a connection that cannot take a frame in time is dropped.
    fn broadcast(&mut self, frame: &[u8], output: bool) {
        self.clients.retain_mut(|c| {
            (output && !c.attached)
                || c.stream.write_all(frame).map_err(|e| eprintln!("cm-monitor: dropping a connection: {e}")).is_ok()
        });
    }

    /// Writes queued stdin to the container as far as it takes it.
    fn feed_stdin(&mut self) {
        let (_, _, Some(fd)) = self.stdio_fds() else { return };
        let fd = fd.as_raw_fd();
        while !self.stdin_queue.is_empty() {
            let (front, _) = self.stdin_queue.as_slices();
            // SAFETY: writing from our own buffer to a valid fd.
            let n = unsafe { nix::libc::write(fd, front.as_ptr().cast(), front.len()) };
            if n <= 0 {
                if io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                    // The container closed its stdin: drop what it will never read.
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

    fn close_stdin(&mut self) {
        if let Stdio::Pipes { stdin, .. } = &mut self.stdio {
            *stdin = None;
        }
    }

    /// Collects the reason the init could not start (the pipe closes empty when exec succeeds).
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

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
            self.next_client += 1;
            let mut client = Client {
                id: self.next_client,
                stream,
                decoder: Decoder::default(),
                attached: false,
                input_closed: false,
            };
            if self.started && client.stream.write_all(&FromMonitor::Started { pid: self.init_pid }.encode()).is_err() {
                continue;
            }
            self.clients.push(client);
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
                Ok(Some(frame)) => self.handle(i, frame),
                Ok(None) => return true,
                Err(e) => {
                    eprintln!("cm-monitor: dropping a connection: {e}");
                    return false;
                }
            }
        }
    }

    fn handle(&mut self, i: usize, frame: ToMonitor) {
        match frame {
            ToMonitor::Attach => self.clients[i].attached = true,
            ToMonitor::Start { rows, cols } => {
                if self.started {
                    return;
                }
                if let Some(sync) = self.sync.take() {
                    let (r, c) = (rows.to_be_bytes(), cols.to_be_bytes());
                    let _ = rustix::io::write(&sync, &[b'g', r[0], r[1], c[0], c[1]]);
                }
                if let Some(console) = self.console.take() {
                    self.receive_console(&console);
                }
                self.started = true;
                self.broadcast(&FromMonitor::Started { pid: self.init_pid }.encode(), false);
            }
            ToMonitor::Stdin(data) => {
                self.stdin_queue.extend(data);
                self.feed_stdin();
            }
            ToMonitor::CloseStdin => {
                self.close_stdin_after_queue = true;
                if self.stdin_queue.is_empty() {
                    self.close_stdin();
                }
            }
            ToMonitor::Resize { rows, cols } => self.resize(rows, cols),
            ToMonitor::Signal(sig) => {
                // SAFETY: pidfd_send_signal on our own child's pidfd: never hits a recycled pid.
                unsafe {
                    nix::libc::syscall(nix::libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), sig, 0usize, 0u32)
                };
            }
        }
    }

    /// Takes the pty master the init allocated inside the container. If the init fails before sending it,
    /// the socket closes and the container runs without output (its error is reported on exit).
    fn receive_console(&mut self, console: &UnixStream) {
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

    /// The init exited: collect its status.
    fn reap(&mut self) {
        let status = match waitpid(Pid::from_raw(self.init_pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => (code, 0),
            Ok(WaitStatus::Signaled(_, sig, _)) => (128 + sig as i32, sig as i32),
            Ok(_) => return,
            Err(e) => {
                eprintln!("cm-monitor: waitpid: {e}");
                (255, 0)
            }
        };
        self.exit =
            Some(ExitInfo { code: status.0, signal: status.1, error: String::new(), finished_unix_nanos: now_nanos() });
    }

    /// After the exit: drain output, record the status, tell every connection, go.
    fn finish(&mut self) {
        let deadline = Instant::now() + DRAIN_LIMIT;
        while self.output_open() && Instant::now() < deadline {
            let (out, err, _) = self.stdio_fds();
            let mut fds: Vec<PollFd> =
                out.into_iter().chain(err).map(|fd| PollFd::new(fd, PollFlags::POLLIN)).collect();
            let _ = poll(&mut fds, PollTimeout::from(100u8));
            drop(fds);
            let _ = self.pump(Stream::Stdout);
            let _ = self.pump(Stream::Stderr);
        }
        while self.errors.is_some() {
            self.read_errors();
            if self.errors.is_some() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let _ = self.log.flush();
        let mut exit = self.exit.take().unwrap_or_default();
        exit.error = String::from_utf8_lossy(&self.error_text).trim().to_string();
        if let Err(e) = crate::store::write_json(Path::new(bundle::EXIT_FILE), &exit) {
            eprintln!("cm-monitor: cannot record the exit status: {e}");
        }
        let frame = FromMonitor::Exit(exit).encode();
        self.broadcast(&frame, false);
        let _ = std::fs::remove_file(bundle::SOCKET_FILE);
    }
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    Exit,
    Listener,
    Stdout,
    Stderr,
    Stdin,
    Errors,
    Client(u64),
}

fn set_cloexec_nonblock(fd: BorrowedFd<'_>, nonblock: bool) -> io::Result<()> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).map_err(err("fcntl"))?;
    let mut flags = OFlag::from_bits_truncate(flags);
    flags.set(OFlag::O_NONBLOCK, nonblock);
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(err("fcntl"))?;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).map_err(err("fcntl"))?;
    Ok(())
}
