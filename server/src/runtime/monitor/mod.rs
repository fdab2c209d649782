//! cm-monitor: one small single-threaded process per running container. It detaches from cm-server, clones
//! the container's init into new namespaces, waits until the init has joined its cgroups, then serves its
//! socket with a poll(2) loop: output from the container goes to the log and to attached connections, stdin and resize and signal
//! frames go to the container. Exec'd processes are its children too, each owned by the connection that
//! asked for it. When the init exits it drains the output, records the exit status in `exit.json`, tells
//! every connection, and exits.

//!
//! - [`proc`]: a process the monitor owns: stdio, stdin queue, error pipe, signals, reaping, drain
//! - [`exec`]: starting an extra process in the running container

mod exec;
mod proc;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::{ForkResult, fork, pipe2};

use self::exec::Exec;
use self::proc::{Proc, Slot, Who, err, make_stdio, now_nanos};
use super::bundle::{self, Bundle, ExecSpec, ExitInfo, MonitorInfo};
use super::clone;
use super::init::{self, ChildIo};
use super::logfile::{self, Stream};
use super::protocol::{Decoder, FromMonitor, ToMonitor};
use super::sync::SyncMsg;
use super::userns;

/// Stdin bytes queued for the container beyond which the monitor stops reading client frames.
const STDIN_HIGH_WATER: usize = 1 << 20;
/// Exit statuses of finished execs kept for Wait.
const FINISHED_EXECS_KEPT: usize = 1024;

/// Entry point of `cm-monitor DIR`. Prints "ok" (or the error) on stdout once the container's init exists
/// and the socket listens, then detaches; the process that started it can wait for it right away.
pub fn main(dir: &Path) -> i32 {
    // Nothing inherited is kept (the sealed copy of our binary we were exec'd from, ...).
    // SAFETY: close_range on descriptors nothing in this fresh process uses.
    unsafe { nix::libc::syscall(nix::libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let (status_r, status_w) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(io::stdout(), "error: pipe: {e}");
            return 1;
        }
    };
    // SAFETY: the monitor is single-threaded here, so fork is safe.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            drop(status_w);
            // One line: the container's init inherits the pipe until it execs, so EOF would come late.
            let mut status = String::new();
            let _ = io::BufRead::read_line(&mut io::BufReader::new(File::from(status_r)), &mut status);
            let status = if status.is_empty() { "error: the monitor died while starting".to_string() } else { status };
            let _ = write!(io::stdout(), "{status}");
            let _ = io::stdout().flush();
            if status.starts_with("ok") {
                0
            } else {
                // The monitor failed and is exiting: gone before the server hears of it (nothing left behind).
                let _ = nix::sys::wait::waitpid(child, None);
                1
            }
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
            let _ = writeln!(io::stdout(), "error: fork: {e}");
            1
        }
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
    /// Bytes of the container's output the log could not take (a full disk): counted, never fatal.
    log_dropped: u64,
    /// Whether the last write to the log failed (connections hear of a change).
    log_failing: bool,
    /// The kubelet's log of the container's output, in the CRI format, when the bundle names one.
    cri_log: Option<logfile::CriWriter>,
}

