//! End to end on a cgroup v2 host: what cm does with the unified hierarchy. The server detects it; limits show
//! in a container's own /sys/fs/cgroup and hold (an OOM kill reported as such, a fork storm held at the pids
//! limit); the init is born in its cgroup (CLONE_INTO_CGROUP) and joins it where that is switched off; Stats
//! move; the cgroup namespace's root is the container's cgroup; removal leaves no cgroup; a nested
//! --cgroup-parent under a delegated subtree works; a restarted server re-adopts a running container; the BPF
//! device filter enforces docker's allow-list (a disk cannot be read, mknod of a char device works, /dev/null
//! works, CAP_MKNOD is kept).
//!
//! This machine and most CI hosts run cgroup v1, so tests/vm/lane (run by scripts/test) boots a v2-only kernel
//! under QEMU and runs this suite there. Elsewhere it skips itself, saying so, unless
//! CM_E2E_REQUIRE_CGROUP_V2 is set (the lane sets it), then not being on v2 is a failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cm_api::v1 as pb;
use cm_e2e::harness::*;
use cm_e2e::{Registry, trials};
use libtest_mimic::Arguments;
use serde_json::Value;

const REQUIRE_ENV: &str = "CM_E2E_REQUIRE_CGROUP_V2";
/// cm-server's test-only switch (server/src/runtime/clone.rs): clone without CLONE_INTO_CGROUP.
const NO_CLONE_INTO_CGROUP_ENV: &str = "CM_TEST_NO_CLONE_INTO_CGROUP";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

struct World {
    _registry: Registry,
    server: TestServer,
    image: String,
}

fn main() {
    let mut args = Arguments::from_args();
    args.test_threads = args.test_threads.or(Some(2));
    if !cgroup_v2() {
        let why = format!(
            "{CGROUP_ROOT} is not a cgroup v2 (unified) hierarchy here; tests/vm/lane runs this suite under a v2 kernel"
        );
        if std::env::var_os(REQUIRE_ENV).is_some() {
            eprintln!("cgroup_v2: FAILED: {why}, and {REQUIRE_ENV} says it must run");
            std::process::exit(1);
        }
        println!("cgroup_v2: skipping every test: {why}");
        libtest_mimic::run(&args, Vec::new()).exit();
    }
    let world = Arc::new(setup().expect("setting up the registry, the image and the server"));
    let trials = trials![world;
        the_server_detects_cgroup_v2,
        limits_show_in_the_containers_own_cgroup_files_and_the_hosts,
        a_memory_hog_is_oom_killed_reported_with_137_and_in_events,
        a_fork_storm_is_held_at_the_pids_limit,
        the_init_is_cloned_into_its_cgroup_and_joins_it_when_clone_into_cgroup_is_off,
        stats_on_v2_move_as_the_container_works,
        the_cgroup_namespace_shows_the_containers_own_cgroup_as_root,
        removal_leaves_no_cgroup,
        a_nested_cgroup_parent_under_a_delegated_subtree_is_used_and_left_clean,
        a_restarted_server_re_adopts_a_running_container_and_its_cgroup,
        the_device_filter_refuses_a_disk_and_allows_dockers_devices_and_mknod,
    ];
    run_suite(&args, trials, world, |w| &w.server);
}

fn setup() -> Result<World> {
    let (registry, server, image) = busybox_registry_and_server(&[])?;
    Ok(World { _registry: registry, server, image })
}

// ------------------------------------------------------------------------------------------------ helpers

/// The container's cgroup directory on the host.
fn cgroup_dir(s: &TestServer, id: &str) -> PathBuf {
    Path::new(CGROUP_ROOT).join(&s.parent).join(id)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).map(|t| t.trim().to_string()).unwrap_or_else(|e| format!("<{}: {e}>", path.display()))
}

/// The value of `key` in a flat-keyed cgroup file ("max 3").
fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

fn pid_of(s: &TestServer, id: &str) -> Result<i64> {
    s.inspect(id)?["State"]["Pid"].as_i64().filter(|p| *p > 0).context("no pid in inspect")
}

