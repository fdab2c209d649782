//! End to end: what keeps a container in (#11). seccomp (docker's default profile, unconfined, a custom profile,
//! no-new-privileges, the same filter for exec'd processes), a session keyring not shared with the host, exec'd
//! processes unreachable through /proc before they exec and the monitor binary untouchable, the container's own
//! /dev/null as stdin, and no way from the bridge to the host's loopback. A small C probe (security_probe.c),
//! built static here with gcc, is bind-mounted into the containers to make the calls busybox cannot.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use cm_e2e::Registry;
use cm_e2e::harness::*;
use cm_e2e::server::bin;
use cm_e2e::trials;
use libtest_mimic::Arguments;

struct World {
    _registry: Registry,
    server: TestServer,
    image: String,
    /// Holds `probe` (mounted at /p) and profiles.
    dir: tempfile::TempDir,
    /// A key the suite put in its session keyring before it started the server (so the server shares it).
    key: Key,
}

/// A "user" key in the session keyring, invalidated when dropped.
struct Key {
    description: String,
    id: i64,
}

const KEY_SPEC_SESSION_KEYRING: i64 = -3;
const KEYCTL_INVALIDATE: i64 = 21;

impl Key {
    fn add(description: String) -> Result<Key> {
        let (kind, payload) = (c"user", b"cm-secret");
        let desc = std::ffi::CString::new(description.clone())?;
        // SAFETY: add_key with valid strings and a payload of the given length.
        let id = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_add_key,
                kind.as_ptr(),
                desc.as_ptr(),
                payload.as_ptr(),
                payload.len(),
                KEY_SPEC_SESSION_KEYRING,
            )
        };
        ensure!(id > 0, "add_key: {}", std::io::Error::last_os_error());
        Ok(Key { description, id })
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: keyctl on the key we added.
        unsafe { nix::libc::syscall(nix::libc::SYS_keyctl, KEYCTL_INVALIDATE, self.id) };
    }
}

fn setup() -> Result<World> {
    let dir = tempfile::tempdir()?;
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/security_probe.c");
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.path().join("probe"))
        .arg(source)
        .output()
        .context("running gcc")?;
    ensure!(out.status.success(), "building the probe: {}", summary(&out));
    let key = Key::add(unique("cm-e2e-key"))?;
    let (registry, server, image) = busybox_registry_and_server(&[])?;
    Ok(World { _registry: registry, server, image, dir, key })
}

fn main() {
    let mut args = Arguments::from_args();
    args.test_threads = args.test_threads.or(Some(2));
    let world = Arc::new(setup().expect("setting up the probe, the registry, the image and the server"));
    let trials = trials![world;
        the_default_seccomp_profile_refuses_what_docker_refuses,
        unconfined_a_custom_profile_and_no_new_privileges,
        bad_security_options_are_refused_clearly,
        the_session_keyring_is_not_the_hosts,
        the_hosts_dev_null_is_not_the_containers_stdin,
        exec_children_are_unreachable_and_the_monitor_binary_untouched,
        a_bridged_container_cannot_reach_the_hosts_loopback,
    ];
    run_suite(&args, trials, world, |w| &w.server);
}

// ------------------------------------------------------------------------------------------------ helpers

impl World {
    /// `run --rm` with the probe mounted at /p, then `flags`, the image and `command`; its stdout.
    fn run(&self, flags: &[&str], command: &[&str]) -> Result<String> {
        let mount = format!("{}:/p:ro", self.dir.path().display());
        let mut args = vec!["run", "--rm", "-v", &mount];
        args.extend_from_slice(flags);
        args.push(&self.image);
        args.extend_from_slice(command);
        self.server.cli_ok(&args)
    }

    fn probe_mount(&self) -> String {
        format!("{}:/p:ro", self.dir.path().display())
    }
}

/// The lines of `text` that start with `key`, e.g. "Seccomp:".
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

// -------------------------------------------------------------------------------------------------- tests

fn the_default_seccomp_profile_refuses_what_docker_refuses(w: &World) -> Result<()> {
    let script = "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; /p/probe syscalls; \
                  unshare -U -r true 2>/dev/null; echo unshare-U-r=$?";
    let out = w.run(&[], &["sh", "-c", script])?;
    ensure!(field(&out, "Seccomp:") == Some("2"), "seccomp should be in filter mode (2): {out}");
    ensure!(field(&out, "NoNewPrivs:") == Some("0"), "no_new_privs is off by default: {out}");
    for call in ["keyctl", "add_key", "request_key", "perf_event_open", "userfaultfd", "io_uring_setup", "unshare_user"]
    {
        ensure!(out.contains(&format!("{call}=EPERM\n")), "{call} should fail with EPERM: {out}");
    }
    ensure!(out.contains("getpid=ok\n"), "allowed calls work: {out}");
    ensure!(!out.contains("unshare-U-r=0"), "unshare -U -r must fail: {out}");

    // Exec'd processes get the same filter.
    let s = &w.server;
    let mount = w.probe_mount();
    let id = s.run_detached(&["-v", &mount, &w.image, "sleep", "60"])?;
    let status = s.cli_ok(&["exec", &id, "grep", "^Seccomp:", "/proc/self/status"])?;
    let calls = s.cli_ok(&["exec", &id, "/p/probe", "syscalls"])?;
    s.cli_ok(&["rm", "-f", &id])?;
    ensure!(field(&status, "Seccomp:") == Some("2"), "exec: {status}");
    ensure!(calls.contains("keyctl=EPERM\n") && calls.contains("unshare_user=EPERM\n"), "exec: {calls}");
    Ok(())
}

