//! cm-server's side of a monitor: starting it and talking to it over its socket.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::bundle;
use super::protocol::{Decoder, FromMonitor, ToMonitor};

/// Where the monitor binary is: beside cm-server (both are built and installed together).
pub fn monitor_binary() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("cm-monitor");
    if path.exists() {
        Ok(path)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is missing: install cm-monitor beside cm-server", path.display()),
        ))
    }
}

/// Starts the monitor for the container in `dir`; returns once its init exists and its socket listens.
pub async fn spawn_monitor(binary: &Path, dir: &Path) -> std::io::Result<i32> {
    let output = tokio::process::Command::new(binary)
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .await?;
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
