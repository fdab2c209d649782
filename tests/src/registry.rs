//! A real `docker-registry` (Debian's distribution 2.8) on loopback with filesystem storage.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The registry binary (Debian package `docker-registry`).
pub const REGISTRY_BINARY: &str = "docker-registry";

/// The registry's stderr, in its storage directory.
const LOG_FILE: &str = "registry.log";

/// How long [`Registry::start`] waits for `GET /v2/` to answer 200.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How many times [`Registry::start`] tries a fresh port when another process took the one it picked.
const PORT_ATTEMPTS: usize = 3;

/// A running registry on 127.0.0.1 with its storage in a temporary directory; killed and removed on
/// drop.
pub struct Registry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on a free loopback port and waits until it serves `GET /v2/`.
    pub fn start() -> Result<Registry> {
        let mut attempt = 1;
        loop {
            match Registry::start_once()? {
                Started::Ready(registry) => return Ok(registry),
                Started::PortTaken(_) if attempt < PORT_ATTEMPTS => attempt += 1,
                Started::PortTaken(log) => {
                    bail!("docker-registry found its port taken {PORT_ATTEMPTS} times; last log:\n{log}")
                }
            }
        }
    }

    fn start_once() -> Result<Started> {
        let dir = tempfile::Builder::new()
            .prefix("cm-e2e-registry-")
            .tempdir()
            .context("creating the registry's storage directory")?;
        let addr = format!("127.0.0.1:{}", free_loopback_port()?);
        let config = write_config(dir.path(), &addr)?;
        let log_path = dir.path().join(LOG_FILE);
        let log = fs::File::create(&log_path).context("creating the registry log")?;
        let child = registry_command(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {REGISTRY_BINARY} (install Debian's docker-registry package)"))?;
        let mut registry = Registry { child, addr, dir };
        let read_log = || fs::read_to_string(&log_path).unwrap_or_default();

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = registry.child.try_wait()? {
                let log = read_log();
                if log.contains("address already in use") {
                    return Ok(Started::PortTaken(log));
                }
                bail!("docker-registry exited ({status}) before serving; its log:\n{log}");
            }
            // Another process may have taken the port and answer in our place: only trust a 200
            // once our own child holds the listening socket.
            if v2_answers_ok(&registry.addr) && listens_on(registry.child.id(), &registry.addr) {
                return Ok(Started::Ready(registry));
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry on {} did not answer GET /v2/ within {:?}; its log:\n{}",
                    registry.addr,
                    START_TIMEOUT,
                    read_log()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The storage root (`storage.filesystem.rootdirectory`); also holds `config.yml` and
    /// `registry.log`.
    pub fn storage_dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the registry wrote to stderr so far (errors only), for test failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join(LOG_FILE)).unwrap_or_default()
    }

    /// Where the registry keeps the bytes of blob `digest` (`sha256:<hex>`).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        blob_data_path(self.storage_dir(), digest)
    }

    /// Corrupts the stored blob `digest` keeping its size, so the registry still serves it but its
    /// bytes no longer match the digest (see [`tamper_blob`]).
    pub fn tamper_blob(&self, digest: &str) -> Result<()> {
        tamper_blob(&self.blob_data_path(digest))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Started {
    Ready(Registry),
    /// The picked port was taken before the registry bound it; carries the registry's log.
    PortTaken(String),
}

/// Writes `<dir>/config.yml` for a registry on `addr` storing into `dir`, and returns its path.
///
/// Nothing in it needs the network: no auth, no notifications, no proxy, no redis.
pub fn write_config(dir: &Path, addr: &str) -> Result<PathBuf> {
    let root = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    let config = format!(
        "version: 0.1\n\
         log:\n  level: error\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n",
        root = root.display()
    );
    let path = dir.join("config.yml");
    fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `docker-registry serve CONFIG`.
pub fn registry_command(config: &Path) -> Command {
    let mut command = Command::new(REGISTRY_BINARY);
    command.arg("serve").arg(config);
    command
}

/// Where a registry storing into `root` keeps the bytes of blob `digest`:
/// `<root>/docker/registry/v2/blobs/sha256/<first 2 hex>/<hex>/data`.
pub fn blob_data_path(root: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    root.join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
}

/// Corrupts the file at `path` in place, keeping its size. A gzip stream gets its header's mtime
/// flipped, so it still decompresses to the same tar and only a digest check can notice; anything
/// else gets its middle byte flipped.
pub fn tamper_blob(path: &Path) -> Result<()> {
    let mut bytes = fs::read(path).with_context(|| format!("reading blob {}", path.display()))?;
    if bytes.is_empty() {
        bail!("blob {} is empty: nothing to tamper with", path.display());
    }
    let flipped =
        if bytes.len() >= 10 && bytes.starts_with(&[0x1f, 0x8b]) { 4..8 } else { bytes.len() / 2..bytes.len() / 2 + 1 };
    bytes[flipped].iter_mut().for_each(|byte| *byte ^= 0xff);
    fs::write(path, bytes).with_context(|| format!("writing blob {}", path.display()))
}

/// Waits until the registry at `addr` answers `GET /v2/` with 200.
pub fn wait_until_ready(addr: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !v2_answers_ok(addr) {
        if Instant::now() > deadline {
            bail!("no registry answered GET http://{addr}/v2/ within {timeout:?}");
        }
        sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn v2_answers_ok(addr: &str) -> bool {
    crate::push::agent().get(format!("http://{addr}/v2/")).call().is_ok_and(|response| response.status() == 200)
}

/// A port nobody listens on right now (the kernel picks it; we release it for the registry).
fn free_loopback_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Whether process `pid` holds the socket listening on `addr` (IPv4, from /proc/net/tcp).
fn listens_on(pid: u32, addr: &str) -> bool {
    let Some(port) = addr.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()) else {
        return false;
    };
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    // Columns: sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    let local = format!(":{port:04X}");
    let listening_inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.len() > 9 && cols[1].ends_with(&local) && cols[3] == "0A")
        .map(|cols| format!("socket:[{}]", cols[9]))
        .collect();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|target| listening_inodes.iter().any(|inode| target == Path::new(inode)))
    })
}
