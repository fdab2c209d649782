//! cm-server's side of a monitor: starting it (from a sealed copy of its binary) and talking to it over its
//! socket.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::bundle;
use super::protocol::{Decoder, FromMonitor, ToMonitor};

/// The monitor binary: found beside cm-server (both are built and installed together) and run from a
/// sealed in-memory copy, made once per server process, so that no container process that reaches a
/// monitor (or a child of it) through /proc can write to or chmod the host's binary (CVE-2019-5736).
pub struct MonitorBinary {
    path: PathBuf,
    sealed: Mutex<Option<Arc<OwnedFd>>>,
}

impl MonitorBinary {
    /// The binary beside cm-server.
    pub fn beside_server() -> std::io::Result<MonitorBinary> {
        let exe = std::env::current_exe()?;
        let path = exe.with_file_name("cm-monitor");
        if path.exists() {
            Ok(MonitorBinary::at(path))
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} is missing: install cm-monitor beside cm-server", path.display()),
            ))
        }
    }

    pub fn at(path: PathBuf) -> MonitorBinary {
        MonitorBinary { path, sealed: Mutex::new(None) }
    }

    /// The sealed copy (made at the first call).
    fn sealed(&self) -> std::io::Result<Arc<OwnedFd>> {
        let mut sealed = self.sealed.lock().unwrap();
        if let Some(fd) = &*sealed {
            return Ok(fd.clone());
        }
        let fd = Arc::new(sealed_copy(&self.path)?);
        *sealed = Some(fd.clone());
        Ok(fd)
    }
}

/// A memfd holding a copy of `path`, sealed against every change (write, grow, shrink, more seals).
fn sealed_copy(path: &Path) -> std::io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let context = |what: &str, e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"));
    let memfd = rustix::fs::memfd_create("cm-monitor", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(|e| context("memfd_create", e.into()))?;
    let mut source = std::fs::File::open(path).map_err(|e| context(&format!("opening {}", path.display()), e))?;
    let mut copy = std::fs::File::from(memfd);
    std::io::copy(&mut source, &mut copy).map_err(|e| context("copying the monitor binary", e))?;
    rustix::fs::fchmod(&copy, rustix::fs::Mode::from_raw_mode(0o555)).map_err(|e| context("fchmod", e.into()))?;
    let seals = SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE;
    rustix::fs::fcntl_add_seals(&copy, seals).map_err(|e| context("sealing the monitor copy", e.into()))?;
    Ok(copy.into())
}

/// Starts the monitor for the container in `dir`; returns once its init exists and its socket listens.
pub async fn spawn_monitor(binary: &MonitorBinary, dir: &Path) -> std::io::Result<i32> {
    let sealed = binary.sealed()?;
    let fd = sealed.as_raw_fd();
    // The child execs the copy through its descriptor, which it alone makes inheritable (an interpreter
    // would need it after exec; the monitor closes every inherited descriptor first thing).
    let mut command = tokio::process::Command::new(format!("/proc/self/fd/{fd}"));
    // SAFETY: fcntl is async-signal-safe; it touches only the child's copy of the descriptor.
    unsafe {
        command.pre_exec(move || {
            if nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command
        .arg0("cm-monitor")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .await?;
    drop(sealed);
    let text = String::from_utf8_lossy(&output.stdout);
    match text.trim().strip_prefix("ok ") {
        Some(pid) if output.status.success() => Ok(pid.parse().unwrap_or(0)),
        _ => Err(std::io::Error::other(format!(
            "the container monitor failed to start: {}{}",
            text.trim().trim_start_matches("error: "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
    }
}

/// Connects to the monitor of the container in `dir`. The socket is reached through an fd of the
/// directory, so the state root's path length does not matter (sun_path holds 108 bytes).
pub async fn connect(dir: &Path) -> std::io::Result<Connection> {
    let dir_fd = std::fs::File::open(dir)?;
    let path = format!("/proc/self/fd/{}/{}", dir_fd.as_raw_fd(), bundle::SOCKET_FILE);
    let stream = UnixStream::connect(&path).await?;
    drop(dir_fd);
    let (read, write) = stream.into_split();
    Ok(Connection { reader: Reader { read, decoder: Decoder::default() }, writer: Writer { write } })
}

/// A connection to a monitor, split so output can be read while frames are sent.
pub struct Connection {
    pub reader: Reader,
    pub writer: Writer,
}

pub struct Reader {
    read: OwnedReadHalf,
    decoder: Decoder,
}

pub struct Writer {
    write: OwnedWriteHalf,
}

impl Reader {
    /// The next frame, or None when the monitor closed the connection.
    pub async fn next(&mut self) -> std::io::Result<Option<FromMonitor>> {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            if let Some(frame) = self.decoder.next_from_monitor().map_err(std::io::Error::other)? {
                return Ok(Some(frame));
            }
            let n = self.read.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            self.decoder.push(&buf[..n]);
        }
    }
}

impl Writer {
    pub async fn send(&mut self, frame: ToMonitor) -> std::io::Result<()> {
        self.write.write_all(&frame.encode()?).await
    }
}
