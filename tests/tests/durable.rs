//! End to end: losing nothing (#17). A full disk under --root (a small tmpfs the test fills), a record the
//! test corrupts, a server killed at chosen points (during a removal, before a --rm container is removed,
//! while an exec's client is attached), a start whose setup fails. Every test has a server of its own (they
//! kill and restart it) and checks that it left nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cm_e2e::harness::*;
use cm_e2e::server::die_with_parent;
use cm_e2e::trials;
use libtest_mimic::Arguments;
use serde_json::Value;

struct World {
    _registry: cm_e2e::Registry,
    server: TestServer,
    image: String,
}

fn main() {
    let mut args = Arguments::from_args();
    args.test_threads = args.test_threads.or(Some(2));
    let (registry, server, image) = busybox_registry_and_server(&[]).expect("setting up the registry and server");
    let world = Arc::new(World { _registry: registry, server, image });
    let trials = trials![world;
        a_full_disk_loses_neither_the_monitor_nor_the_exit_code,
        a_damaged_record_is_listed_kept_running_and_removed_by_rm_f,
        a_removal_interrupted_by_a_kill_is_finished_at_restart,
        auto_remove_containers_that_a_dead_server_left_are_removed_at_restart,
        an_exec_whose_client_and_server_died_is_killed,
        a_start_whose_setup_fails_is_the_start_error_and_leaves_nothing,
        a_machine_without_a_ca_bundle_pulls_and_a_tls_failure_is_an_error,
    ];
    run_suite(&args, trials, world, |w| &w.server);
}

