//! End to end: running containers through cm-client (and the generated gRPC client where the CLI cannot say
//! it): isolation, exit codes, stdio, a real terminal, cgroup limits, errors, the lifecycle, logs, parallel
//! runs, cleanup and re-adoption after a server restart. One registry, one pushed busybox image and one shared
//! server serve the whole binary; tests that count containers, change server flags or restart the server get
//! their own. Every server gets its own cgroup parent, so what a test leaves behind is its own and checkable.

use std::collections::HashSet;
use std::io::Read;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use cm_api::v1 as pb;
use cm_e2e::harness::*;
use cm_e2e::pty::PtyChild;
use cm_e2e::server::die_with_parent;
use cm_e2e::trials;
use cm_e2e::{Registry, fixtures, push_image};
use libtest_mimic::Arguments;
use serde_json::Value;

/// The registry, the image reference every test runs, and the shared server (which has pulled it).
struct World {
    registry: Registry,
    server: TestServer,
    image: String,
}

impl World {
    fn reference(&self, name: &str) -> String {
        format!("{}/{name}", self.registry.addr())
    }
}

fn setup() -> Result<World> {
    let registry = Registry::start()?;
    let busybox = fixtures::busybox_image();
    push_image(&registry.addr(), "test/busybox", "latest", &busybox)?;
    // The same image under a name no server pulls in setup: `run` must pull it itself.
    push_image(&registry.addr(), "test/lazy", "latest", &busybox)?;
    let image = format!("{}/test/busybox:latest", registry.addr());
    let server = TestServer::start(&[])?;
    server.cli_ok(&["pull", &image])?;
    Ok(World { registry, server, image })
}

fn main() {
    let mut args = Arguments::from_args();
    // The tests mostly wait on containers, not on the CPU.
    args.test_threads = args.test_threads.or(Some(4));
    let world = Arc::new(setup().expect("setting up the registry, the image and the server"));
    let trials = trials![world;
        hostname_is_the_short_id_by_default_and_the_hostname_flag_sets_it,
        pid_namespace_shows_the_command_as_pid_1_and_nothing_of_the_host,
        the_commands_exit_code_is_the_clients,
        a_container_killed_by_a_signal_exits_128_plus_the_signal,
        a_missing_executable_exits_127_and_is_named,
        a_directory_or_a_non_executable_file_exits_126,
        stdin_eof_reaches_the_process,
        stdout_and_stderr_stay_separate_without_a_tty,
        no_output_is_lost_at_exit,
        a_tty_session_has_the_terminals_size_follows_resizes_and_returns_the_exit_code,
        attached_run_returns_as_soon_as_the_command_exits,
        container_process_starts_with_default_signal_dispositions,
        limits_reach_the_containers_cgroup,
        a_memory_hog_is_oom_killed_and_reported_so,
        server_default_limits_apply_to_containers_without_limits,
        out_of_range_limits_are_refused_with_a_message,
        unknown_containers_are_not_found,
        a_duplicate_name_is_refused,
        starting_a_running_container_fails_the_precondition,
        create_needs_the_image_in_the_store_and_run_pulls_it_first,
        containers_are_addressed_by_id_prefix_and_name,
        stop_kills_a_process_that_ignores_sigterm_after_the_grace_period,
        kill_delivers_the_signal_to_the_main_process,
        wait_returns_the_exit_code_while_running_and_at_once_after_the_exit,
        rm_refuses_a_running_container_unless_forced,
        ps_lists_running_containers_and_ps_all_also_exited_ones,
        inspect_describes_identity_state_times_and_limits,
        auto_remove_deletes_the_container_once_it_exits,
        env_and_env_file_reach_the_process,
        workdir_is_created_and_is_the_cwd,
        user_flag_sets_the_uid_and_gid,
        root_in_a_container_has_dockers_default_capabilities_and_devices_and_a_user_none,
        entrypoint_flag_replaces_the_images,
        logs_keep_each_streams_lines_in_order_and_tail_the_last_ones,
        logs_show_the_output_of_a_running_container,
        logs_follow_streams_lines_as_they_are_written_and_end_with_the_container,
        ps_into_a_closed_pipe_exits_quietly,
        parallel_runs_all_succeed_with_distinct_ids,
        rm_leaves_no_directory_cgroup_mount_or_monitor,
        a_server_restart_keeps_running_containers,
        a_start_left_unfinished_by_a_dead_server_is_ended_at_restart,
        nul_bytes_and_unknown_network_modes_are_refused_as_invalid,
        ids_of_4294967295_and_hostnames_that_are_not_rfc_1123_are_refused,
        a_non_root_user_can_read_the_etc_files,
    ];
    run_suite(&args, trials, world, |w| &w.server);
}

