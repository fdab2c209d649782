//! A terminal for a test: a pseudo-terminal pair whose slave is a child's controlling terminal (stdin, stdout
//! and stderr), driven from the master side with bounded reads, so a hang fails the test instead of blocking it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::pty::{Winsize, openpty};
use nix::sys::signal::{Signal, kill};
use nix::sys::termios::{Termios, tcgetattr};
use nix::unistd::Pid;

nix::ioctl_write_ptr_bad!(
    /// TIOCSWINSZ: sets a terminal's size.
    tiocswinsz,
    nix::libc::TIOCSWINSZ,
    Winsize
);

/// A child process running on a pseudo-terminal of its own.
pub struct PtyChild {
    master: OwnedFd,
    /// Kept open so the terminal's settings can be read after the child is gone.
    slave: OwnedFd,
    child: Child,
    /// Everything read from the terminal so far.
    output: Vec<u8>,
    /// How much of `output` [`PtyChild::expect`] has consumed.
    consumed: usize,
    /// The terminal settings before the child started.
    initial: Termios,
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 }
}

fn set_size(fd: &impl AsRawFd, rows: u16, cols: u16) -> Result<()> {
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid for the call.
    unsafe { tiocswinsz(fd.as_raw_fd(), &winsize(rows, cols)) }.context("TIOCSWINSZ")?;
    Ok(())
}

impl PtyChild {
    /// Spawns `command` in a new session whose controlling terminal is a fresh pty of `rows` x `cols`
    /// (the size is set on the slave before the child starts).
    pub fn spawn(mut command: Command, rows: u16, cols: u16) -> Result<PtyChild> {
        let pty = openpty(None, None).context("openpty")?;
        set_size(&pty.slave, rows, cols)?;
        let initial = tcgetattr(pty.slave.as_fd()).context("tcgetattr")?;
        let stdio = |fd: &OwnedFd| -> Result<Stdio> { Ok(Stdio::from(fd.try_clone()?)) };
        command.stdin(stdio(&pty.slave)?).stdout(stdio(&pty.slave)?).stderr(stdio(&pty.slave)?);
        // SAFETY: setsid and ioctl are async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().context("spawning the command on the pty")?;
        drop(command); // our copies of the slave for its stdio
        let flags = OFlag::from_bits_truncate(fcntl(&pty.master, FcntlArg::F_GETFL)?);
        fcntl(&pty.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(PtyChild { master: pty.master, slave: pty.slave, child, output: Vec::new(), consumed: 0, initial })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Types `text` on the terminal.
    pub fn write(&mut self, text: &str) -> Result<()> {
        let mut rest = text.as_bytes();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !rest.is_empty() {
            match nix::unistd::write(&self.master, rest) {
                Ok(n) => rest = &rest[n..],
                Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => {
                    if Instant::now() > deadline {
                        bail!("the terminal took no input for 5 s");
                    }
                    self.read_for(Duration::from_millis(10))?;
                }
                Err(e) => return Err(e).context("writing to the pty master"),
            }
        }
        Ok(())
    }

    /// Reads what the terminal has for at most `wait`, returning as soon as something was read.
    fn read_for(&mut self, wait: Duration) -> Result<usize> {
        let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
        let millis = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(nix::Error::EINTR) => return Ok(0),
            Ok(_) => {}
            Err(e) => return Err(e).context("poll on the pty master"),
        }
        let mut buf = [0u8; 4096];
        match nix::unistd::read(&self.master, &mut buf) {
            Ok(n) => {
                self.output.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            // EIO: no slave open any more (we keep one, so only in odd cases).
            Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) | Err(nix::Error::EIO) => Ok(0),
            Err(e) => Err(e).context("reading the pty master"),
        }
    }

    /// Waits (at most `timeout`) until `needle` appears in the output after what earlier calls consumed;
    /// returns the output up to and including it.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let unread = &self.output[self.consumed..];
            if let Some(at) = find(unread, needle.as_bytes()) {
                let end = self.consumed + at + needle.len();
                let text = String::from_utf8_lossy(&self.output[self.consumed..end]).into_owned();
                self.consumed = end;
                return Ok(text);
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("{needle:?} did not appear on the terminal within {timeout:?}; it shows:\n{}", self.transcript());
            }
            if let Some(status) = self.child.try_wait()? {
                // Drain what is left, then look once more.
                while self.read_for(Duration::from_millis(50))? > 0 {}
                if find(&self.output[self.consumed..], needle.as_bytes()).is_none() {
                    bail!(
                        "the command exited ({status}) before {needle:?} appeared; the terminal shows:\n{}",
                        self.transcript()
                    );
                }
                continue;
            }
            self.read_for((deadline - now).min(Duration::from_millis(100)))?;
        }
    }

    /// Sets the terminal's size from the master side and tells the child with SIGWINCH, as a terminal
    /// emulator does.
    pub fn resize(&mut self, rows: u16, cols: u16) -> Result<()> {
        set_size(&self.master, rows, cols)?;
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGWINCH).context("SIGWINCH")?;
        Ok(())
    }

    /// Waits (at most `timeout`, reading the terminal meanwhile) for the child to exit.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                while self.read_for(Duration::from_millis(20))? > 0 {}
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("the command did not exit within {timeout:?}; the terminal shows:\n{}", self.transcript());
            }
            self.read_for(Duration::from_millis(50))?;
        }
    }

    /// Whether the terminal's settings are what they were before the child started (a raw-mode program must
    /// restore them on exit).
    pub fn settings_restored(&self) -> Result<bool> {
        let now = tcgetattr(self.slave.as_fd()).context("tcgetattr")?;
        let (a, b) = (&self.initial, &now);
        Ok(a.input_flags == b.input_flags
            && a.output_flags == b.output_flags
            && a.control_flags == b.control_flags
            && a.local_flags == b.local_flags)
    }

    /// Everything the terminal showed, escaped for a failure message.
    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.output).escape_debug().to_string().replace("\\r\\n", "\\r\\n\n")
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