// ------------------------------------------------------------------------------------------------ helpers

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs> {
        let dir = tempfile::Builder::new().prefix("cm-e2e-tmpfs-").tempdir_in("/tmp")?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "cm-e2e"])
            .arg(dir.path())
            .output()?;
        ensure!(out.status.success(), "mount tmpfs: {}", summary(&out));
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the filesystem is full; returns its path.
    fn fill(&self) -> Result<PathBuf> {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 1 << 16];
        loop {
            match std::io::Write::write(&mut file, &chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // Whatever blocks are left go to a second file, byte by byte at the end.
        let mut tail = std::fs::File::create(self.path().join("filler2"))?;
        while std::io::Write::write(&mut tail, &[0u8; 512]).is_ok_and(|n| n > 0) {}
        Ok(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// A container directory's record as JSON.
fn record_on_disk(s: &TestServer, id: &str) -> Result<Value> {
    let bytes = std::fs::read(s.container_dir(id).join("container.json"))?;
    Ok(serde_json::from_slice(&bytes)?)
}

fn server_with_image(w: &World, flags: &[&str]) -> Result<TestServer> {
    let s = TestServer::start(flags)?;
    s.cli_ok(&["pull", &w.image])?;
    Ok(s)
}

// ------------------------------------------------------------------------------------------------ tests

/// Finding 1: with --root full, a container that prints and exits 7 keeps its monitor (no panic), the exit
/// code reaches the server (7, not 255 "the monitor died"), the dropped output is counted in inspect, and
/// once space returns the exit is on disk: a restarted server still says 7.
fn a_full_disk_loses_neither_the_monitor_nor_the_exit_code(w: &World) -> Result<()> {
    let disk = Tmpfs::mount("48m")?;
    let root = disk.path().join("root");
    let flag = tempfile::tempdir()?;
    let mut s = server_with_image(w, &["--root", root.to_str().context("root path")?])?;
    let bind = format!("{}:/flag", flag.path().display());
    // 256 KiB while the disk is full: more than the page the log's last write may still have room in.
    let script =
        "echo before; while [ ! -e /flag/go ]; do sleep 0.1; done; head -c 262144 /dev/zero | tr '\\0' x; exit 7";
    let id = s.run_detached(&["-v", &bind, &w.image, "sh", "-c", script])?;
    eventually("the first line in the log", Duration::from_secs(5), || Ok(s.cli_ok(&["logs", &id])? == "before\n"))?;
    let filler = disk.fill()?;
    std::fs::write(flag.path().join("go"), b"")?;
    let out = bounded(s.client_command(&["wait", &id]), None, Duration::from_secs(20))?;
    ensure!(stdout(&out) == "7\n", "wait with the disk full: {}", summary(&out));
    let c = s.inspect(&id)?;
    ensure!(c["State"]["ExitCode"] == 7 && c["State"]["Error"] == "", "{:#}", c["State"]);
    let dropped = c["State"]["LogDroppedBytes"].as_u64().unwrap_or(0);
    ensure!(dropped > 0 && dropped <= 262144, "LogDroppedBytes {dropped}: {:#}", c["State"]);
    // Space returns: the record the full disk held back is written.
    std::fs::remove_file(&filler)?;
    std::fs::remove_file(disk.path().join("filler2"))?;
    eventually("the exit status on disk", Duration::from_secs(10), || {
        let r = record_on_disk(&s, &id)?;
        Ok(r["state"]["status"] == "Stopped" && r["state"]["exit"]["code"] == 7)
    })?;
    s.restart()?;
    let c = s.inspect(&id)?;
    ensure!(c["State"]["ExitCode"] == 7, "after a restart: {:#}", c["State"]);
    let logs = s.cli_ok(&["logs", &id])?;
    // Whole records only: what the log took of the output, and nothing torn.
    let kept = logs.strip_prefix("before\n").unwrap_or_default();
    ensure!(
        logs.starts_with("before\n") && kept.bytes().all(|b| b == b'x') && kept.len() as u64 + dropped == 262144,
        "the log after the full disk ({dropped} bytes dropped): {:?}",
        logs.chars().take(200).collect::<String>()
    );
    s.leaves_nothing_behind()
}

/// Finding 2: a running container whose container.json is truncated (or garbage) is listed as damaged with
/// what could not be read; its process, monitor, cgroup and veth are kept; rm -f removes all of it.
fn a_damaged_record_is_listed_kept_running_and_removed_by_rm_f(w: &World) -> Result<()> {
    let mut s = server_with_image(w, &[])?;
    let truncated = s.run_detached(&[&w.image, "sleep", "300"])?;
    let garbage = s.run_detached(&[&w.image, "true"])?;
    s.until_status(&garbage, "exited")?;
    s.kill();
    let file = s.container_dir(&truncated).join("container.json");
    let bytes = std::fs::read(&file)?;
    std::fs::write(&file, &bytes[..bytes.len() / 2])?;
    std::fs::write(s.container_dir(&garbage).join("container.json"), b"\x00\xffnot json")?;
    s.restart()?;
    let ps = s.cli_ok(&["ps", "-a"])?;
    for id in [&truncated, &garbage] {
        ensure!(
            ps.lines().any(|l| l.starts_with(&id[..12]) && l.contains("Damaged")),
            "{id} not listed damaged:\n{ps}"
        );
        let c = s.inspect(id)?;
        ensure!(c["State"]["Status"] == "damaged", "{:#}", c["State"]);
        let error = c["State"]["Error"].as_str().unwrap_or_default();
        ensure!(error.contains("container.json"), "inspect does not say what could not be read: {error:?}");
    }
    // Nothing of the running one was torn down by the restart.
    let present = s.remains_of(&truncated);
    for kind in ["cgroup", "veth", "process"] {
        ensure!(present.iter().any(|p| p.starts_with(kind)), "the damaged container lost its {kind}: {present:?}");
    }
    let out = s.cli(&["start", &truncated])?;
    ensure!(!out.status.success() && stderr(&out).contains("damaged"), "start of a damaged one: {}", summary(&out));
    let out = s.cli(&["rm", &truncated])?;
    ensure!(!out.status.success() && stderr(&out).contains("damaged"), "rm without -f: {}", summary(&out));
    s.cli_ok(&["rm", "-f", &truncated, &garbage])?;
    for id in [&truncated, &garbage] {
        let left = s.remains_of(id);
        ensure!(left.is_empty(), "rm -f of a damaged container left: {left:?}");
    }
    s.leaves_nothing_behind()
}

/// Finding 3: a server killed in the middle of a removal (after its tombstone, with the record gone, or
/// while the renamed directory was being deleted) finishes it at the next start.
fn a_removal_interrupted_by_a_kill_is_finished_at_restart(w: &World) -> Result<()> {
    let mut s = server_with_image(w, &[])?;
    let record_gone = s.run_detached(&[&w.image, "sleep", "300"])?;
    let renamed = s.run_detached(&[&w.image, "true"])?;
    s.until_status(&renamed, "exited")?;
    s.kill();
    // As a kill during `rm -f` leaves them: the tombstone written and the record already deleted (the process
    // still runs), and a directory renamed for deletion, half deleted.
    let dir = s.container_dir(&record_gone);
    std::fs::write(dir.join("removing"), b"")?;
    std::fs::remove_file(dir.join("container.json"))?;
    let deleting = s.root().join("containers").join(format!(".deleting-{renamed}"));
    std::fs::rename(s.container_dir(&renamed), &deleting)?;
    std::fs::remove_file(deleting.join("container.json"))?;
    s.restart()?;
    let ps = s.cli_ok(&["ps", "-a", "-q", "--no-trunc"])?;
    ensure!(ps.trim().is_empty(), "listed after the restart: {ps}");
    for id in [&record_gone, &renamed] {
        let left = s.remains_of(id);
        ensure!(left.is_empty(), "the interrupted removal left: {left:?}");
    }
    ensure!(!deleting.exists(), "{} is still there", deleting.display());
    s.leaves_nothing_behind()
}

/// Finding 4: --rm containers whose server died before removing them (one created and never started, one that
/// exited while no server ran) are removed at the next start.
fn auto_remove_containers_that_a_dead_server_left_are_removed_at_restart(w: &World) -> Result<()> {
    let mut s = server_with_image(w, &[])?;
    let created = s.cli_ok(&["create", "--rm", &w.image, "true"])?.trim().to_string();
    let flag = tempfile::tempdir()?;
    let bind = format!("{}:/flag", flag.path().display());
    let script = "while [ ! -e /flag/go ]; do sleep 0.1; done";
    let exited = s.run_detached(&["--rm", "-v", &bind, &w.image, "sh", "-c", script])?;
    s.kill();
    std::fs::write(flag.path().join("go"), b"")?;
    let dir = s.container_dir(&exited).display().to_string();
    eventually("the container to exit", Duration::from_secs(10), || Ok(processes_mentioning(&dir).is_empty()))?;
    s.restart()?;
    for id in [&created, &exited] {
        let left = s.remains_of(id);
        ensure!(left.is_empty(), "a --rm container left after the restart: {left:?}");
    }
    s.leaves_nothing_behind()
}

/// Finding 5: an exec (not detached) whose server and client both died is killed, not left running with no
/// one attached.
fn an_exec_whose_client_and_server_died_is_killed(w: &World) -> Result<()> {
    let mut s = server_with_image(w, &[])?;
    let id = s.run_detached(&[&w.image, "sleep", "300"])?;
    let mut command = s.client_command(&["exec", &id, "sleep", "1234"]);
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut client = die_with_parent(&mut command).spawn()?;
    let running =
        |s: &TestServer| -> Result<bool> { Ok(s.cli_ok(&["exec", &id, "ps", "-o", "args"])?.contains("sleep 1234")) };
    let started = eventually("the exec to run", Duration::from_secs(5), || running(&s));
    if started.is_err() {
        let _ = client.kill();
    }
    started?;
    s.kill();
    let _ = client.kill();
    let _ = client.wait();
    s.restart()?;
    eventually("the orphaned exec to be killed", Duration::from_secs(5), || Ok(!running(&s)?))?;
    s.leaves_nothing_behind()
}

/// Finding 6: a start whose setup fails in the container's init (a bind mount whose source went away) is the
/// Start call's error with the reason, and leaves no process or cgroup.
fn a_start_whose_setup_fails_is_the_start_error_and_leaves_nothing(w: &World) -> Result<()> {
    let s = &w.server;
    let source = tempfile::tempdir()?;
    let bind = format!("{}:/data", source.path().display());
    let id = s.cli_ok(&["create", "-v", &bind, &w.image, "true"])?.trim().to_string();
    let gone = source.path().to_path_buf();
    drop(source);
    ensure!(!gone.exists(), "the bind source is still there");
    let out = s.cli(&["start", &id])?;
    ensure!(!out.status.success(), "start succeeded though the setup failed: {}", summary(&out));
    ensure!(stderr(&out).contains("could not start"), "start does not say why: {}", summary(&out));
    let left: Vec<String> = s.remains_of(&id).into_iter().filter(|r| !r.starts_with("directory")).collect();
    ensure!(left.is_empty(), "the failed start left: {left:?}");
    s.cli_ok(&["rm", &id])?;
    Ok(())
}

/// Finding 8: with no CA bundle (SSL_CERT_FILE and SSL_CERT_DIR name nothing, as on a minimal image), the
/// server says so at start, a plain-HTTP pull works, and a pull from a TLS registry that is not one (a
/// loopback listener answering garbage, reached through an https mirror) fails with an error naming it: no
/// panicked worker, no dropped connection, and the server goes on serving.
fn a_machine_without_a_ca_bundle_pulls_and_a_tls_failure_is_an_error(w: &World) -> Result<()> {
    let garbage = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = garbage.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in garbage.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut &stream, b"this is not TLS\r\n\r\n");
        }
    });
    let mirror = format!("tls.example.test=https://127.0.0.1:{port}");
    let none = [("SSL_CERT_FILE", "/nonexistent/ca.pem"), ("SSL_CERT_DIR", "/nonexistent")];
    let s = TestServer::start_with_env(&["--registry-mirror", &mirror], &none)?;
    ensure!(s.log().contains("no CA certificates on this machine"), "the start should say so: {}", s.log());
    s.cli_ok(&["pull", &w.image])?;
    let out = s.cli(&["pull", "tls.example.test/library/busybox:latest"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && err.contains("tls.example.test (mirror https://127.0.0.1:"), "{}", summary(&out));
    ensure!(!err.contains("h2 protocol error") && !s.log().contains("panicked"), "{err}\n{}", s.log());
    s.cli_ok(&["images"])?;
    s.leaves_nothing_behind()
}