impl Monitor {
    fn start(dir: &Path) -> io::Result<Monitor> {
        // Non-dumpable, and so are the children we clone from birth (see init::harden_child).
        // SAFETY: prctl with integer arguments.
        unsafe { nix::libc::prctl(nix::libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
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
        // A user namespace: the init gets its root filesystem as a mount built here (see runtime::userns),
        // and is cloned into the new user namespace, which then owns all its other namespaces.
        let rootfs_mount = match &bundle.id_map {
            Some(map) => {
                flags |= nix::libc::CLONE_NEWUSER;
                Some(userns::idmapped_rootfs(&bundle.rootfs, map)?)
            }
            None => None,
        };
        // Joined namespaces are not made new: the init enters net, IPC and UTS by path itself; a PID namespace
        // is entered here, as setns(CLONE_NEWPID) only places the children made after it.
        for join in &bundle.join_namespaces {
            let flag =
                join.flag().ok_or_else(|| io::Error::other(format!("cannot join a {:?} namespace", join.kind)))?;
            flags &= !flag;
            if flag == nix::libc::CLONE_NEWPID {
                let ns = File::open(&join.path)
                    .map_err(|e| io::Error::other(format!("opening {}: {e}", join.path.display())))?;
                // SAFETY: setns on a namespace file we opened; affects only our future children.
                if unsafe { nix::libc::setns(ns.as_raw_fd(), nix::libc::CLONE_NEWPID) } < 0 {
                    return Err(io::Error::other(format!(
                        "joining the PID namespace {}: {}",
                        join.path.display(),
                        io::Error::last_os_error()
                    )));
                }
            }
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
            let io = ChildIo { stdio: child_stdio, errors: errors_w, rootfs: rootfs_mount };
            let mut keep = io.fds();
            keep.extend([sync_r.as_raw_fd(), joined_w.as_raw_fd()]);
            init::harden_child(&keep);
            init::run(&bundle, io, sync_r, joined_w, !cloned.in_cgroup);
        }
        drop((child_stdio, sync_r, errors_w, joined_w, rootfs_mount));
        let mut init = Proc::new(pid as i32, stdio, console, errors_r)?;
        if let Some(map) = &bundle.id_map
            && let Err(e) = userns::write_maps(pid, map)
        {
            init.signal(nix::libc::SIGKILL);
            init.reap_blocking();
            return Err(e);
        }
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
        let info = MonitorInfo {
            monitor_pid: std::process::id() as i32,
            init_pid: init.pid,
            cloned_into_cgroup: cloned.in_cgroup,
        };
        // Rewritten at every start; only a running server reads it.
        let info = serde_json::to_vec(&info).map_err(io::Error::other)?;
        crate::store::write_replace(Path::new(bundle::MONITOR_FILE), &info)?;
        let log = logfile::Writer::open(Path::new("."), bundle.log)?;
        let cri_log = bundle.cri_log.as_deref().map(logfile::CriWriter::open).transpose()?;
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
            log_dropped: 0,
            log_failing: false,
            cri_log,
        })
    }

    fn init_pid(&self) -> i32 {
        self.init.pid
    }

    fn run(&mut self) {
        while self.init.exit.is_none() {
            if let Err(e) = self.step() {
                note!("cm-monitor {}: {e}", self.dir.display());
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
        // A connection that half-closed is watched for its hang-up only (poll always reports POLLHUP): one that
        // is gone entirely is dropped, so every ended session gives its descriptor back.
        for c in self.clients.iter().filter(|c| c.input_closed) {
            watched.push((Slot::Client(c.id), c.stream.as_fd(), PollFlags::empty()));
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
                Slot::Stdout(who) => self.pump(who, Stream::Stdout),
                Slot::Stderr(who) => self.pump(who, Stream::Stderr),
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
                    let hung_up = self.clients.iter().any(|c| c.id == id && c.input_closed);
                    if hung_up || !self.serve_client(id) {
                        gone.push(id);
                    }
                }
                Slot::Exit(Who::Init) => self.init.reap(),
                Slot::Exit(Who::Exec(key)) => self.exec_exited(key),
            }
        }
        self.clients.retain(|c| !gone.contains(&c.id));
        self.kill_orphaned_execs();
        Ok(())
    }

    /// Kills the execs whose owning connection is gone and that were not started to outlive it (the session
    /// ended: its client, or the server, died). Once each: the kill is not repeated while it dies.
    fn kill_orphaned_execs(&mut self) {
        for e in self.execs.iter_mut().filter(|e| e.kill_on_disconnect && !e.killed) {
            if !self.clients.iter().any(|c| c.id == e.owner) {
                note!("cm-monitor: the session of exec {} is gone; killing it", e.id);
                e.proc.signal(nix::libc::SIGKILL);
                e.killed = true;
            }
        }
    }

