//! The processes the monitor owns (the container's init and its execs): their stdio (pipes, or the pty
//! master the child sends from inside the container), queued stdin, the error pipe that says why a child
//! could not exec, signals through the pidfd, reaping and the bounded drain of output after an exit.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};

use crate::runtime::bundle::ExitInfo;
use crate::runtime::init::ChildStdio;
use crate::runtime::logfile::Stream;

/// How long output is drained after a process exits.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// The monitor's ends of a process's stdio.
pub(super) enum Stdio {
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
pub(super) fn make_stdio(tty: bool, stdin: bool) -> io::Result<(Stdio, ChildStdio, Option<UnixStream>)> {
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
pub(super) struct Proc {
    pub(super) pid: i32,
    pub(super) pidfd: OwnedFd,
    pub(super) stdio: Stdio,
    pub(super) stdin_queue: VecDeque<u8>,
    pub(super) close_stdin_after_queue: bool,
    /// Where the child sends the pty master it allocates (tty processes, until it arrives).
    pub(super) console: Option<UnixStream>,
    /// Why the child could not exec (the pipe closes empty when exec succeeds).
    pub(super) errors: Option<OwnedFd>,
    pub(super) error_text: Vec<u8>,
    pub(super) exit: Option<ExitInfo>,
}

impl Proc {
    pub(super) fn new(pid: i32, stdio: Stdio, console: Option<UnixStream>, errors: OwnedFd) -> io::Result<Proc> {
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

    pub(super) fn fds(&self) -> (Option<BorrowedFd<'_>>, Option<BorrowedFd<'_>>, Option<BorrowedFd<'_>>) {
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
    pub(super) fn watch<'a>(&'a self, who: Who, watched: &mut Vec<(Slot, BorrowedFd<'a>, PollFlags)>) {
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
    pub(super) fn read_output(&mut self, stream: Stream) -> Option<Vec<u8>> {
        let fd = match (&self.stdio, stream) {
            (Stdio::Pty { master: Some(master) }, _) => master.as_fd(),
            (Stdio::Pipes { stdout: Some(f), .. }, Stream::Stdout) => f.as_fd(),
            (Stdio::Pipes { stderr: Some(f), .. }, Stream::Stderr) => f.as_fd(),
            _ => return None,
        };
        let mut buf = vec![0u8; 64 << 10];
        match rustix::io::read(fd, &mut buf) {
            Ok(n) if n > 0 => {
                buf.truncate(n);
                return Some(buf);
            }
            Err(rustix::io::Errno::AGAIN) => return None,
            // EOF, or an error such as EIO below.
            _ => {}
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

    pub(super) fn output_open(&self) -> bool {
        match &self.stdio {
            Stdio::Pty { master } => master.is_some(),
            Stdio::Pipes { stdout, stderr, .. } => stdout.is_some() || stderr.is_some(),
        }
    }

    pub(super) fn queue_stdin(&mut self, data: Vec<u8>) {
        self.stdin_queue.extend(data);
        self.feed_stdin();
    }

    /// Writes queued stdin to the process as far as it takes it.
    pub(super) fn feed_stdin(&mut self) {
        // The field itself, not fds(): the queue is drained while the fd is borrowed.
        let fd = match &self.stdio {
            Stdio::Pty { master: Some(master) } => master.as_fd(),
            Stdio::Pipes { stdin: Some(stdin), .. } => stdin.as_fd(),
            _ => {
                self.stdin_queue.clear();
                return;
            }
        };
        while !self.stdin_queue.is_empty() {
            let (front, _) = self.stdin_queue.as_slices();
            match rustix::io::write(fd, front) {
                Ok(n) if n > 0 => {
                    self.stdin_queue.drain(..n);
                }
                Err(rustix::io::Errno::AGAIN) => break,
                _ => {
                    // The process closed its stdin: drop what it will never read.
                    self.stdin_queue.clear();
                    break;
                }
            }
        }
        if self.stdin_queue.is_empty() && self.close_stdin_after_queue {
            self.close_stdin();
        }
    }

    pub(super) fn request_close_stdin(&mut self) {
        self.close_stdin_after_queue = true;
        if self.stdin_queue.is_empty() {
            self.close_stdin();
        }
    }

    pub(super) fn close_stdin(&mut self) {
        if let Stdio::Pipes { stdin, .. } = &mut self.stdio {
            *stdin = None;
        }
    }

    pub(super) fn read_errors(&mut self) {
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
    pub(super) fn receive_console(&mut self) {
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

    pub(super) fn resize(&self, rows: u16, cols: u16) {
        if let (Stdio::Pty { master: Some(master) }, true) = (&self.stdio, rows > 0 && cols > 0) {
            let size = nix::libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
            // SAFETY: TIOCSWINSZ with a valid winsize on the pty master.
            unsafe { nix::libc::ioctl(master.as_raw_fd(), nix::libc::TIOCSWINSZ, &size) };
        }
    }

    pub(super) fn signal(&self, sig: i32) {
        if self.exit.is_none() {
            // SAFETY: pidfd_send_signal on our own child's pidfd: never hits a recycled pid.
            unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), sig, 0usize, 0u32) };
        }
    }

    /// Waits (bounded) until the child has exec'd (its error pipe closes empty) or failed (it wrote why);
    /// true when it failed.
    pub(super) fn wait_for_exec(&mut self) -> bool {
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

    pub(super) fn reap_blocking(&mut self) {
        while self.exit.is_none() {
            let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(100u8));
            self.reap();
        }
    }

    /// Collects the exit status once the pidfd says the process ended.
    pub(super) fn reap(&mut self) {
        let status = match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => (code, 0),
            Ok(WaitStatus::Signaled(_, sig, _)) => (128 + sig as i32, sig as i32),
            Ok(_) => return,
            Err(e) => {
                note!("cm-monitor: waitpid {}: {e}", self.pid);
                (255, 0)
            }
        };
        self.exit =
            Some(ExitInfo { code: status.0, signal: status.1, error: String::new(), finished_unix_nanos: now_nanos() });
    }

    /// After the exit: the rest of the output (bounded in time) and the exec error, if any.
    pub(super) fn drain(&mut self, mut sink: impl FnMut(Stream, Vec<u8>)) -> ExitInfo {
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

/// Which process a poll slot belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Who {
    Init,
    Exec(u64),
}

pub(super) fn err(what: &str) -> impl Fn(nix::Error) -> io::Error + '_ {
    move |e| io::Error::other(format!("{what}: {e}"))
}

pub(super) fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Slot {
    Listener,
    Client(u64),
    Exit(Who),
    Stdout(Who),
    Stderr(Who),
    Stdin(Who),
    Errors(Who),
}

pub(super) fn set_cloexec_nonblock(fd: BorrowedFd<'_>, nonblock: bool) -> io::Result<()> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).map_err(err("fcntl"))?;
    let mut flags = OFlag::from_bits_truncate(flags);
    flags.set(OFlag::O_NONBLOCK, nonblock);
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(err("fcntl"))?;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).map_err(err("fcntl"))?;
    Ok(())
}