/// The init's monitor.json (written by cm-monitor): how the init was placed in its cgroup.
fn cloned_into_cgroup(s: &TestServer, id: &str) -> Result<bool> {
    let path = s.container_dir(id).join("monitor.json");
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(&path)?).with_context(|| path.display().to_string())?;
    info["cloned_into_cgroup"].as_bool().with_context(|| format!("monitor.json: {info}"))
}

/// One-shot stats of a container, as JSON.
fn stats(s: &TestServer, id: &str) -> Result<Value> {
    let out = s.cli_ok(&["stats", "--no-stream", "--format", "json", id])?;
    serde_json::from_str(out.lines().next().unwrap_or_default()).with_context(|| format!("stats output: {out:?}"))
}

// -------------------------------------------------------------------------------------------------- tests

fn the_server_detects_cgroup_v2(w: &World) -> Result<()> {
    let log = w.server.log();
    ensure!(log.contains("cgroups: cgroup v2 (unified hierarchy at /sys/fs/cgroup)"), "the server's log:\n{log}");
    Ok(())
}

fn limits_show_in_the_containers_own_cgroup_files_and_the_hosts(w: &World) -> Result<()> {
    let s = &w.server;
    let limits = ["-m", "64m", "--cpus", "0.5", "--pids-limit", "20"];
    let files = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/pids.max"];
    let expected = "67108864\n50000 100000\n20\n";
    let mut args = vec!["run", "--rm"];
    args.extend(limits);
    args.extend([w.image.as_str(), "cat"]);
    args.extend(files);
    let inside = s.cli_ok(&args)?;
    ensure!(inside == expected, "limits seen inside the container: {inside:?}");
    let mut args = limits.to_vec();
    args.extend([w.image.as_str(), "sleep", "100"]);
    let id = s.run_detached(&args)?;
    let dir = cgroup_dir(s, &id);
    let host = ["memory.max", "cpu.max", "pids.max"].map(|f| read(&dir.join(f))).join("\n") + "\n";
    // No swap: swap would extend the memory limit (when swap accounting is on at all).
    let swap = dir.join("memory.swap.max");
    let swap = if swap.exists() { read(&swap) } else { "0".into() };
    s.cli_ok(&["rm", "-f", &id])?;
    ensure!(host == expected, "limits in {}: {host:?}", dir.display());
    ensure!(swap == "0", "memory.swap.max: {swap}");
    Ok(())
}

/// Puts 64 MB into /dev/shm (a tmpfs charged to the container's memory; with no swap it cannot be reclaimed).
const MEMORY_HOG: &str = "exec dd if=/dev/zero of=/dev/shm/hog bs=1M count=64";

fn a_memory_hog_is_oom_killed_reported_with_137_and_in_events(w: &World) -> Result<()> {
    let s = &w.server;
    let name = unique("oom");
    // Slow under emulation: more time than other commands get.
    let run = s.client_command(&["run", "--name", &name, "-m", "16m", &w.image, "sh", "-c", MEMORY_HOG]);
    let out = bounded(run, None, Duration::from_secs(120))?;
    ensure!(out.status.code() == Some(137), "the OOM-killed container's client: {}", summary(&out));
    let c = s.inspect(&name)?;
    ensure!(c["State"]["OOMKilled"] == true && c["State"]["ExitCode"] == 137, "inspect State: {:#}", c["State"]);
    let events = runtime().block_on(async {
        let mut client = s.grpc().await?;
        let since = Some(prost_types::Timestamp { seconds: 1, nanos: 0 });
        let request = pb::EventsRequest { since, filters: vec![format!("container={name}")] };
        let mut stream = client.events(request).await?.into_inner();
        let mut events = Vec::new();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .with_context(|| format!("no die event; got {events:?}"))??
                .context("the Events stream ended")?;
            let die = event.action == "die";
            events.push(event);
            if die {
                return anyhow::Ok(events);
            }
        }
    })?;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    ensure!(actions.contains(&"oom"), "no oom event: {actions:?}");
    let die = events.last().expect("die");
    ensure!(die.attributes.get("exitCode").map(String::as_str) == Some("137"), "the die event: {die:?}");
    s.cli_ok(&["rm", &name])?;
    Ok(())
}

