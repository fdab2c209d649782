//! The harness the end-to-end suites share: a [`TestServer`] (a [`CmServer`] with a cgroup parent of its own,
//! driven through cm-client with every call bounded in time, and able to prove it left nothing behind), and
//! small helpers to run commands, wait for conditions and look at what is on the host.

#![allow(missing_docs)]

use std::io::{Read, Write};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::server::{CmServer, die_with_parent};
use crate::{Registry, fixtures, push_image};

/// How long one cm-client call may take before the test calls it hung.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

static SERVERS: AtomicUsize = AtomicUsize::new(0);

/// A cm-server with a cgroup parent of its own; its containers are force-removed when it is dropped.
pub struct TestServer {
    server: CmServer,
    /// Its --cgroup-parent.
    pub parent: String,
}

impl Deref for TestServer {
    type Target = CmServer;
    fn deref(&self) -> &CmServer {
        &self.server
    }
}

impl DerefMut for TestServer {
    fn deref_mut(&mut self) -> &mut CmServer {
        &mut self.server
    }
}

impl TestServer {
    pub fn start(extra: &[&str]) -> Result<TestServer> {
        Self::start_with_env(extra, &[])
    }

    /// [`TestServer::start`] with `env` added to the server's environment. A --cgroup-parent in `extra` is
    /// used instead of the server's own one.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Result<TestServer> {
        let given = extra.iter().position(|a| *a == "--cgroup-parent").and_then(|i| extra.get(i + 1));
        if let Some(parent) = given {
            return Ok(TestServer { server: CmServer::start_with_env(extra, env)?, parent: parent.to_string() });
        }
        let parent = format!("cm-e2e-{}-{}", std::process::id(), SERVERS.fetch_add(1, Ordering::Relaxed));
        let mut args = vec!["--cgroup-parent", parent.as_str()];
        args.extend_from_slice(extra);
        Ok(TestServer { server: CmServer::start_with_env(&args, env)?, parent })
    }

    /// Runs cm-client, failing (instead of blocking) when it takes longer than CLIENT_TIMEOUT.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        bounded(self.client_command(args), None, CLIENT_TIMEOUT)
    }

    /// Runs cm-client with `input` on its stdin (then EOF).
    pub fn cli_stdin(&self, args: &[&str], input: &[u8]) -> Result<Output> {
        bounded(self.client_command(args), Some(input), CLIENT_TIMEOUT)
    }

    /// Runs cm-client and returns its stdout, failing with both streams if it exits non-zero.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        crate::server::check(&out, &format!("cm-client {}", args.join(" ")))?;
        Ok(stdout(&out))
    }

    /// `inspect` of one container: its JSON object.
    pub fn inspect(&self, container: &str) -> Result<Value> {
        let out = self.cli_ok(&["inspect", container])?;
        let json: Value = serde_json::from_str(&out).with_context(|| format!("inspect output: {out}"))?;
        Ok(json[0].clone())
    }

    /// Waits (bounded) until the container is in `status` ("running", "exited"); returns its inspect.
    pub fn until_status(&self, container: &str, status: &str) -> Result<Value> {
        // A container being created by another client may not exist yet.
        let mut last = Err(anyhow::anyhow!("not inspected"));
        eventually(&format!("{container} to be {status}"), Duration::from_secs(10), || {
            last = self.inspect(container);
            Ok(last.as_ref().is_ok_and(|c| c["State"]["Status"] == status))
        })
        .with_context(|| match &last {
            Ok(c) => format!("last inspect: {c:#}"),
            Err(e) => format!("last inspect: {e:#}"),
        })?;
        last
    }

    /// `run -d`: the id it printed.
    pub fn run_detached(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["run", "-d"];
        full.extend_from_slice(args);
        let id = self.cli_ok(&full)?.trim().to_string();
        ensure!(is_full_id(&id), "run -d printed {id:?}, not a 64-hex id");
        Ok(id)
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root().join("containers").join(id)
    }

    /// Force-removes every container of this server.
    pub fn remove_all(&self) -> Result<()> {
        let ids = self.cli_ok(&["ps", "-a", "-q", "--no-trunc"])?;
        for id in ids.split_whitespace() {
            let out = self.cli(&["rm", "-f", id])?;
            // A --rm container that exited as the suite ended may be gone by the time we get to it.
            if !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("no such container") {
                crate::server::check(&out, &format!("cm-client rm -f {id}"))?;
            }
        }
        Ok(())
    }

    /// Removes every container, then checks that nothing of them is left: no container directories, nothing in
    /// the server's cgroup parent, no mounts of container directories, no monitor processes.
    pub fn leaves_nothing_behind(&self) -> Result<()> {
        self.remove_all()?;
        let dirs = entries(&self.root().join("containers"));
        ensure!(dirs.is_empty(), "container directories left: {dirs:?}");
        let root = self.root().join("containers").display().to_string();
        let cgroups = || -> Vec<PathBuf> {
            hierarchies()
                .into_iter()
                .flat_map(|h| std::fs::read_dir(h.join(&self.parent)).into_iter().flatten().flatten())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        };
        let ports = || entries(&Path::new("/sys/class/net").join(self.bridge()).join("brif"));
        eventually("cgroups, mounts, monitors and veths to go", Duration::from_secs(5), || {
            Ok(cgroups().is_empty()
                && mounts_mentioning(&root).is_empty()
                && processes_mentioning(&root).is_empty()
                && ports().is_empty())
        })
        .with_context(|| {
            format!(
                "left behind: cgroups {:?}; mounts {:?}; processes {:?}; veths on the bridge {:?}",
                cgroups(),
                mounts_mentioning(&root),
                processes_mentioning(&root),
                ports()
            )
        })?;
        // Pods (the CRI): no pod directory and none of their namespace files still mounted.
        let pods = self.root().join("pods");
        let left = entries(&pods);
        ensure!(left.is_empty(), "pod directories left: {left:?}");
        let ns_mounts = mounts_mentioning(&pods.display().to_string());
        ensure!(ns_mounts.is_empty(), "pod namespace mounts left: {ns_mounts:?}");
        let forwards = published_rules(&self.nft_table())?;
        ensure!(forwards.is_empty(), "port forwards left in table {}: {forwards:?}", self.nft_table());
        Ok(())
    }

    /// What is left of container `id` on the host (empty when nothing).
    pub fn remains_of(&self, id: &str) -> Vec<String> {
        let mut left = Vec::new();
        if self.container_dir(id).exists() {
            left.push(format!("directory {}", self.container_dir(id).display()));
        }
        for h in hierarchies() {
            let dir = h.join(&self.parent).join(id);
            if dir.exists() {
                left.push(format!("cgroup {}", dir.display()));
            }
        }
        let veth = format!("cm-{}", &id[..12.min(id.len())]);
        if Path::new("/sys/class/net").join(&veth).exists() {
            left.push(format!("veth {veth}"));
        }
        left.extend(mounts_mentioning(id).into_iter().map(|m| format!("mount {m}")));
        left.extend(processes_mentioning(id).into_iter().map(|p| format!("process {p}")));
        left
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.remove_all();
    }
}

