//! A real cm-server for a test: its own state root and socket, driven through cm-client, grpcurl and the
//! generated gRPC client. Killed and its state removed on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Path of a binary built from this workspace (cm-server, cm-client), beside the test executable's
/// directory (target/<profile>/).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --release --workspace --bins, or scripts/test)",
        path.display()
    );
    path
}

/// Makes a child die with the test process (no registry or server outlives a crashed test run).
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from))
    }
}

/// Servers started by this process, numbering their bridges, subnets and tables.
static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A running cm-server.
pub struct CmServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    /// Extra environment of the server process (e.g. a test-only switch).
    env: Vec<(String, String)>,
}

impl CmServer {
    /// Starts a server with a fresh state root.
    pub fn start() -> Result<CmServer> {
        Self::start_with(&[])
    }

    /// Starts a server with extra command line arguments. Unless they say otherwise, it gets a bridge, a
    /// subnet and an nftables table of its own (see [`CmServer::bridge`]).
    pub fn start_with(extra_args: &[&str]) -> Result<CmServer> {
        Self::start_with_env(extra_args, &[])
    }

    /// [`CmServer::start_with`], with `env` added to the server's environment (also across restarts).
    pub fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Result<CmServer> {
        let dir = tempfile::Builder::new().prefix("cm-e2e-").tempdir_in("/tmp")?;
        let mut extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        for (flag, value) in [
            ("--bridge", format!("cmt{}x{n}", pid % 100_000)),
            ("--subnet", format!("10.{}.{}.0/24", 200 + pid % 50, n % 256)),
            ("--nft-table", format!("cm_e2e_{pid}_{n}")),
        ] {
            if !extra_args.iter().any(|a| a == flag) {
                extra_args.extend([flag.to_string(), value]);
            }
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut server = CmServer { child: None, dir, extra_args, env };
        server.spawn()?;
        Ok(server)
    }

    /// The value of one of the server's flags, if it was given.
    pub fn flag(&self, name: &str) -> Option<String> {
        let position = self.extra_args.iter().position(|a| a == name);
        position.and_then(|i| self.extra_args.get(i + 1)).cloned()
    }

    /// The server's bridge (--bridge).
    pub fn bridge(&self) -> String {
        self.flag("--bridge").unwrap_or_else(|| "cm0".into())
    }

    /// The server's nftables table (--nft-table).
    pub fn nft_table(&self) -> String {
        self.flag("--nft-table").unwrap_or_else(|| "cm".into())
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let mut cmd = Command::new(bin("cm-server"));
        cmd.arg("--listen").arg(self.host());
        // A --root among the extra arguments (a small tmpfs, to fill up) replaces the temporary one.
        if self.flag("--root").is_none() {
            cmd.arg("--root").arg(self.root());
        }
        cmd.arg("--log-level")
            .arg("debug")
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = die_with_parent(&mut cmd).spawn().context("spawning cm-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        // The socket listens before the server is set up (it binds its addresses first), so wait for an
        // answered call.
        while !self.answers() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                bail!("cm-server exited with {status} before listening:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!("cm-server did not listen within 20 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Whether the server answers a trivial call (ListImages) within a second.
    fn answers(&self) -> bool {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return false };
        runtime.block_on(async {
            let call = async {
                let mut client = self.grpc().await?;
                client.list_images(cm_api::v1::ListImagesRequest::default()).await?;
                anyhow::Ok(())
            };
            matches!(tokio::time::timeout(Duration::from_secs(1), call).await, Ok(Ok(())))
        })
    }

    /// The server's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("cm.sock")
    }

    /// The --host / --listen address.
    pub fn host(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    /// The state root (--root).
    pub fn root(&self) -> PathBuf {
        self.flag("--root").map_or_else(|| self.dir.path().join("root"), PathBuf::from)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("server not running")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)?;
        Ok(child.wait()?)
    }

    /// Starts the server again on the same root and socket.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// A cm-client command aimed at this server.
    pub fn client_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("cm-client"));
        cmd.arg("--host").arg(self.host()).args(args).stdin(Stdio::null());
        cmd
    }

    /// Runs cm-client with `args`.
    pub fn client(&self, args: &[&str]) -> Output {
        self.client_command(args).output().expect("running cm-client")
    }