fn a_fork_storm_is_held_at_the_pids_limit(w: &World) -> Result<()> {
    let s = &w.server;
    // A shell forking without end under a limit of 10: its forks fail at the limit (busybox sh then gives up),
    // the cgroup counts the refusal, and the container's own shell lives on (exec: it needs no fork).
    let storm = "sh -c 'while :; do sleep 1000 & done' 2>/dev/null; exec sleep 1000";
    let id = s.run_detached(&["--pids-limit", "10", &w.image, "sh", "-c", storm])?;
    let dir = cgroup_dir(s, &id);
    let result = eventually("a fork refused at the pids limit", Duration::from_secs(120), || {
        Ok(counter(&read(&dir.join("pids.events")), "max").unwrap_or(0) >= 1)
    })
    .with_context(|| format!("pids.events: {}", read(&dir.join("pids.events"))))
    .and_then(|()| {
        let current: u64 = read(&dir.join("pids.current")).parse()?;
        ensure!((5..=10).contains(&current), "pids.current under --pids-limit 10: {current}");
        let c = s.inspect(&id)?;
        ensure!(c["State"]["Status"] == "running", "the container did not survive the storm: {:#}", c["State"]);
        Ok(())
    });
    s.cli_ok(&["rm", "-f", &id])?;
    result
}

fn the_init_is_cloned_into_its_cgroup_and_joins_it_when_clone_into_cgroup_is_off(w: &World) -> Result<()> {
    let check = |s: &TestServer, cloned: bool| -> Result<()> {
        let id = s.run_detached(&["--pids-limit", "7", &w.image, "sleep", "100"])?;
        let result = (|| {
            ensure!(cloned_into_cgroup(s, &id)? == cloned, "monitor.json of {id}: cloned_into_cgroup != {cloned}");
            let pid = pid_of(s, &id)?;
            let cgroup = read(Path::new(&format!("/proc/{pid}/cgroup")));
            ensure!(cgroup == format!("0::/{}/{id}", s.parent), "the init's /proc/{pid}/cgroup: {cgroup}");
            // The limit of the cgroup it is in holds for it, and exec'd processes land there too.
            let exec = s.cli_ok(&["exec", &id, "sh", "-c", "cat /sys/fs/cgroup/pids.max /proc/self/cgroup"])?;
            ensure!(exec == "7\n0::/\n", "an exec'd process sees: {exec:?}");
            let procs = read(&cgroup_dir(s, &id).join("cgroup.procs"));
            ensure!(procs.lines().any(|p| p == pid.to_string()), "cgroup.procs: {procs}");
            Ok(())
        })();
        s.cli_ok(&["rm", "-f", &id])?;
        result
    };
    check(&w.server, true).context("with CLONE_INTO_CGROUP")?;
    let joining = TestServer::start_with_env(&[], &[(NO_CLONE_INTO_CGROUP_ENV, "1")])?;
    joining.cli_ok(&["pull", &w.image])?;
    check(&joining, false).context(format!("with {NO_CLONE_INTO_CGROUP_ENV}=1 (the join fallback)"))?;
    joining.leaves_nothing_behind()
}

fn stats_on_v2_move_as_the_container_works(w: &World) -> Result<()> {
    let s = &w.server;
    // Some work, then a pause, again and again; 8 MB kept in /dev/shm (charged to the container's memory).
    let script = "dd if=/dev/zero of=/dev/shm/f bs=1M count=8 2>/dev/null; \
                  while :; do i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 0.1; done";
    let id = s.run_detached(&["-m", "256m", "--pids-limit", "50", &w.image, "sh", "-c", script])?;
    let result = (|| {
        let first = stats(s, &id)?;
        let mut last = first.clone();
        eventually("the CPU time to grow", Duration::from_secs(60), || {
            last = stats(s, &id)?;
            Ok(last["cpu"]["total_ns"].as_u64() > first["cpu"]["total_ns"].as_u64())
        })
        .with_context(|| format!("first {first}\nlast {last}"))?;
        let memory = &last["memory"];
        ensure!(memory["limit_bytes"] == 256u64 << 20, "memory: {memory}");
        ensure!(memory["working_set_bytes"].as_u64() >= Some(8 << 20), "8 MB in /dev/shm: {memory}");
        ensure!(last["pids"]["limit"] == 50 && last["pids"]["current"].as_u64() >= Some(1), "pids: {}", last["pids"]);
        ensure!(last["cpu"]["user_ns"].as_u64() > Some(0), "cpu: {}", last["cpu"]);
        Ok(())
    })();
    s.cli_ok(&["rm", "-f", &id])?;
    result
}