/// The start most suites share: a registry with the busybox fixture pushed as `test/busybox:latest`, and a
/// [`TestServer`] started with `server_flags` that has pulled it. Returns the registry, the server and the
/// image's reference.
pub fn busybox_registry_and_server(server_flags: &[&str]) -> Result<(Registry, TestServer, String)> {
    let registry = Registry::start()?;
    push_image(&registry.addr(), "test/busybox", "latest", &fixtures::busybox_image())?;
    let image = format!("{}/test/busybox:latest", registry.addr());
    let server = TestServer::start(server_flags)?;
    server.cli_ok(&["pull", &image])?;
    Ok((registry, server, image))
}

/// Runs `command` to its end, with `input` on stdin (else /dev/null), killing it after `limit`.
pub fn bounded(mut command: Command, input: Option<&[u8]>, limit: Duration) -> Result<Output> {
    let what = describe(&command);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = die_with_parent(&mut command).spawn().with_context(|| format!("spawning {what}"))?;
    if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output { status, stdout, stderr }),
        None => bail!(
            "{what} hung: not finished after {limit:?} (killed); stdout so far:\n{}\nstderr so far:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// "cm-client run -d IMAGE ..." (without --host).
pub fn describe(command: &Command) -> String {
    let program = Path::new(command.get_program()).file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    if args.first().is_some_and(|a| a == "--host") {
        args.drain(..2.min(args.len()));
    }
    format!("{program} {}", args.join(" "))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// "exit code 3; stdout: ...; stderr: ..." for failure messages.
pub fn summary(out: &Output) -> String {
    format!("{}; stdout: {:?}; stderr: {:?}", out.status, stdout(out), stderr(out))
}

pub fn is_full_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

pub fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Waits (bounded) for a condition the server reaches asynchronously.
pub fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !condition()? {
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A tokio runtime for one test's async part: two workers, so a spawned task (a reader of a 200 MB stream, a
/// waiter) runs on while the test's own future blocks or waits.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// Whether this host's /sys/fs/cgroup is the unified (v2) hierarchy.
pub fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The cgroup hierarchies a container's cgroup can be in: /sys/fs/cgroup itself on v2, each controller
/// directory (and the hybrid unified one) on v1.
pub fn hierarchies() -> Vec<PathBuf> {
    let root = PathBuf::from("/sys/fs/cgroup");
    if cgroup_v2() {
        return vec![root];
    }
    let mut dirs: Vec<PathBuf> = entries(&root).into_iter().map(|e| root.join(e)).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

/// Mount points (from /proc/self/mountinfo) whose line mentions `needle`.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(|l| l.split_whitespace().nth(4).unwrap_or(l).to_string())
        .collect()
}

/// "PID cmdline" of every process (but this one) whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    entries(Path::new("/proc"))
        .into_iter()
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()) && *pid != me)
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(needle).then(|| format!("{pid} {}", cmdline.trim()))
        })
        .collect()
}

/// A unique name for a container of this test run.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The DNAT rules in chain `published` of cm's nftables table `table` (empty when there is no table).
pub fn published_rules(table: &str) -> Result<Vec<String>> {
    let out = Command::new("nft").args(["list", "chain", "ip", table, "published"]).output()?;
    if !out.status.success() {
        return Ok(Vec::new());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("dnat"))
        .map(|l| l.trim().to_string())
        .collect())
}

/// Runs a suite's trials, then makes its shared server remove every container and checks it left nothing
/// behind (a leak fails the run even when every trial passed); exits with the result.
pub fn run_suite<W>(
    args: &libtest_mimic::Arguments,
    trials: Vec<libtest_mimic::Trial>,
    world: std::sync::Arc<W>,
    server: impl Fn(&W) -> &TestServer,
) -> ! {
    let conclusion = libtest_mimic::run(args, trials);
    // Whatever the tests left running, the shared server must clean up completely when asked to.
    let leaks = if args.list { Ok(()) } else { server(&world).leaves_nothing_behind() };
    drop(world);
    if let Err(e) = &leaks {
        eprintln!("\nthe shared server left something behind after removing every container: {e:#}");
    }
    if leaks.is_err() && !conclusion.has_failed() {
        std::process::exit(101);
    }
    conclusion.exit();
}