// ------------------------------------------------------------------------------------------------ helpers
/// Docker's zero time: a time that has not happened.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Whether process `pid` has a handler for signal `signal` (SigCgt in /proc/PID/status).
fn catches(pid: i64, signal: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// An RFC 3339 time as a comparable key: (seconds part, nanoseconds).
fn time_key(time: &str) -> (String, u32) {
    let time = time.trim_end_matches('Z');
    let (seconds, fraction) = time.split_once('.').unwrap_or((time, ""));
    let nanos = format!("{fraction:0<9}")[..9].parse().unwrap_or(0);
    (seconds.to_string(), nanos)
}

/// The cgroup files that show a container's memory, CPU and pids limits, read from inside it.
fn limit_files() -> [&'static str; 3] {
    if cgroup_v2() {
        ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/pids.max"]
    } else {
        [
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
            "/sys/fs/cgroup/pids/pids.max",
        ]
    }
}

/// What `cat` of [`limit_files`] prints for `memory` bytes, half a CPU and `pids`.
fn expected_limits(memory: u64, pids: &str) -> String {
    let cpu = if cgroup_v2() { "50000 100000" } else { "50000" };
    format!("{memory}\n{cpu}\n{pids}\n")
}

fn grpc_spec(image: &str, command: &[&str]) -> pb::ContainerSpec {
    pb::ContainerSpec {
        image: image.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

// -------------------------------------------------------------------------------------------------- tests

fn hostname_is_the_short_id_by_default_and_the_hostname_flag_sets_it(w: &World) -> Result<()> {
    let s = &w.server;
    let host_before = nix::unistd::gethostname()?;
    let id = s.run_detached(&[&w.image, "sh", "-c", "hostname; cat /etc/hostname"])?;
    let c = s.until_status(&id, "exited")?;
    let short = &id[..12];
    let logs = s.cli_ok(&["logs", &id])?;
    ensure!(logs == format!("{short}\n{short}\n"), "hostname and /etc/hostname should both be {short}: {logs:?}");
    ensure!(c["Config"]["Hostname"] == short, "inspect Config.Hostname: {}", c["Config"]["Hostname"]);

    let out = s.cli_ok(&["run", "--hostname", "box-x", &w.image, "sh", "-c", "hostname; cat /etc/hostname"])?;
    ensure!(out == "box-x\nbox-x\n", "--hostname box-x: {out:?}");
    ensure!(nix::unistd::gethostname()? == host_before, "the host's hostname changed");
    Ok(())
}

fn pid_namespace_shows_the_command_as_pid_1_and_nothing_of_the_host(w: &World) -> Result<()> {
    let out = w.server.cli_ok(&["run", &w.image, "ps"])?;
    let rows: Vec<Vec<&str>> = out.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    ensure!(rows.len() == 1, "ps should see only itself in a fresh pid namespace:\n{out}");
    ensure!(rows[0].first() == Some(&"1") && rows[0].last() == Some(&"ps"), "ps is not PID 1:\n{out}");
    for host_process in ["cm-server", "cm-monitor", "cm-client", "containers-"] {
        ensure!(!out.contains(host_process), "{host_process} is visible in the container:\n{out}");
    }
    let out = w.server.cli_ok(&["run", &w.image, "sh", "-c", "echo $$"])?;
    ensure!(out == "1\n", "the shell's pid: {out:?}");
    Ok(())
}

fn the_commands_exit_code_is_the_clients(w: &World) -> Result<()> {
    let out = w.server.cli(&["run", &w.image, "sh", "-c", "exit 3"])?;
    ensure!(out.status.code() == Some(3), "exit 3: {}", summary(&out));
    // A child killed by SIGKILL: the shell reports 128 + 9 and exits with it. (The main process itself is PID 1
    // of its namespace, which the kernel shields from its own SIGKILL: `sh -c 'kill -9 $$'` exits 0, as in docker.)
    let out = w.server.cli(&["run", &w.image, "sh", "-c", "sh -c 'kill -9 $$'; exit $?"])?;
    ensure!(out.status.code() == Some(137), "a child killed by SIGKILL: {}", summary(&out));
    let out = w.server.cli(&["run", &w.image, "true"])?;
    ensure!(out.status.code() == Some(0), "true: {}", summary(&out));
    Ok(())
}

fn a_container_killed_by_a_signal_exits_128_plus_the_signal(w: &World) -> Result<()> {
    let name = unique("killed");
    let attached = w.server.client_command(&["run", "--name", &name, &w.image, "sleep", "1000"]);
    let run = std::thread::spawn(move || bounded(attached, None, Duration::from_secs(15)));
    w.server.until_status(&name, "running")?;
    w.server.cli_ok(&["kill", &name])?;
    let out = run.join().expect("run thread")?;
    ensure!(out.status.code() == Some(137), "the attached client of a SIGKILLed container: {}", summary(&out));
    let c = w.server.inspect(&name)?;
    ensure!(c["State"]["ExitCode"] == 137 && c["State"]["Signal"] == "SIGKILL", "inspect State: {:#}", c["State"]);
    Ok(())
}

fn a_missing_executable_exits_127_and_is_named(w: &World) -> Result<()> {
    let out = w.server.cli(&["run", &w.image, "nosuchcmd", "arg"])?;
    ensure!(out.status.code() == Some(127), "{}", summary(&out));
    ensure!(stderr(&out).contains("nosuchcmd"), "stderr does not name the executable: {}", summary(&out));
    Ok(())
}

fn a_directory_or_a_non_executable_file_exits_126(w: &World) -> Result<()> {
    for path in ["/etc", "/etc/passwd"] {
        let out = w.server.cli(&["run", &w.image, path])?;
        ensure!(out.status.code() == Some(126), "run {path}: {}", summary(&out));
        ensure!(stderr(&out).contains(path), "stderr does not name {path}: {}", summary(&out));
    }
    Ok(())
}

fn stdin_eof_reaches_the_process(w: &World) -> Result<()> {
    let out = w.server.cli_stdin(&["run", "-i", &w.image, "cat"], b"hi\n")?;
    ensure!(out.status.success() && stdout(&out) == "hi\n", "echo hi | run -i cat: {}", summary(&out));
    let out = w.server.cli_stdin(&["run", "-i", &w.image, "sort", "-r"], b"a\nb\n")?;
    ensure!(out.status.success() && stdout(&out) == "b\na\n", "printf 'a\\nb\\n' | run -i sort -r: {}", summary(&out));
    Ok(())
}

fn stdout_and_stderr_stay_separate_without_a_tty(w: &World) -> Result<()> {
    let out = w.server.cli(&["run", &w.image, "sh", "-c", "echo out; echo err >&2"])?;
    ensure!(out.status.success(), "{}", summary(&out));
    ensure!(stdout(&out) == "out\n", "stdout: {}", summary(&out));
    ensure!(stderr(&out) == "err\n", "stderr: {}", summary(&out));
    Ok(())
}

fn no_output_is_lost_at_exit(w: &World) -> Result<()> {
    let out = w.server.cli(&["run", &w.image, "sh", "-c", "seq 1 100000"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let expected: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    ensure!(
        text == expected,
        "{} lines ({} bytes of {}), last {:?}",
        text.lines().count(),
        text.len(),
        expected.len(),
        text.lines().last()
    );
    Ok(())
}

fn a_tty_session_has_the_terminals_size_follows_resizes_and_returns_the_exit_code(w: &World) -> Result<()> {
    // The initial size is applied before the command starts: no 0x0 terminal until the first resize.
    let mut term = PtyChild::spawn(w.server.client_command(&["run", "-it", &w.image, "stty", "size"]), 30, 100)?;
    term.expect("30 100", Duration::from_secs(10))?;
    let status = term.wait(Duration::from_secs(10))?;
    ensure!(status.code() == Some(0), "run -it stty size: {status}\n{}", term.transcript());

    let mut term = PtyChild::spawn(w.server.client_command(&["run", "-it", &w.image, "sh"]), 30, 100)?;
    term.expect("# ", Duration::from_secs(10)).context("no shell prompt")?;
    term.write("stty size\n")?;
    term.expect("30 100", Duration::from_secs(5))?;
    term.expect("# ", Duration::from_secs(5))?;

    term.resize(40, 120)?;
    // The resize travels as a frame of its own; ask until the shell sees it (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        term.write("stty size\n")?;
        let answer = term.expect("# ", Duration::from_secs(5))?;
        if answer.contains("40 120") {
            break;
        }
        ensure!(Instant::now() < deadline, "the container never saw the new size 40x120:\n{}", term.transcript());
        std::thread::sleep(Duration::from_millis(100));
    }

    term.write("exit 5\n")?;
    let status = term.wait(Duration::from_secs(10))?;
    ensure!(status.code() == Some(5), "exit 5 in the tty session: cm-client {status}\n{}", term.transcript());
    ensure!(term.settings_restored()?, "cm-client left the terminal in raw mode");
    Ok(())
}

fn attached_run_returns_as_soon_as_the_command_exits(w: &World) -> Result<()> {
    let mut failures = Vec::new();
    for attempt in 0..10 {
        match bounded(w.server.client_command(&["run", &w.image, "true"]), None, Duration::from_secs(5)) {
            Ok(out) if out.status.success() => {}
            Ok(out) => failures.push(format!("attempt {attempt}: {}", summary(&out))),
            Err(e) => failures.push(format!("attempt {attempt}: {e:#}")),
        }
    }
    ensure!(failures.is_empty(), "{} of 10 `run IMAGE true` failed:\n{}", failures.len(), failures.join("\n"));
    Ok(())
}

fn container_process_starts_with_default_signal_dispositions(w: &World) -> Result<()> {
    let out = w.server.cli_ok(&["run", &w.image, "grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"])?;
    ensure!(
        out == "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
        "the container's process inherited blocked or ignored signals:\n{out}"
    );
    // With SIGPIPE at its default, `yes` dies quietly when `head` is done.
    let out = w.server.cli(&["run", &w.image, "sh", "-c", "yes | head -n 1"])?;
    ensure!(out.status.success() && stdout(&out) == "y\n" && stderr(&out).is_empty(), "yes | head: {}", summary(&out));
    Ok(())
}

fn limits_reach_the_containers_cgroup(w: &World) -> Result<()> {
    let s = &w.server;
    let limits = ["-m", "64m", "--cpus", "0.5", "--pids-limit", "20"];
    let mut args = vec!["run"];
    args.extend(limits);
    args.extend([w.image.as_str(), "cat"]);
    args.extend(limit_files());
    let out = s.cli_ok(&args)?;
    ensure!(out == expected_limits(64 << 20, "20"), "limits seen inside the container: {out:?}");

    // And on the host, in the container's own cgroup under the server's parent.
    let mut args = limits.to_vec();
    args.extend([w.image.as_str(), "sleep", "100"]);
    let id = s.run_detached(&args)?;
    let read =
        |path: &str| std::fs::read_to_string(path).map(|t| t.trim().to_string()).unwrap_or_else(|e| e.to_string());
    let base = |controller: &str| {
        let root = if cgroup_v2() { "/sys/fs/cgroup".to_string() } else { format!("/sys/fs/cgroup/{controller}") };
        format!("{root}/{}/{id}", s.parent)
    };
    let host = if cgroup_v2() {
        [
            read(&format!("{}/memory.max", base(""))),
            read(&format!("{}/cpu.max", base(""))),
            read(&format!("{}/pids.max", base(""))),
        ]
    } else {
        [
            read(&format!("{}/memory.limit_in_bytes", base("memory"))),
            read(&format!("{}/cpu.cfs_quota_us", base("cpu"))),
            read(&format!("{}/pids.max", base("pids"))),
        ]
    };
    s.cli_ok(&["rm", "-f", &id])?;
    let host = format!("{}\n", host.join("\n"));
    ensure!(host == expected_limits(64 << 20, "20"), "limits in the host's cgroup of the container: {host:?}");
    Ok(())
}

const MEMORY_HOG: &str = r#"x=$(head -c 100000000 /dev/zero | tr "\\0" a)"#;

fn a_memory_hog_is_oom_killed_and_reported_so(w: &World) -> Result<()> {
    let s = &w.server;
    let name = unique("oom");
    let out = s.cli(&["run", "--name", &name, "-m", "16m", &w.image, "sh", "-c", MEMORY_HOG])?;
    ensure!(out.status.code() == Some(137), "the OOM-killed container's client: {}", summary(&out));
    let c = s.inspect(&name)?;
    ensure!(c["State"]["OOMKilled"] == true && c["State"]["ExitCode"] == 137, "inspect State: {:#}", c["State"]);

    // Wait (gRPC) on a running container that then runs out of memory.
    let hog = format!("sleep 1; {MEMORY_HOG}");
    let id = s.run_detached(&["-m", "16m", &w.image, "sh", "-c", &hog])?;
    let status = runtime().block_on(async {
        let mut client = s.grpc().await?;
        let wait = client.wait(pb::WaitRequest { container: id.clone(), exec_id: String::new() });
        let response = tokio::time::timeout(Duration::from_secs(10), wait).await.context("Wait hung")??;
        anyhow::Ok(response.into_inner().status.unwrap_or_default())
    })?;
    ensure!(status.oom_killed && status.exit_code == 137, "Wait says {status:?}");
    Ok(())
}

fn server_default_limits_apply_to_containers_without_limits(w: &World) -> Result<()> {
    let s = TestServer::start(&["--default-memory", "256m", "--default-cpus", "0.5"])?;
    s.cli_ok(&["pull", &w.image])?;
    let mut args = vec!["run", "--name", "defaults", &w.image, "cat"];
    args.extend(limit_files());
    let out = s.cli_ok(&args)?;
    ensure!(out == expected_limits(256 << 20, "max"), "defaults seen inside: {out:?}");
    let c = s.inspect("defaults")?;
    let host = &c["HostConfig"];
    ensure!(host["Memory"] == 256u64 << 20 && host["NanoCpus"] == 500_000_000u64, "inspect HostConfig: {host:#}");
    // A container's own limit wins over the default.
    let mut args = vec!["run", "-m", "64m", &w.image, "cat"];
    args.extend(limit_files());
    let out = s.cli_ok(&args)?;
    ensure!(out == expected_limits(64 << 20, "max"), "-m 64m under a 256m default: {out:?}");
    s.leaves_nothing_behind()
}

fn out_of_range_limits_are_refused_with_a_message(w: &World) -> Result<()> {
    let s = &w.server;
    let cases: [(&[&str], &str); 3] =
        [(&["-m", "1k"], "memory"), (&["--cpus", "0"], "cpu"), (&["--cpus", "999"], "999")];
    for (flags, needle) in cases {
        let name = unique("badlimit");
        let mut args = vec!["run", "--name", &name];
        args.extend(flags);
        args.extend([w.image.as_str(), "true"]);
        let out = s.cli(&args)?;
        ensure!(!out.status.success(), "{flags:?} was accepted: {}", summary(&out));
        ensure!(
            stderr(&out).to_lowercase().contains(needle),
            "{flags:?}: the message does not say {needle:?}: {}",
            summary(&out)
        );
        let inspect = s.cli(&["inspect", &name])?;
        ensure!(!inspect.status.success(), "{flags:?}: a container was created anyway");
    }
    runtime().block_on(async {
        let mut client = s.grpc().await?;
        let bad = [
            (pb::Resources { memory_bytes: -1, ..Default::default() }, "memory"),
            (pb::Resources { cpu_millis: 999_000, ..Default::default() }, "cpu"),
            (pb::Resources { pids_limit: -5, ..Default::default() }, "pids"),
        ];
        for (resources, needle) in bad {
            let spec = pb::ContainerSpec { resources: Some(resources), ..grpc_spec(&w.image, &["true"]) };
            let status =
                client.create(pb::CreateRequest { spec: Some(spec) }).await.err().context("Create accepted it")?;
            ensure!(status.code() == tonic::Code::InvalidArgument, "{resources:?}: {status:?}");
            ensure!(
                status.message().contains(needle),
                "{resources:?}: the message does not say {needle:?}: {status:?}"
            );
        }
        anyhow::Ok(())
    })
}

fn unknown_containers_are_not_found(w: &World) -> Result<()> {
    for verb in ["inspect", "stop", "rm", "wait", "kill", "start", "logs"] {
        let out = w.server.cli(&[verb, "no-such-ctr"])?;
        ensure!(!out.status.success(), "{verb} of an unknown container succeeded: {}", summary(&out));
        let err = stderr(&out);
        ensure!(err.contains("not found") && err.contains("no-such-ctr"), "{verb}: {}", summary(&out));
    }
    Ok(())
}

fn a_duplicate_name_is_refused(w: &World) -> Result<()> {
    let name = unique("dup");
    w.server.cli_ok(&["create", "--name", &name, &w.image, "true"])?;
    let out = w.server.cli(&["create", "--name", &name, &w.image, "true"])?;
    ensure!(!out.status.success(), "the second create succeeded: {}", summary(&out));
    ensure!(stderr(&out).contains("already in use") && stderr(&out).contains(&name), "{}", summary(&out));
    runtime().block_on(async {
        let mut client = w.server.grpc().await?;
        let spec = pb::ContainerSpec { name: name.clone(), ..grpc_spec(&w.image, &["true"]) };
        let status = client.create(pb::CreateRequest { spec: Some(spec) }).await.err().context("Create accepted it")?;
        ensure!(status.code() == tonic::Code::AlreadyExists, "{status:?}");
        anyhow::Ok(())
    })?;
    w.server.cli_ok(&["rm", &name])?;
    Ok(())
}

fn starting_a_running_container_fails_the_precondition(w: &World) -> Result<()> {
    let id = w.server.run_detached(&[&w.image, "sleep", "100"])?;
    let result = runtime().block_on(async {
        let mut client = w.server.grpc().await?;
        let status = client.start(pb::StartRequest { container: id.clone() }).await.err().context("Start succeeded")?;
        ensure!(status.code() == tonic::Code::FailedPrecondition, "{status:?}");
        ensure!(status.message().contains("running"), "{status:?}");
        anyhow::Ok(())
    });
    w.server.cli_ok(&["rm", "-f", &id])?;
    result
}

fn create_needs_the_image_in_the_store_and_run_pulls_it_first(w: &World) -> Result<()> {
    let lazy = w.reference("test/lazy:latest");
    runtime().block_on(async {
        let mut client = w.server.grpc().await?;
        let spec = grpc_spec(&lazy, &["true"]);
        let status = client.create(pb::CreateRequest { spec: Some(spec) }).await.err().context("Create succeeded")?;
        ensure!(status.code() == tonic::Code::NotFound, "{status:?}");
        ensure!(status.message().contains("test/lazy"), "{status:?}");
        anyhow::Ok(())
    })?;
    let out = bounded(w.server.client_command(&["run", &lazy, "echo", "pulled"]), None, Duration::from_secs(20))?;
    ensure!(out.status.success() && stdout(&out) == "pulled\n", "run of an image not pulled yet: {}", summary(&out));
    let err = stderr(&out);
    ensure!(
        err.contains("Unable to find image") && err.contains("test/lazy"),
        "stderr does not tell of the pull: {err}"
    );
    let images = w.server.cli_ok(&["images"])?;
    ensure!(images.contains(&w.reference("test/lazy")), "the pulled image is not listed:\n{images}");
    Ok(())
}

fn containers_are_addressed_by_id_prefix_and_name(w: &World) -> Result<()> {
    let s = &w.server;
    let name = unique("addr");
    let id = s.run_detached(&["--name", &name, &w.image, "sleep", "100"])?;
    let ps = s.cli_ok(&["ps"])?;
    let row = ps.lines().find(|l| l.starts_with(&id[..12])).with_context(|| format!("{id} not in ps:\n{ps}"))?;
    ensure!(row.contains(" Up ") && row.trim_end().ends_with(&name), "ps row: {row}");
    for handle in [id.as_str(), &id[..12], &id[..20], name.as_str()] {
        let c = s.inspect(handle)?;
        ensure!(c["Id"] == id && c["Name"] == name.as_str(), "inspect {handle}: Id {} Name {}", c["Id"], c["Name"]);
    }
    ensure!(s.cli_ok(&["ps", "-q"])?.lines().any(|l| l == &id[..12]), "ps -q does not list {}", &id[..12]);
    s.cli_ok(&["stop", "-t", "1", &id[..12]])?;
    s.cli_ok(&["rm", &name])?;
    ensure!(!s.cli(&["inspect", &id])?.status.success(), "still there after rm by name");
    Ok(())
}

fn stop_kills_a_process_that_ignores_sigterm_after_the_grace_period(w: &World) -> Result<()> {
    let s = &w.server;
    // PID 1 without a handler ignores SIGTERM: only the SIGKILL after the grace period ends it.
    let id = s.run_detached(&[&w.image, "sleep", "1000"])?;
    let started = Instant::now();
    s.cli_ok(&["stop", "-t", "1", &id])?;
    let took = started.elapsed();
    ensure!(took >= Duration::from_millis(900), "stop returned after {took:?}, before the 1 s grace period");
    ensure!(took < Duration::from_secs(5), "stop -t 1 took {took:?}");
    let c = s.inspect(&id)?;
    let state = &c["State"];
    ensure!(state["Status"] == "exited" && state["ExitCode"] == 137 && state["Signal"] == "SIGKILL", "{state:#}");
    Ok(())
}

fn kill_delivers_the_signal_to_the_main_process(w: &World) -> Result<()> {
    let s = &w.server;
    let script = r#"trap "exit 42" TERM; while true; do sleep 0.1; done"#;
    let id = s.run_detached(&[&w.image, "sh", "-c", script])?;
    let pid = s.inspect(&id)?["State"]["Pid"].as_i64().unwrap_or(0);
    eventually("the shell to trap SIGTERM", Duration::from_secs(10), || Ok(catches(pid, 15)))?;
    s.cli_ok(&["kill", "-s", "SIGTERM", &id])?;
    let c = s.until_status(&id, "exited").context("SIGTERM did not end a shell that traps it")?;
    ensure!(c["State"]["ExitCode"] == 42 && c["State"]["Signal"] == "", "inspect State: {:#}", c["State"]);
    Ok(())
}

fn wait_returns_the_exit_code_while_running_and_at_once_after_the_exit(w: &World) -> Result<()> {
    let s = &w.server;
    let id = s.run_detached(&[&w.image, "sh", "-c", "sleep 1; exit 7"])?;
    let out = s.cli_ok(&["wait", &id])?;
    ensure!(out == "7\n", "wait on the running container printed {out:?}");
    let started = Instant::now();
    let out = bounded(s.client_command(&["wait", &id]), None, Duration::from_secs(3))
        .context("wait on a container that has already exited")?;
    ensure!(out.status.success() && stdout(&out) == "7\n", "wait after the exit: {}", summary(&out));
    ensure!(started.elapsed() < Duration::from_secs(1), "wait after the exit took {:?}", started.elapsed());
    runtime().block_on(async {
        let mut client = s.grpc().await?;
        let wait = client.wait(pb::WaitRequest { container: id.clone(), exec_id: String::new() });
        let response =
            tokio::time::timeout(Duration::from_secs(3), wait).await.context("gRPC Wait after the exit hung")??;
        let status = response.into_inner().status.unwrap_or_default();
        ensure!(status.exit_code == 7 && status.finished_at.is_some(), "{status:?}");
        anyhow::Ok(())
    })
}

fn rm_refuses_a_running_container_unless_forced(w: &World) -> Result<()> {
    let s = &w.server;
    let id = s.run_detached(&[&w.image, "sleep", "100"])?;
    let out = s.cli(&["rm", &id])?;
    ensure!(!out.status.success(), "rm removed a running container");
    ensure!(stderr(&out).contains("running") && stderr(&out).contains("force"), "{}", summary(&out));
    ensure!(s.inspect(&id)?["State"]["Status"] == "running", "the refused rm changed the container");
    s.cli_ok(&["rm", "-f", &id])?;
    let out = s.cli(&["inspect", &id])?;
    ensure!(!out.status.success() && stderr(&out).contains("not found"), "after rm -f: {}", summary(&out));
    let left = s.remains_of(&id);
    ensure!(left.is_empty(), "rm -f left: {left:?}");
    Ok(())
}

fn ps_lists_running_containers_and_ps_all_also_exited_ones(w: &World) -> Result<()> {
    let s = &w.server;
    let (running, done) = (unique("ps-running"), unique("ps-done"));
    s.run_detached(&["--name", &running, &w.image, "sleep", "100"])?;
    s.run_detached(&["--name", &done, &w.image, "true"])?;
    s.until_status(&done, "exited")?;
    let row = |table: &str, name: &str| table.lines().find(|l| l.trim_end().ends_with(name)).map(str::to_string);
    let ps = s.cli_ok(&["ps"])?;
    ensure!(row(&ps, &running).is_some_and(|r| r.contains("Up")), "ps misses the running one:\n{ps}");
    ensure!(row(&ps, &done).is_none(), "ps lists the exited one:\n{ps}");
    let all = s.cli_ok(&["ps", "-a"])?;
    ensure!(row(&all, &running).is_some(), "ps -a misses the running one:\n{all}");
    ensure!(row(&all, &done).is_some_and(|r| r.contains("Exited (0)")), "ps -a misses the exited one:\n{all}");
    s.cli_ok(&["rm", "-f", &running, &done])?;
    Ok(())
}

fn inspect_describes_identity_state_times_and_limits(w: &World) -> Result<()> {
    let s = &w.server;
    let name = unique("insp");
    let id = s.run_detached(&[
        "--name",
        &name,
        "-m",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "20",
        "-e",
        "A=1",
        &w.image,
        "sleep",
        "100",
    ])?;
    let c = s.inspect(&name)?;
    let state = &c["State"];
    ensure!(c["Id"] == id && c["Name"] == name.as_str(), "Id {} Name {}", c["Id"], c["Name"]);
    ensure!(c["Path"] == "sleep" && c["Args"] == serde_json::json!(["100"]), "Path {} Args {}", c["Path"], c["Args"]);
    ensure!(state["Status"] == "running" && state["Running"] == true, "{state:#}");
    let pid = state["Pid"].as_i64().unwrap_or(0);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    ensure!(
        pid > 0 && cmdline.starts_with(b"sleep\x00100"),
        "State.Pid {pid} is not the container's sleep: {cmdline:?}"
    );
    let (created, started) =
        (c["Created"].as_str().unwrap_or(ZERO_TIME), state["StartedAt"].as_str().unwrap_or(ZERO_TIME));
    ensure!(created != ZERO_TIME && started != ZERO_TIME, "Created {created} StartedAt {started}");
    ensure!(time_key(started) >= time_key(created), "started {started} before created {created}");
    ensure!(state["FinishedAt"] == ZERO_TIME, "FinishedAt while running: {}", state["FinishedAt"]);
    let host = &c["HostConfig"];
    ensure!(
        host["Memory"] == 64u64 << 20 && host["NanoCpus"] == 500_000_000u64 && host["PidsLimit"] == 20,
        "HostConfig: {host:#}"
    );
    let env = c["Config"]["Env"].as_array().cloned().unwrap_or_default();
    ensure!(
        env.iter().any(|e| e == "A=1") && env.iter().any(|e| e.as_str().is_some_and(|e| e.starts_with("PATH="))),
        "Env {env:?}"
    );

    s.cli_ok(&["stop", "-t", "1", &name])?;
    let c = s.inspect(&name)?;
    let state = &c["State"];
    ensure!(state["Status"] == "exited" && state["Running"] == false && state["Pid"] == 0, "{state:#}");
    ensure!(state["ExitCode"] == 137, "{state:#}");
    let finished = state["FinishedAt"].as_str().unwrap_or(ZERO_TIME);
    ensure!(
        finished != ZERO_TIME && time_key(finished) >= time_key(started),
        "FinishedAt {finished}, StartedAt {started}"
    );
    s.cli_ok(&["rm", &name])?;
    Ok(())
}

fn auto_remove_deletes_the_container_once_it_exits(w: &World) -> Result<()> {
    let s = &w.server;
    let name = unique("autorm");
    // The hostname is the short id: how to find what is left of a container that is gone.
    let out = s.cli(&["run", "--rm", "--name", &name, &w.image, "hostname"])?;
    let short = stdout(&out).trim().to_string();
    ensure!(out.status.success() && short.len() == 12, "run --rm: {}", summary(&out));
    eventually("the --rm container to go", Duration::from_secs(5), || Ok(!s.cli_ok(&["ps", "-a"])?.contains(&name)))?;
    ensure!(!s.cli(&["inspect", &name])?.status.success(), "inspect still finds {name}");
    let dirs: Vec<String> =
        entries(&s.root().join("containers")).into_iter().filter(|d| d.starts_with(&short)).collect();
    ensure!(dirs.is_empty(), "the --rm container's directory is left: {dirs:?}");

    let detached = format!("{name}-bg");
    let id = s.run_detached(&["--rm", "--name", &detached, &w.image, "sh", "-c", "sleep 0.3"])?;
    eventually("the detached --rm container to go", Duration::from_secs(5), || {
        Ok(!s.cli_ok(&["ps", "-a", "-q", "--no-trunc"])?.contains(&id))
    })?;
    eventually("its remains to go", Duration::from_secs(5), || Ok(s.remains_of(&id).is_empty()))
        .with_context(|| format!("left: {:?}", s.remains_of(&id)))
}

fn env_and_env_file_reach_the_process(w: &World) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("env");
    std::fs::write(&file, "B=2\n# a comment\nC=three words\n")?;
    let file = file.display().to_string();
    let out =
        w.server.cli_ok(&["run", "-e", "A=1", "--env-file", &file, &w.image, "sh", "-c", r#"echo "$A|$B|$C""#])?;
    ensure!(out == "1|2|three words\n", "{out:?}");
    Ok(())
}

fn workdir_is_created_and_is_the_cwd(w: &World) -> Result<()> {
    let out = w.server.cli_ok(&["run", "-w", "/tmp/newdir", &w.image, "sh", "-c", "pwd; ls -d /tmp/newdir"])?;
    ensure!(out == "/tmp/newdir\n/tmp/newdir\n", "{out:?}");
    Ok(())
}

fn user_flag_sets_the_uid_and_gid(w: &World) -> Result<()> {
    let out = w.server.cli_ok(&["run", "-u", "nobody", &w.image, "sh", "-c", "id -u; id -g"])?;
    ensure!(out == "65534\n65534\n", "-u nobody: {out:?}");
    let out = w.server.cli_ok(&["run", "-u", "1234:1234", &w.image, "sh", "-c", "id -u; id -g"])?;
    ensure!(out == "1234\n1234\n", "-u 1234:1234: {out:?}");
    let out = w.server.cli(&["run", "-u", "ghost", &w.image, "id"])?;
    ensure!(!out.status.success() && stderr(&out).contains("ghost"), "-u ghost: {}", summary(&out));
    Ok(())
}

/// The capability sets of a process as /proc/PID/status shows them: (CapBnd, CapEff, CapPrm, CapAmb).
/// A capability set of /proc/PID/status ("CapInh:" ...).
fn capability_set(status: &str, name: &str) -> String {
    status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
}

fn capabilities(status: &str) -> (String, String, String, String) {
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
    };
    (field("CapBnd:"), field("CapEff:"), field("CapPrm:"), field("CapAmb:"))
}

fn root_in_a_container_has_dockers_default_capabilities_and_devices_and_a_user_none(w: &World) -> Result<()> {
    const DEFAULT: &str = "00000000a80425fb";
    let root = w.server.cli_ok(&["run", "--rm", &w.image, "cat", "/proc/self/status"])?;
    let (bounding, effective, permitted, ambient) = capabilities(&root);
    ensure!(bounding == DEFAULT && effective == DEFAULT && permitted == DEFAULT, "root: {root}");
    ensure!(ambient == "0000000000000000", "root's ambient set: {ambient}");
    // Nothing inheritable: a file capability could otherwise hand the set back after an exec (CVE-2022-29162).
    ensure!(capability_set(&root, "CapInh:") == "0000000000000000", "root's inheritable set: {root}");
    let user = w.server.cli_ok(&["run", "--rm", "-u", "1234", &w.image, "cat", "/proc/self/status"])?;
    let (bounding, effective, permitted, _) = capabilities(&user);
    ensure!(bounding == DEFAULT, "a user's bounding set: {bounding}");
    ensure!(effective == "0000000000000000" && permitted == effective, "a user keeps capabilities: {user}");
    // What the default set leaves out is refused: mounting needs CAP_SYS_ADMIN.
    let out = w.server.cli(&["run", "--rm", &w.image, "mount", "-t", "tmpfs", "none", "/mnt"])?;
    ensure!(!out.status.success(), "mount succeeded in a container: {}", summary(&out));
    // What it keeps works: NET_RAW (ping's socket) and CHOWN.
    w.server.cli_ok(&["run", "--rm", &w.image, "sh", "-c", "chown 1234 /tmp && ping -c 1 -W 1 127.0.0.1"])?;
    // A device node of the host's disks cannot be used (v1: the devices cgroup; v2: the device filter program).
    let script = "mknod /tmp/disk b 8 0; head -c 1 /tmp/disk >/dev/null && echo READ";
    let out = w.server.cli(&["run", "--rm", &w.image, "sh", "-c", script])?;
    ensure!(!stdout(&out).contains("READ"), "a disk node was read: {}", summary(&out));
    ensure!(stderr(&out).contains("not permitted"), "{}", summary(&out));
    w.server.cli_ok(&["run", "--rm", &w.image, "sh", "-c", "head -c 1 /dev/urandom >/dev/null && : > /dev/null"])?;
    // An exec'd process gets the same sets.
    let id = w.server.run_detached(&[&w.image, "sleep", "30"])?;
    let exec = w.server.cli_ok(&["exec", &id, "cat", "/proc/self/status"]);
    w.server.cli_ok(&["rm", "-f", &id])?;
    let exec = exec?;
    let (bounding, effective, _, _) = capabilities(&exec);
    ensure!(bounding == DEFAULT && effective == DEFAULT, "exec: {bounding} {effective}");
    ensure!(capability_set(&exec, "CapInh:") == "0000000000000000", "exec's inheritable set: {exec}");
    Ok(())
}

fn entrypoint_flag_replaces_the_images(w: &World) -> Result<()> {
    let out = w.server.cli_ok(&["run", "--entrypoint", "echo", &w.image, "hi"])?;
    ensure!(out == "hi\n", "{out:?}");
    Ok(())
}

fn logs_keep_each_streams_lines_in_order_and_tail_the_last_ones(w: &World) -> Result<()> {
    let s = &w.server;
    let script = "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three; sleep 0.1; echo four >&2";
    let id = s.run_detached(&[&w.image, "sh", "-c", script])?;
    s.until_status(&id, "exited")?;
    let out = s.cli(&["logs", &id])?;
    ensure!(
        out.status.success() && stdout(&out) == "one\nthree\n" && stderr(&out) == "two\nfour\n",
        "logs: {}",
        summary(&out)
    );
    let out = s.cli(&["logs", "--tail", "2", &id])?;
    ensure!(stdout(&out) == "three\n" && stderr(&out) == "four\n", "logs --tail 2: {}", summary(&out));
    // Across streams, in the order written (the gRPC stream says which stream each line is from).
    let lines = runtime().block_on(async {
        let mut client = s.grpc().await?;
        let request = pb::LogsRequest { container: id.clone(), ..Default::default() };
        let mut stream = client.logs(request).await?.into_inner();
        let mut lines = Vec::new();
        while let Some(line) = stream.message().await? {
            let tag = if line.stream == pb::LogStream::Stderr as i32 { "err" } else { "out" };
            lines.push(format!("{tag} {}", String::from_utf8_lossy(&line.line).trim_end()));
        }
        anyhow::Ok(lines)
    })?;
    ensure!(lines == ["out one", "err two", "out three", "err four"], "gRPC Logs: {lines:?}");
    Ok(())
}

fn logs_show_the_output_of_a_running_container(w: &World) -> Result<()> {
    let s = &w.server;
    let id = s.run_detached(&[&w.image, "sh", "-c", "echo ready; echo set >&2; exec sleep 100"])?;
    let mut out = None;
    let shown = eventually("the running container's lines in logs", Duration::from_secs(5), || {
        let o = s.cli(&["logs", &id])?;
        let done = stdout(&o) == "ready\n" && stderr(&o) == "set\n";
        out = Some(o);
        Ok(done)
    });
    s.cli_ok(&["rm", "-f", &id])?;
    shown.with_context(|| format!("logs of the running container: {}", out.as_ref().map(summary).unwrap_or_default()))
}

fn logs_follow_streams_lines_as_they_are_written_and_end_with_the_container(w: &World) -> Result<()> {
    let s = &w.server;
    let id = s.run_detached(&[&w.image, "sh", "-c", "echo l1; sleep 2; echo l2"])?;
    let mut follow = s.client_command(&["logs", "-f", &id]);
    follow.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = die_with_parent(&mut follow).spawn()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let pipe = child.stdout.take().context("stdout pipe")?;
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(pipe)).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let result = (|| -> Result<()> {
        let first = rx.recv_timeout(Duration::from_millis(1500));
        ensure!(first.as_deref() == Ok("l1"), "logs -f showed {first:?} while the container ran, not l1");
        let second = rx.recv_timeout(Duration::from_secs(5));
        ensure!(second.as_deref() == Ok("l2"), "logs -f then showed {second:?}, not l2");
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            ensure!(Instant::now() < deadline, "logs -f did not end when the container exited");
            std::thread::sleep(Duration::from_millis(20));
        };
        ensure!(status.success(), "logs -f: {status}");
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result?;
    let out = bounded(s.client_command(&["logs", "-f", &id]), None, Duration::from_secs(3))
        .context("logs -f of an exited container")?;
    ensure!(stdout(&out) == "l1\nl2\n", "logs -f after the exit: {}", summary(&out));
    Ok(())
}

fn ps_into_a_closed_pipe_exits_quietly(w: &World) -> Result<()> {
    // `cm-client ps -a | head -1`: the reader is gone before the client writes.
    let mut ps = w.server.client_command(&["ps", "-a"]);
    ps.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = die_with_parent(&mut ps).spawn()?;
    drop(child.stdout.take());
    let mut err = String::new();
    child.stderr.take().context("stderr pipe")?.read_to_string(&mut err)?;
    let status = child.wait()?;
    let head: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).take(2).collect();
    ensure!(!err.contains("panicked"), "cm-client panicked on a closed stdout ({status}):\n{}", head.join("\n"));
    Ok(())
}

fn parallel_runs_all_succeed_with_distinct_ids(w: &World) -> Result<()> {
    let s = TestServer::start(&[])?;
    s.cli_ok(&["pull", &w.image])?;
    let runs: Vec<_> = (0..20)
        .map(|_| {
            let command = s.client_command(&["run", "-d", &w.image, "true"]);
            std::thread::spawn(move || bounded(command, None, Duration::from_secs(20)))
        })
        .collect();
    let mut ids = Vec::new();
    for (i, run) in runs.into_iter().enumerate() {
        let out = run.join().expect("run thread")?;
        ensure!(out.status.success(), "run -d #{i}: {}", summary(&out));
        ids.push(stdout(&out).trim().to_string());
    }
    let distinct: HashSet<&String> = ids.iter().collect();
    ensure!(distinct.len() == 20 && ids.iter().all(|id| is_full_id(id)), "ids: {ids:?}");
    let mut wait = vec!["wait"];
    wait.extend(ids.iter().map(String::as_str));
    let codes = s.cli_ok(&wait)?;
    ensure!(codes == "0\n".repeat(20), "wait of the 20 containers printed:\n{codes}");
    let listed = s.cli_ok(&["ps", "-a", "-q", "--no-trunc"])?;
    let listed: HashSet<&str> = listed.split_whitespace().collect();
    ensure!(listed == ids.iter().map(String::as_str).collect(), "ps -a lists {} containers: {listed:?}", listed.len());
    s.leaves_nothing_behind()
}

fn rm_leaves_no_directory_cgroup_mount_or_monitor(w: &World) -> Result<()> {
    let s = &w.server;
    let id = s.run_detached(&["-m", "64m", &w.image, "sleep", "100"])?;
    // What rm must take away is there while it runs (the rootfs mount in the container's own mount namespace).
    let present = s.remains_of(&id);
    for kind in ["directory", "cgroup", "process"] {
        ensure!(present.iter().any(|p| p.starts_with(kind)), "no {kind} for a running container: {present:?}");
    }
    let pid = s.inspect(&id)?["State"]["Pid"].as_i64().unwrap_or(0);
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    ensure!(mounts.contains(&id), "the container's rootfs is not mounted from its directory:\n{mounts}");
    s.cli_ok(&["rm", "-f", &id])?;
    let left = s.remains_of(&id);
    ensure!(left.is_empty(), "rm -f of a running container left: {left:?}");

    let id = s.run_detached(&[&w.image, "true"])?;
    s.until_status(&id, "exited")?;
    s.cli_ok(&["rm", &id])?;
    let left = s.remains_of(&id);
    ensure!(left.is_empty(), "rm of an exited container left: {left:?}");
    Ok(())
}

fn a_server_restart_keeps_running_containers(w: &World) -> Result<()> {
    let mut s = TestServer::start(&[])?;
    s.cli_ok(&["pull", &w.image])?;
    let script = "echo before; sleep 1; echo during; exec sleep 30";
    let id = s.run_detached(&["--name", "keep", &w.image, "sh", "-c", script])?;
    s.kill();
    std::thread::sleep(Duration::from_millis(1500)); // "during" is written while no server runs
    s.restart()?;
    let ps = s.cli_ok(&["ps"])?;
    ensure!(ps.lines().any(|l| l.starts_with(&id[..12]) && l.contains(" Up ")), "not running after the restart:\n{ps}");
    let mut logs = String::new();
    // Checked after the re-adoption below, so one failure does not hide the other.
    let logs_kept = eventually("the lines written across the restart in logs", Duration::from_secs(3), || {
        logs = s.cli_ok(&["logs", "keep"])?;
        Ok(logs == "before\nduring\n")
    })
    .with_context(|| format!("logs of the still running container: {logs:?}"));
    // A wait from before the stop sees the exit the re-adopted monitor reports.
    let waiter = {
        let command = s.client_command(&["wait", "keep"]);
        std::thread::spawn(move || bounded(command, None, Duration::from_secs(15)))
    };
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    s.cli_ok(&["stop", "-t", "1", "keep"])?;
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "stop of the re-adopted container took {:?}",
        started.elapsed()
    );
    let out = waiter.join().expect("wait thread")?;
    ensure!(out.status.success() && stdout(&out) == "137\n", "wait across the restart: {}", summary(&out));
    let c = s.inspect("keep")?;
    ensure!(c["State"]["Status"] == "exited" && c["State"]["ExitCode"] == 137, "{:#}", c["State"]);
    logs_kept?;
    s.leaves_nothing_behind()
}

/// A server that dies between spawning a container's monitor and recording the start leaves a monitor (and
/// an init) that no record says is running; the next server ends them: nothing keeps running, the cgroup
/// goes. Simulated with a started container whose record is set back to "created" while the server is down.
fn a_start_left_unfinished_by_a_dead_server_is_ended_at_restart(w: &World) -> Result<()> {
    let mut server = TestServer::start(&[])?;
    server.cli_ok(&["pull", &w.image])?;
    let id = server.cli_ok(&["create", &w.image, "sleep", "30"])?.trim().to_string();
    server.cli_ok(&["start", &id])?;
    server.kill();
    let record_file = server.container_dir(&id).join("container.json");
    let mut record: Value = serde_json::from_slice(&std::fs::read(&record_file)?)?;
    record["state"]["status"] = "Created".into();
    std::fs::write(&record_file, serde_json::to_vec(&record)?)?;
    let dir = server.container_dir(&id).display().to_string();
    ensure!(!processes_mentioning(&dir).is_empty(), "the monitor is not running");
    server.restart()?;
    eventually(
        "the monitor and its init to end",
        Duration::from_secs(10),
        || Ok(processes_mentioning(&dir).is_empty()),
    )
    .with_context(|| format!("still running: {:?}", processes_mentioning(&dir)))?;
    let left: Vec<String> = server.remains_of(&id).into_iter().filter(|r| !r.starts_with("directory")).collect();
    ensure!(left.is_empty(), "left of the unfinished start: {left:?}");
    server.leaves_nothing_behind()
}

/// What no process could carry (a NUL byte) or the contract does not know (a network mode number) is refused
/// with INVALID_ARGUMENT naming the field, instead of being dropped or defaulted; nothing is created.
fn nul_bytes_and_unknown_network_modes_are_refused_as_invalid(w: &World) -> Result<()> {
    let s = &w.server;
    runtime().block_on(async {
        let mut client = s.grpc().await?;
        let bad = [
            (pb::ContainerSpec { env: vec!["A=b\0c".into()], ..grpc_spec(&w.image, &["true"]) }, "env"),
            (grpc_spec(&w.image, &["echo", "a\0b"]), "command"),
            (pb::ContainerSpec { network: 99, ..grpc_spec(&w.image, &["true"]) }, "network"),
            (pb::ContainerSpec { user: "4294967295".into(), ..grpc_spec(&w.image, &["true"]) }, "out of range"),
            (pb::ContainerSpec { hostname: "a\n1.2.3.4 b".into(), ..grpc_spec(&w.image, &["true"]) }, "hostname"),
        ];
        for (spec, needle) in bad {
            let name = unique("invalid");
            let spec = pb::ContainerSpec { name: name.clone(), ..spec };
            let status = client.create(pb::CreateRequest { spec: Some(spec) }).await.err().context("accepted")?;
            ensure!(status.code() == tonic::Code::InvalidArgument, "{needle}: {status:?}");
            ensure!(status.message().contains(needle), "the message does not say {needle:?}: {status:?}");
            ensure!(!s.cli(&["inspect", &name])?.status.success(), "{needle}: a container was created anyway");
        }
        anyhow::Ok(())
    })
}

fn ids_of_4294967295_and_hostnames_that_are_not_rfc_1123_are_refused(w: &World) -> Result<()> {
    let s = &w.server;
    // uint32 -1 is "no change" to setresuid/setresgid: accepted, it ran the container as root.
    for user in ["4294967295", "65534:4294967295", "4294967296"] {
        let out = s.cli(&["run", "--rm", "-u", user, &w.image, "id"])?;
        ensure!(!out.status.success() && stderr(&out).contains("out of range"), "-u {user}: {}", summary(&out));
        ensure!(!stdout(&out).contains("uid=0"), "-u {user} ran as root: {}", summary(&out));
    }
    let id = s.run_detached(&[&w.image, "sleep", "30"])?;
    let out = s.cli(&["exec", "-u", "4294967295", &id, "id"]);
    s.cli_ok(&["rm", "-f", &id])?;
    let out = out?;
    ensure!(!out.status.success() && stderr(&out).contains("out of range"), "exec -u: {}", summary(&out));
    let out = s.cli(&["run", "--rm", "--hostname", "box\n10.0.0.1 evil", &w.image, "true"])?;
    ensure!(!out.status.success() && stderr(&out).contains("invalid hostname"), "{}", summary(&out));
    Ok(())
}

fn a_non_root_user_can_read_the_etc_files(w: &World) -> Result<()> {
    let script = "cat /etc/hosts /etc/hostname /etc/resolv.conf >/dev/null && stat -c %a /etc/hosts /etc/resolv.conf";
    let out = w.server.cli(&["run", "--rm", "-u", "1234", &w.image, "sh", "-c", script])?;
    ensure!(out.status.success() && stdout(&out) == "644\n644\n", "{}", summary(&out));
    Ok(())
}