fn the_cgroup_namespace_shows_the_containers_own_cgroup_as_root(w: &World) -> Result<()> {
    let s = &w.server;
    let id = s.run_detached(&["--pids-limit", "9", &w.image, "sleep", "100"])?;
    let result = (|| {
        // Its root is its own cgroup: the limit file at the root is the container's; its mounts are the
        // container's (a cgroup2 mount at /sys/fs/cgroup, rooted at the namespace's root).
        let out = s.cli_ok(&["exec", &id, "cat", "/proc/self/cgroup", "/proc/1/cgroup", "/sys/fs/cgroup/pids.max"])?;
        ensure!(out == "0::/\n0::/\n9\n", "inside the container: {out:?}");
        let mounts = s.cli_ok(&["exec", &id, "grep", " /sys/fs/cgroup ", "/proc/self/mountinfo"])?;
        ensure!(mounts.split_whitespace().nth(3) == Some("/") && mounts.contains("cgroup2"), "mounts: {mounts}");
        let host = read(Path::new(&format!("/proc/{}/cgroup", pid_of(s, &id)?)));
        ensure!(host == format!("0::/{}/{id}", s.parent), "the host's view: {host}");
        Ok(())
    })();
    s.cli_ok(&["rm", "-f", &id])?;
    result
}

fn removal_leaves_no_cgroup(w: &World) -> Result<()> {
    let s = &w.server;
    let id = s.run_detached(&["-m", "32m", &w.image, "sleep", "100"])?;
    ensure!(cgroup_dir(s, &id).is_dir(), "no cgroup for a running container");
    s.cli_ok(&["rm", "-f", &id])?;
    let left = s.remains_of(&id);
    ensure!(left.is_empty() && !cgroup_dir(s, &id).exists(), "rm -f left: {left:?}");
    let id = s.run_detached(&[&w.image, "true"])?;
    s.until_status(&id, "exited")?;
    ensure!(!cgroup_dir(s, &id).exists(), "an exited container keeps its cgroup");
    s.cli_ok(&["rm", &id])?;
    ensure!(s.remains_of(&id).is_empty(), "rm left: {:?}", s.remains_of(&id));
    Ok(())
}

fn a_nested_cgroup_parent_under_a_delegated_subtree_is_used_and_left_clean(w: &World) -> Result<()> {
    // What an administrator delegates: a subtree with the controllers enabled down to it.
    let delegated = Path::new(CGROUP_ROOT).join(unique("cm-e2e-delegated"));
    std::fs::create_dir(&delegated)?;
    let result = (|| {
        for dir in [Path::new(CGROUP_ROOT), &delegated] {
            std::fs::write(dir.join("cgroup.subtree_control"), "+memory +pids +cpu")
                .with_context(|| format!("enabling controllers in {}", dir.display()))?;
        }
        let parent = format!("{}/cm", delegated.file_name().unwrap().to_string_lossy());
        let s = TestServer::start(&["--cgroup-parent", &parent])?;
        s.cli_ok(&["pull", &w.image])?;
        let id = s.run_detached(&["-m", "32m", &w.image, "sleep", "100"])?;
        let dir = delegated.join("cm").join(&id);
        ensure!(
            read(&dir.join("memory.max")) == "33554432",
            "memory.max in {}: {}",
            dir.display(),
            read(&dir.join("memory.max"))
        );
        let cgroup = read(Path::new(&format!("/proc/{}/cgroup", pid_of(&s, &id)?)));
        ensure!(cgroup == format!("0::/{parent}/{id}"), "the init's cgroup: {cgroup}");
        s.leaves_nothing_behind()?;
        drop(s);
        ensure!(!delegated.join("cm").exists(), "cm's own level of the parent is left");
        Ok(())
    })();
    let removed = std::fs::remove_dir(&delegated).with_context(|| format!("removing {}", delegated.display()));
    result.and(removed)
}