    /// Passes output on: the init's to the log and attached connections, an exec's to its owner.
    fn pump(&mut self, who: Who, stream: Stream) {
        let Some(data) = self.proc_mut(who).and_then(|p| p.read_output(stream)) else { return };
        self.deliver(who, stream, data)
    }

    fn deliver(&mut self, who: Who, stream: Stream, data: Vec<u8>) {
        if who == Who::Init {
            if let Some(cri) = &mut self.cri_log
                && let Err(e) = cri.write(now_nanos(), stream, &data)
            {
                note!("cm-monitor: cannot write the CRI log: {e}");
            }
            self.log_output(stream, &data);
        }
        let frame = match stream {
            Stream::Stdout => FromMonitor::Stdout(data),
            Stream::Stderr => FromMonitor::Stderr(data),
        };
        match who {
            Who::Init => self.broadcast(&frame, true),
            Who::Exec(key) => {
                if let Some(owner) = self.execs.iter().find(|e| e.key == key).map(|e| e.owner) {
                    self.send_to(&[owner], &frame);
                }
            }
        }
    }

    /// Appends the init's output to the log. A write that fails (the disk is full) drops the record, counts its
    /// bytes and tells every connection when the failing starts and when it ends; the container runs on and
    /// attached connections still get the output.
    fn log_output(&mut self, stream: Stream, data: &[u8]) {
        let failed = match self.log.write(now_nanos(), stream, data) {
            Ok(()) => false,
            Err(e) => {
                if !self.log_failing {
                    note!("cm-monitor: cannot write the container's output to its log, dropping it: {e}");
                }
                self.log_dropped += data.len() as u64;
                true
            }
        };
        if failed != self.log_failing {
            self.log_failing = failed;
            self.broadcast(&FromMonitor::LogDropped(self.log_dropped), false);
        }
    }

    /// Sends a frame to every connection (only attached ones, for output). Connections block, with a send
    /// timeout: a connection that cannot take a frame in time is dropped.
    fn broadcast(&mut self, msg: &FromMonitor, output: bool) {
        let Some(frame) = encode(msg) else { return };
        self.clients.retain_mut(|c| {
            (output && !c.attached)
                || c.stream.write_all(&frame).map_err(|e| note!("cm-monitor: dropping a connection: {e}")).is_ok()
        });
    }