fn unconfined_a_custom_profile_and_no_new_privileges(w: &World) -> Result<()> {
    let status = "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status";
    let out =
        w.run(&["--security-opt", "seccomp=unconfined"], &["sh", "-c", &format!("{status}; /p/probe syscalls")])?;
    ensure!(field(&out, "Seccomp:") == Some("0"), "unconfined has no filter: {out}");
    ensure!(out.contains("keyctl=ok\n"), "unconfined allows keyctl: {out}");

    let profile = w.dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )?;
    let opt = format!("seccomp={}", profile.display());
    let script = format!("{status}; mkdir /tmp/d 2>&1; echo mkdir=$?; touch /tmp/f; echo touch=$?");
    let out = w.run(&["--security-opt", &opt], &["sh", "-c", &script])?;
    ensure!(field(&out, "Seccomp:") == Some("2"), "{out}");
    ensure!(out.contains("Operation not permitted") && out.contains("mkdir=1"), "mkdir should be refused: {out}");
    ensure!(out.contains("touch=0"), "everything else is allowed: {out}");

    let out = w.run(&["--security-opt", "no-new-privileges"], &["sh", "-c", status])?;
    ensure!(field(&out, "NoNewPrivs:") == Some("1") && field(&out, "Seccomp:") == Some("2"), "{out}");
    // Exec'd processes too, and inspect says what the container has.
    let s = &w.server;
    let id =
        s.run_detached(&["--security-opt", "no-new-privileges", "--security-opt", &opt, &w.image, "sleep", "60"])?;
    let exec = s.cli_ok(&["exec", &id, "sh", "-c", &format!("{status}; mkdir /tmp/e 2>/dev/null; echo mkdir=$?")])?;
    let inspect = s.inspect(&id)?;
    s.cli_ok(&["rm", "-f", &id])?;
    ensure!(field(&exec, "NoNewPrivs:") == Some("1") && exec.contains("mkdir=1"), "exec: {exec}");
    let opts = &inspect["HostConfig"]["SecurityOpt"];
    ensure!(*opts == serde_json::json!(["seccomp=<profile>", "no-new-privileges"]), "inspect: {opts}");
    Ok(())
}