    /// Runs cm-client and returns its stdout, failing with both streams if it exits non-zero.
    pub fn client_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.client(args);
        check(&out, &format!("cm-client {}", args.join(" ")))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs grpcurl against this server (plaintext over the unix socket).
    pub fn grpcurl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("grpcurl");
        cmd.arg("-plaintext").arg("-unix");
        // grpcurl wants: [flags] address [list|describe|method]; flags (-d) must come before the address.
        let (flags, rest): (Vec<&str>, Vec<&str>) = split_flags(args);
        cmd.args(flags).arg(self.socket()).args(rest).stdin(Stdio::null());
        cmd.output().expect("running grpcurl (scripts/install-deps installs it)")
    }

    /// A connected gRPC client (the generated stubs), for streaming tests.
    pub async fn grpc(
        &self,
    ) -> Result<cm_api::v1::container_service_client::ContainerServiceClient<tonic::transport::Channel>> {
        let path = self.socket();
        let channel = tonic::transport::Endpoint::from_static("http://cm.sock")
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move { tokio::net::UnixStream::connect(path).await.map(hyper_util::rt::TokioIo::new) }
            }))
            .await?;
        Ok(cm_api::v1::container_service_client::ContainerServiceClient::new(channel))
    }
}

/// Generated CRI clients on one connection.
pub struct CriClients {
    /// runtime.v1.RuntimeService.
    pub runtime: cm_api::cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    /// runtime.v1.ImageService.
    pub images: cm_api::cri::image_service_client::ImageServiceClient<tonic::transport::Channel>,
}

impl CmServer {
    /// The CRI socket (the server's --cri-listen unix:PATH).
    pub fn cri_socket(&self) -> PathBuf {
        let flag = self.flag("--cri-listen").unwrap_or_default();
        PathBuf::from(flag.strip_prefix("unix:").unwrap_or(&flag).trim_start_matches("//").to_string())
    }

    /// The CRI runtime and image service clients (the generated stubs) on the CRI socket.
    pub async fn cri(&self) -> Result<CriClients> {
        let path = self.cri_socket();
        let channel = tonic::transport::Endpoint::from_static("http://cri.sock")
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move { tokio::net::UnixStream::connect(path).await.map(hyper_util::rt::TokioIo::new) }
            }))
            .await?;
        Ok(CriClients {
            runtime: cm_api::cri::runtime_service_client::RuntimeServiceClient::new(channel.clone()),
            images: cm_api::cri::image_service_client::ImageServiceClient::new(channel),
        })
    }
}

fn split_flags<'a>(args: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut flags = Vec::new();
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') {
        flags.push(args[i]);
        if matches!(args[i], "-d" | "-H" | "-max-time" | "-format") && i + 1 < args.len() {
            flags.push(args[i + 1]);
            i += 1;
        }
        i += 1;
    }
    (flags, args[i..].to_vec())
}

/// Fails with the command's output when it did not exit 0.
pub fn check(out: &Output, what: &str) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl CmServer {
    /// The --cgroup-parent this server was started with ("cm" by default).
    fn cgroup_parent(&self) -> String {
        self.flag("--cgroup-parent").unwrap_or_else(|| "cm".into())
    }

    /// Kills what its containers left running (their monitors outlive the server by design) and removes
    /// their cgroups, so a failed or interrupted test leaves nothing on the machine.
    fn remove_leftovers(&self) {
        let root = self.root().display().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.starts_with(&bin("cm-monitor").display().to_string())
                && cmdline.contains(&root)
                && let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>()
            {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        let ids: Vec<String> = std::fs::read_dir(self.root().join("containers"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let parent = self.cgroup_parent();
        // v1: one hierarchy per controller directory; v2: /sys/fs/cgroup itself.
        for hierarchy in crate::harness::hierarchies() {
            for id in &ids {
                let dir = hierarchy.join(&parent).join(id);
                for _ in 0..50 {
                    if !dir.exists() || std::fs::remove_dir(&dir).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = std::fs::remove_dir(hierarchy.join(&parent));
        }
        // Pods' namespace files are bind mounts that outlive the server by design (a failed test leaves them).
        for pod in std::fs::read_dir(self.root().join("pods")).into_iter().flatten().flatten() {
            for kind in ["net", "ipc", "uts", "pid"] {
                let file = pod.path().join("ns").join(kind);
                if file.exists() {
                    let _ = nix::mount::umount2(&file, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
        // The bridge and the table outlive a server by design (running containers keep their network).
        if self.bridge() != "none" {
            let _ = Command::new("ip").args(["link", "del", &self.bridge()]).stderr(Stdio::null()).status();
            let table = self.nft_table();
            let script = format!("table ip {table} {{}}\ndelete table ip {table}\n");
            let _ = run_with_input("nft", &["-f", "-"], script.as_bytes());
        }
    }
}

impl Drop for CmServer {
    fn drop(&mut self) {
        self.kill();
        self.remove_leftovers();
    }
}

/// Runs `program args` with `input` on its stdin; its output.
pub fn run_with_input(program: &str, args: &[&str], input: &[u8]) -> Result<Output> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    child.stdin.take().expect("piped").write_all(input)?;
    Ok(child.wait_with_output()?)
}