    fn send_to(&mut self, ids: &[u64], msg: &FromMonitor) {
        let Some(frame) = encode(msg) else { return };
        self.clients.retain_mut(|c| {
            !ids.contains(&c.id)
                || c.stream.write_all(&frame).map_err(|e| note!("cm-monitor: dropping a connection: {e}")).is_ok()
        });
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
            self.next_client += 1;
            if self.log_dropped > 0
                && let Some(frame) = encode(&FromMonitor::LogDropped(self.log_dropped))
                && (&stream).write_all(&frame).is_err()
            {
                continue;
            }
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
        if self.clients[i].input_closed {
            // Only a hang-up (or an error) wakes a half-closed connection: the peer is gone.
            return false;
        }
        let mut buf = [0u8; 64 << 10];
        let n = match io::Read::read(&mut self.clients[i].stream, &mut buf) {
            Ok(0) => {
                // A half-close (the server's side of a stream ended): keep sending it frames.
                self.clients[i].input_closed = true;
                return true;
            }
            Ok(n) => n,
            Err(e) => {
                note!("cm-monitor: dropping a connection: {e}");
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
                    note!("cm-monitor: dropping a connection: {e}");
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
                let failed = self.init.wait_for_exec();
                self.started = true;
                if failed {
                    self.init.reap_blocking();
                    // The setup failed (125: a mount, the user, the cwd ...): no Started, only the Exit with
                    // the reason, which finish() sends every connection, so Start fails with it. A command
                    // that is not found (127) or not executable (126) did start, as in docker's run.
                    if !matches!(self.init.exit.as_ref().map(|e| e.code), Some(126 | 127)) {
                        return;
                    }
                }
                self.broadcast(&FromMonitor::Started { pid: self.init_pid() }, false);
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
                self.send_to(&[client], &reply);
            }
            ToMonitor::ReopenLog => {
                let reply = match self.cri_log.as_mut().map(|l| l.reopen()) {
                    Some(Ok(())) => FromMonitor::Started { pid: self.init_pid() },
                    Some(Err(e)) => FromMonitor::Stderr(format!("cannot reopen the log: {e}").into_bytes()),
                    None => FromMonitor::Stderr(b"the container has no CRI log".to_vec()),
                };
                self.send_to(&[client], &reply);
            }
            ToMonitor::WaitExec(exec_id) => {
                if let Some(e) = self.execs.iter_mut().find(|e| e.id == exec_id) {
                    e.waiters.push(client);
                } else if let Some(exit) = self.finished_execs.get(&exec_id).cloned() {
                    self.send_to(&[client], &FromMonitor::Exit(exit));
                } else {
                    self.send_to(&[client], &FromMonitor::NoSuchExec(exec_id));
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
                self.execs.push(Exec {
                    key,
                    id: spec.exec_id.clone(),
                    proc,
                    owner: client,
                    waiters: Vec::new(),
                    kill_on_disconnect: spec.kill_on_disconnect,
                    killed: false,
                });
                FromMonitor::Started { pid }
            }
            Err(e) => FromMonitor::Exit(ExitInfo {
                code: 125,
                error: format!("cannot start the process: {e}"),
                finished_unix_nanos: now_nanos(),
                ..Default::default()
            }),
        };
        self.send_to(&[client], &frame);
    }

    fn spawn_exec(&mut self, spec: &ExecSpec) -> io::Result<Proc> {
        if self.init.exit.is_some() || !self.started {
            return Err(io::Error::other("the container is not running"));
        }
        let cgroup_dir = self.cgroup_dir.as_ref().map(|fd| fd.as_fd());
        exec::spawn(&self.bundle, spec, self.init.pidfd.as_fd(), cgroup_dir, &mut self.in_container_pidns)
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
            self.send_to(&[owner], &frame);
        }
        exec.waiters.push(owner);
        self.send_to(&exec.waiters, &FromMonitor::Exit(exit.clone()));
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
            self.deliver(Who::Init, stream, data);
        }
        if self.log_dropped > 0 {
            // The last count, before the exit (counts are otherwise sent when the failing starts and ends).
            self.broadcast(&FromMonitor::LogDropped(self.log_dropped), false);
        }
        let recorded = crate::store::write_json(Path::new(bundle::EXIT_FILE), &exit);
        let frame = FromMonitor::Exit(exit.clone());
        // Execs died with the PID namespace; their owners learn it from the connection closing.
        self.broadcast(&frame, false);
        if let Err(e) = recorded {
            note!("cm-monitor: cannot record the exit status: {e}");
            self.record_exit_later(&exit, e);
        }
        let _ = std::fs::remove_file(bundle::SOCKET_FILE);
    }

    /// The disk was full when the exit status was to be written: stay, telling every connection that comes
    /// (a restarted server) the status, and write it once there is space again. Ends when it is written or
    /// can never be (the container's directory was removed: its record has the exit, or it is gone).
    fn record_exit_later(&mut self, exit: &ExitInfo, mut error: io::Error) {
        let Some(frame) = encode(&FromMonitor::Exit(exit.clone())) else { return };
        while is_disk_full(&error) {
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(1000u16));
            while let Ok((stream, _)) = self.listener.accept() {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
                let _ = (&stream).write_all(&frame);
            }
            match crate::store::write_json(Path::new(bundle::EXIT_FILE), exit) {
                Ok(()) => return,
                Err(e) => error = e,
            }
        }
    }
}

/// ENOSPC or EDQUOT: an error that goes away when space is freed.
fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT))
}

/// A frame's bytes; a message that cannot be encoded is logged and not sent (never sent empty).
fn encode(msg: &FromMonitor) -> Option<Vec<u8>> {
    msg.encode().map_err(|e| note!("cm-monitor: {e}")).ok()
}