fn bad_security_options_are_refused_clearly(w: &World) -> Result<()> {
    let s = &w.server;
    let bad = w.dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_FLY"}]}"#,
    )?;
    let name = unique("bad-profile");
    let opt = format!("seccomp={}", bad.display());
    let out = s.cli(&["run", "--rm", "--name", &name, "--security-opt", &opt, &w.image, "true"])?;
    ensure!(!out.status.success(), "a bad profile must be refused");
    ensure!(stderr(&out).contains(r#"action "SCMP_ACT_FLY" is not supported"#), "{}", summary(&out));
    let out = s.cli(&["run", "--rm", "--security-opt", "apparmor=unconfined", &w.image, "true"])?;
    ensure!(!out.status.success() && stderr(&out).contains("apparmor=unconfined"), "{}", summary(&out));
    let out = s.cli(&["run", "--rm", "--security-opt", "seccomp=/no/such/profile.json", &w.image, "true"])?;
    ensure!(!out.status.success() && stderr(&out).contains("/no/such/profile.json"), "{}", summary(&out));
    ensure!(!s.cli(&["inspect", &name])?.status.success(), "no container was created");
    Ok(())
}

fn the_session_keyring_is_not_the_hosts(w: &World) -> Result<()> {
    let desc = &w.key.description;
    let host = std::fs::read_to_string("/proc/keys")?;
    ensure!(host.contains(desc.as_str()), "the host's /proc/keys lists the key the suite added");
    // Without seccomp, so that only the keyring keeps the key out of reach.
    let script = format!("/p/probe key {desc}; grep -c {desc} /proc/keys; true");
    let out = w.run(&["--security-opt", "seccomp=unconfined"], &["sh", "-c", &script])?;
    let mut lines = out.lines();
    ensure!(lines.next() == Some("ENOKEY"), "the host's session key must not be found from the container: {out}");
    ensure!(lines.next() == Some("0"), "the container's /proc/keys must not list it: {out}");
    // With the default profile keyctl itself is refused; the exec'd processes get a fresh keyring too.
    let out = w.run(&[], &["/p/probe", "key", desc])?;
    ensure!(out.trim() == "EPERM", "{out}");
    let s = &w.server;
    let mount = w.probe_mount();
    let id = s.run_detached(&["--security-opt", "seccomp=unconfined", "-v", &mount, &w.image, "sleep", "60"])?;
    let exec = s.cli_ok(&["exec", &id, "/p/probe", "key", desc]);
    s.cli_ok(&["rm", "-f", &id])?;
    ensure!(exec?.trim() == "ENOKEY", "exec'd processes get a fresh session keyring too");
    Ok(())
}

fn the_hosts_dev_null_is_not_the_containers_stdin(w: &World) -> Result<()> {
    let before = std::fs::metadata("/dev/null")?;
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = w.run(&[], &["sh", "-c", "touch /proc/self/fd/0 && chmod 600 /proc/self/fd/0 && echo touched"])?;
    let after = std::fs::metadata("/dev/null")?;
    ensure!(out.trim() == "touched", "{out}");
    ensure!(
        (before.mtime(), before.mtime_nsec(), before.mode()) == (after.mtime(), after.mtime_nsec(), after.mode()),
        "the host's /dev/null changed: mtime {}.{} -> {}.{}, mode {:o} -> {:o}",
        before.mtime(),
        before.mtime_nsec(),
        after.mtime(),
        after.mtime_nsec(),
        before.mode(),
        after.mode()
    );
    Ok(())
}

fn exec_children_are_unreachable_and_the_monitor_binary_untouched(w: &World) -> Result<()> {
    let s = &w.server;
    let monitor: PathBuf = bin("cm-monitor");
    let before = std::fs::metadata(&monitor)?;
    let mount = w.probe_mount();
    // The scanner runs as root with docker's capabilities (CAP_SYS_PTRACE is not among them), as an attacker.
    let id = s.run_detached(&["-v", &mount, &w.image, "/p/probe", "scan", "/tmp/stop"])?;
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..250 {
                    if let Err(e) = s.cli_ok(&["exec", &id, "true"]) {
                        failures.lock().unwrap().push(format!("{e:#}"));
                    }
                }
            });
        }
    });
    s.cli_ok(&["exec", &id, "touch", "/tmp/stop"])?;
    s.until_status(&id, "exited")?;
    let logs = s.cli_ok(&["logs", &id])?;
    s.cli_ok(&["rm", "-f", &id])?;
    let failures = failures.into_inner().unwrap();
    ensure!(failures.is_empty(), "{} execs failed, e.g. {}", failures.len(), failures[0]);
    ensure!(logs.contains("scanned "), "the scanner did not finish: {logs}");
    if logs.contains("LEAK") {
        bail!(
            "a container process reached a host file through /proc: {}",
            logs.lines().take(5).collect::<Vec<_>>().join("; ")
        );
    }
    let after = std::fs::metadata(&monitor)?;
    ensure!(
        (before.ctime(), before.ctime_nsec(), before.mode()) == (after.ctime(), after.ctime_nsec(), after.mode()),
        "the host's cm-monitor was changed"
    );
    Ok(())
}

/// The bridge's own address (the containers' gateway), from the host's interfaces.
fn bridge_address(bridge: &str) -> Result<Ipv4Addr> {
    for ifa in nix::ifaddrs::getifaddrs()? {
        if ifa.interface_name == bridge
            && let Some(addr) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in())
        {
            return Ok(addr.ip());
        }
    }
    bail!("bridge {bridge} has no IPv4 address")
}

fn a_bridged_container_cannot_reach_the_hosts_loopback(w: &World) -> Result<()> {
    let s = &w.server;
    // A service on the host's loopback only, as cm-server's own TCP listener would be.
    let service = TcpListener::bind("127.0.0.1:0")?;
    let port = service.local_addr()?.port().to_string();
    let bridge = s.bridge();
    let mac = std::fs::read_to_string(format!("/sys/class/net/{bridge}/address"))?.trim().to_string();
    let gateway = bridge_address(&bridge)?.to_string();
    // The probe sends a SYN with a raw socket (the default CAP_NET_RAW) to the gateway's MAC, addressed to
    // 127.0.0.1. The same probe to the gateway's own address gets the host's RST: the probe works.
    let script = format!("/p/probe syn 127.0.0.1 {port} {mac}; /p/probe syn {gateway} {port} {mac}");
    let out = w.run(&[], &["sh", "-c", &script])?;
    let mut lines = out.lines();
    ensure!(lines.next() == Some("no answer"), "the host's 127.0.0.1:{port} answered a container: {out}");
    let control = lines.next().unwrap_or_default();
    ensure!(control.starts_with("answered") && control.contains("RST"), "the probe got no answer at all: {out}");
    drop(service);
    Ok(())
}