fn a_restarted_server_re_adopts_a_running_container_and_its_cgroup(w: &World) -> Result<()> {
    let mut s = TestServer::start(&[])?;
    s.cli_ok(&["pull", &w.image])?;
    let id = s.run_detached(&["--pids-limit", "30", &w.image, "sleep", "100"])?;
    s.kill();
    s.restart()?;
    let ps = s.cli_ok(&["ps"])?;
    ensure!(ps.lines().any(|l| l.starts_with(&id[..12]) && l.contains(" Up ")), "not running after the restart:\n{ps}");
    let after = stats(&s, &id)?;
    ensure!(after["pids"]["limit"] == 30 && after["pids"]["current"].as_u64() >= Some(1), "stats: {after}");
    let exec = s.cli_ok(&["exec", &id, "cat", "/proc/self/cgroup"])?;
    ensure!(exec == "0::/\n", "exec after the restart: {exec:?}");
    s.cli_ok(&["stop", "-t", "1", &id])?;
    ensure!(!cgroup_dir(&s, &id).exists(), "the re-adopted container's cgroup outlived its stop");
    s.leaves_nothing_behind()
}

/// The first disk of this machine, from /proc/partitions: (name, major, minor).
fn a_disk() -> Result<(String, u32, u32)> {
    let partitions = std::fs::read_to_string("/proc/partitions")?;
    partitions
        .lines()
        .skip(2)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && !f[3].starts_with("loop") && !f[3].starts_with("ram"))
                .then(|| Some((f[3].to_string(), f[0].parse().ok()?, f[1].parse().ok()?)))
                .flatten()
        })
        .with_context(|| format!("no disk in /proc/partitions:\n{partitions}"))
}

fn the_device_filter_refuses_a_disk_and_allows_dockers_devices_and_mknod(w: &World) -> Result<()> {
    let s = &w.server;
    let (disk, major, minor) = a_disk()?;
    // Readable here (so a refusal in the container is the filter's)...
    let mut byte = [0u8; 1];
    std::io::Read::read_exact(&mut std::fs::File::open(format!("/dev/{disk}"))?, &mut byte)
        .with_context(|| format!("reading /dev/{disk} on the host"))?;
    // ...but not in a container, though root there may make the node (CAP_MKNOD, "b *:* m").
    let script = format!("mknod /tmp/disk b {major} {minor} && echo MADE; head -c 1 /tmp/disk >/dev/null && echo READ");
    let out = s.cli(&["run", "--rm", &w.image, "sh", "-c", &script])?;
    ensure!(stdout(&out) == "MADE\n", "the disk node {major}:{minor}: {}", summary(&out));
    ensure!(stderr(&out).contains("Operation not permitted"), "not EPERM: {}", summary(&out));
    // A char device outside the list (/dev/mem, 1:1) is refused too; /dev/null's numbers work in a new node.
    let script = "mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem >/dev/null && echo MEM; \
                  mknod /tmp/null c 1 3 && echo hi >/tmp/null && head -c 1 /dev/urandom >/dev/zero && \
                  : >/dev/null && head -c 4 /dev/zero | wc -c && echo OK";
    let out = s.cli(&["run", "--rm", &w.image, "sh", "-c", script])?;
    ensure!(stdout(&out) == "4\nOK\n", "the allowed devices: {}", summary(&out));
    ensure!(stderr(&out).contains("Operation not permitted"), "/dev/mem: {}", summary(&out));
    // Root keeps CAP_MKNOD (bit 27) as on v1.
    let status = s.cli_ok(&["run", "--rm", &w.image, "grep", "CapEff", "/proc/self/status"])?;
    let caps = u64::from_str_radix(status.trim().trim_start_matches("CapEff:").trim(), 16)?;
    ensure!(caps & (1 << 27) != 0, "CapEff without CAP_MKNOD: {status}");
    Ok(())
}
