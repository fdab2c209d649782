//! End to end: observing containers through cm-client and the generated gRPC client: Stats (CPU under a limit,
//! memory, pids, one-shot JSON, all running containers, errors), Logs (order across streams, lines written in
//! pieces, tail, since, rotation by size and following across rotations, removal) and Events (a container's
//! life in order, replays with since, filters, errors). One registry and one server serve the whole binary;
//! the server rotates logs at 64 KiB keeping 3 files.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cm_api::v1 as pb;
use cm_e2e::Registry;
use cm_e2e::harness::{TestServer, busybox_registry_and_server, eventually, run_suite, runtime, unique};
use cm_e2e::server::die_with_parent;
use cm_e2e::trials;
use libtest_mimic::Arguments;
use serde_json::Value;

/// The server's log rotation: --log-max-size and --log-max-files.
const LOG_MAX_SIZE: u64 = 64 << 10;
const LOG_MAX_FILES: usize = 3;
/// The largest record the monitor writes: one read of the container's output (64 KiB) and its header.
const MAX_RECORD: u64 = (64 << 10) + 64;

struct World {
    _registry: Registry,
    server: TestServer,
    image: String,
}

fn setup() -> Result<World> {
    let size = LOG_MAX_SIZE.to_string();
    let files = LOG_MAX_FILES.to_string();
    let (registry, server, image) = busybox_registry_and_server(&["--log-max-size", &size, "--log-max-files", &files])?;
    Ok(World { _registry: registry, server, image })
}

fn main() {
    let mut args = Arguments::from_args();
    // The tests mostly wait on containers; the CPU test needs a CPU of its own, so not too many at once.
    args.test_threads = args.test_threads.or(Some(3));
    let world = Arc::new(setup().expect("setting up the registry, the image and the server"));
    let trials = trials![world;
        a_busy_loop_limited_to_half_a_cpu_reads_about_fifty_percent_and_the_stream_ends_with_it,
        memory_written_to_shm_and_processes_show_in_the_sample,
        one_shot_json_covers_every_running_container_and_the_table_has_dockers_columns,
        stats_of_unknown_or_stopped_containers_and_bad_intervals_are_refused,
        logs_keep_the_order_across_streams_and_join_a_line_written_in_pieces,
        logs_tail_and_since_select_the_last_and_the_recent_lines,
        rotation_keeps_three_files_within_the_limit_and_follow_sees_every_line,
        events_tell_a_containers_life_in_order_and_since_replays_it,
        event_filters_select_and_an_unknown_key_is_invalid_argument,
        grpcurl_gets_one_shot_stats_and_a_bad_events_filter_is_refused,
        a_ping_between_two_containers_moves_both_network_counters,
    ];
    run_suite(&args, trials, world, |w| &w.server);
}

// ------------------------------------------------------------------------------------------------ helpers

/// Removes the container when the test is done, passed or failed.
struct Removed<'a>(&'a World, String);

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        let _ = self.0.server.client(&["rm", "-f", &self.1]);
    }
}

fn wait_exited(w: &World, container: &str) -> Result<()> {
    w.server.client_ok(&["wait", container]).map(drop)
}

/// One-shot samples of `containers` (all running ones when empty).
fn one_shot(w: &World, containers: &[&str]) -> Result<Vec<pb::StatsResponse>> {
    runtime().block_on(async {
        let mut client = w.server.grpc().await?;
        let request = pb::StatsRequest {
            containers: containers.iter().map(|c| c.to_string()).collect(),
            no_stream: true,
            interval: None,
        };
        let mut stream = client.stats(request).await?.into_inner();
        let mut samples = Vec::new();
        while let Some(sample) = stream.message().await? {
            samples.push(sample);
        }
        Ok(samples)
    })
}

/// All of a container's log lines through the gRPC Logs call, as "out LINE" / "err LINE" (newline kept).
fn log_lines(w: &World, request: pb::LogsRequest) -> Result<Vec<(String, pb::LogsResponse)>> {
    runtime().block_on(async {
        let mut client = w.server.grpc().await?;
        let mut stream = client.logs(request).await?.into_inner();
        let mut lines = Vec::new();
        while let Some(line) =
            tokio::time::timeout(Duration::from_secs(20), stream.message()).await.context("Logs hung")??
        {
            let tag = if line.stream == pb::LogStream::Stderr as i32 { "err" } else { "out" };
            lines.push((format!("{tag} {}", String::from_utf8_lossy(&line.line)), line));
        }
        Ok(lines)
    })
}

fn logs_request(container: &str) -> pb::LogsRequest {
    pb::LogsRequest { container: container.into(), ..Default::default() }
}

/// The container's log files with their sizes.
fn log_files(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("container.log"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().map_or(0, |m| m.len())))
        .collect();
    files.sort();
    files
}

fn code(result: Result<impl Sized, tonic::Status>) -> Option<tonic::Code> {
    result.err().map(|s| s.code())
}

// -------------------------------------------------------------------------------------------------- stats

fn a_busy_loop_limited_to_half_a_cpu_reads_about_fifty_percent_and_the_stream_ends_with_it(w: &World) -> Result<()> {
    let id = w.server.run_detached(&["--cpus", "0.5", &w.image, "sh", "-c", "while :; do :; done"])?;
    let _removed = Removed(w, id.clone());
    runtime().block_on(async {
        let mut client = w.server.grpc().await?;
        let request = pb::StatsRequest {
            containers: vec![id[..12].to_string()],
            no_stream: false,
            interval: Some(prost_types::Duration { seconds: 0, nanos: 500_000_000 }),
        };
        let mut stream = client.stats(request).await?.into_inner();
        let mut samples = Vec::new();
        while samples.len() < 3 {
            let sample =
                tokio::time::timeout(Duration::from_secs(5), stream.message()).await.context("no sample")??;
            samples.push(sample.context("the stream ended while the container ran")?);
        }
        let cpu = |s: &pb::StatsResponse| s.cpu.unwrap_or_default();
        let percents: Vec<f64> = samples.iter().map(|s| cpu(s).percent).collect();
        ensure!(samples.iter().all(|s| s.id == id), "samples of another container: {samples:?}");
        // The first interval may straddle the container's start; the later ones are all busy.
        ensure!(percents[1..].iter().all(|p| (25.0..=75.0).contains(p)), "CPU percents under --cpus 0.5: {percents:?}");
        let (first, last) = (cpu(&samples[0]), cpu(&samples[2]));
        ensure!(last.total_ns > first.total_ns + 200_000_000, "CPU time barely grew: {first:?} -> {last:?}");
        ensure!(last.throttled_periods > 0 && last.throttled_ns > 0, "never throttled at half a CPU: {last:?}");
        ensure!(last.online_cpus >= 1, "{last:?}");
        // Sampling a named container ends once it has stopped.
        w.server.client_ok(&["kill", &id])?;
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while stream.message().await?.is_some() {}
            anyhow::Ok(())
        })
        .await;
        ensure!(ended.is_ok(), "the Stats stream went on after its only container stopped");
        ended?
    })
}

fn memory_written_to_shm_and_processes_show_in_the_sample(w: &World) -> Result<()> {
    let script =
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=20 2>/dev/null; sleep 1000 & sleep 1000 & exec sleep 1000";
    let id = w.server.run_detached(&["-m", "64m", "--pids-limit", "50", &w.image, "sh", "-c", script])?;
    let _removed = Removed(w, id.clone());
    let mut last = None;
    eventually("20 MiB charged and 3 processes", Duration::from_secs(10), || {
        let sample = one_shot(w, &[&id])?.pop().context("no sample")?;
        let done =
            sample.memory.unwrap_or_default().usage_bytes >= 20 << 20 && sample.pids.unwrap_or_default().current == 3;
        last = Some(sample);
        Ok(done)
    })
    .with_context(|| format!("last sample: {last:?}"))?;
    let sample = last.context("sampled")?;
    let memory = sample.memory.unwrap_or_default();
    ensure!(memory.limit_bytes == 64 << 20, "limit {memory:?}");
    ensure!(memory.working_set_bytes >= 20 << 20 && memory.working_set_bytes <= memory.usage_bytes, "{memory:?}");
    ensure!(memory.usage_bytes < 40 << 20, "more than the 20 MiB written: {memory:?}");
    ensure!(sample.pids.unwrap_or_default().limit == 50, "{:?}", sample.pids);
    let interfaces: Vec<&str> = sample.networks.iter().map(|n| n.interface.as_str()).collect();
    ensure!(interfaces == ["eth0"], "a container on the bridge reports eth0 (not lo): {:?}", sample.networks);
    ensure!(sample.time.is_some_and(|t| t.seconds > 0), "no time");
    Ok(())
}

fn one_shot_json_covers_every_running_container_and_the_table_has_dockers_columns(w: &World) -> Result<()> {
    let a = unique("stats-a");
    let b = unique("stats-b");
    let done = unique("stats-done");
    let ids = [
        w.server.run_detached(&["--name", &a, &w.image, "sleep", "1000"])?,
        w.server.run_detached(&["--name", &b, &w.image, "sleep", "1000"])?,
        w.server.run_detached(&["--name", &done, &w.image, "true"])?,
    ];
    let _removed: Vec<Removed> = ids.iter().map(|id| Removed(w, id.clone())).collect();
    wait_exited(w, &done)?;
    let out = w.server.client_ok(&["stats", "--no-stream", "--format", "json"])?;
    let samples: Vec<Value> =
        out.lines().map(serde_json::from_str).collect::<Result<_, _>>().with_context(|| format!("json: {out}"))?;
    let listed: Vec<&str> = samples.iter().filter_map(|s| s["id"].as_str()).collect();
    ensure!(listed.contains(&ids[0].as_str()) && listed.contains(&ids[1].as_str()), "running ones missing: {out}");
    ensure!(!listed.contains(&ids[2].as_str()), "an exited container was sampled: {out}");
    let sample = samples.iter().find(|s| s["name"] == a.as_str()).context("by name")?;
    ensure!(sample["memory"]["usage_bytes"].as_u64().is_some_and(|u| u > 0), "{sample}");
    ensure!(sample["pids"]["current"] == 1 && sample["cpu"]["percent"].is_f64(), "{sample}");

    let table = w.server.client_ok(&["stats", "--no-stream", &a, &b, &done])?;
    let lines: Vec<&str> = table.lines().collect();
    ensure!(
        lines.len() == 4
            && lines[0].split_whitespace().collect::<Vec<_>>()
                == [
                    "CONTAINER",
                    "ID",
                    "NAME",
                    "CPU",
                    "%",
                    "MEM",
                    "USAGE",
                    "/",
                    "LIMIT",
                    "MEM",
                    "%",
                    "NET",
                    "I/O",
                    "BLOCK",
                    "I/O",
                    "PIDS"
                ],
        "stats --no-stream table:\n{table}"
    );
    for (name, id) in [(&a, &ids[0]), (&b, &ids[1])] {
        let row =
            lines.iter().find(|l| l.contains(name.as_str())).with_context(|| format!("no row for {name}:\n{table}"))?;
        ensure!(row.starts_with(&id[..12]) && row.contains("/ unlimited") && row.ends_with(" 1"), "row: {row}");
    }
    let stopped = lines.iter().find(|l| l.contains(done.as_str())).context("the stopped one gets a row")?;
    ensure!(stopped.contains("0.00%") && stopped.ends_with(" 0"), "stopped row: {stopped}");
    Ok(())
}

fn stats_of_unknown_or_stopped_containers_and_bad_intervals_are_refused(w: &World) -> Result<()> {
    let done = unique("stats-stopped");
    let id = w.server.run_detached(&["--name", &done, &w.image, "true"])?;
    let _removed = Removed(w, id);
    wait_exited(w, &done)?;
    runtime().block_on(async {
        let mut client = w.server.grpc().await?;
        let request = |containers: Vec<String>, interval| pb::StatsRequest { containers, no_stream: true, interval };
        let unknown = client.stats(request(vec!["no-such-container".into()], None)).await;
        ensure!(code(unknown) == Some(tonic::Code::NotFound), "unknown container");
        let stopped = client.stats(request(vec![done.clone()], None)).await;
        let status = stopped.err().context("a stopped container was sampled")?;
        ensure!(
            status.code() == tonic::Code::FailedPrecondition
                && status.message().contains(&done)
                && status.message().contains("not running"),
            "{status:?}"
        );
        let tiny = Some(prost_types::Duration { seconds: 0, nanos: 1_000_000 });
        let bad = client.stats(pb::StatsRequest { containers: vec![], no_stream: false, interval: tiny }).await;
        ensure!(code(bad) == Some(tonic::Code::InvalidArgument), "a 1 ms interval");
        Ok(())
    })?;
    let out = w.server.client(&["stats", "--no-stream", "no-such-container"]);
    ensure!(
        out.status.code() == Some(1) && String::from_utf8_lossy(&out.stderr).contains("no-such-container"),
        "cm-client stats of an unknown container: {out:?}"
    );
    Ok(())
}

// --------------------------------------------------------------------------------------------------- logs

fn logs_keep_the_order_across_streams_and_join_a_line_written_in_pieces(w: &World) -> Result<()> {
    let script = "echo one; echo two >&2; printf 'thr'; sleep 0.3; printf 'ee\\n'; echo four >&2; printf 'no newline'";
    let id = w.server.run_detached(&[&w.image, "sh", "-c", script])?;
    let _removed = Removed(w, id.clone());
    wait_exited(w, &id)?;
    let lines: Vec<String> = log_lines(w, logs_request(&id))?.into_iter().map(|(l, _)| l).collect();
    ensure!(
        lines == ["out one\n", "err two\n", "out three\n", "err four\n", "out no newline"],
        "Logs of a container writing to both streams, one line in two pieces: {lines:?}"
    );
    let out = w.server.client_ok(&["logs", "-t", &id])?;
    let stamped: Vec<&str> = out.lines().collect();
    ensure!(stamped.len() == 3 && stamped[1].ends_with(" three"), "logs -t (stdout): {out:?}");
    Ok(())
}

fn logs_tail_and_since_select_the_last_and_the_recent_lines(w: &World) -> Result<()> {
    let id = w.server.run_detached(&[&w.image, "sh", "-c", "echo 1; echo 2; sleep 1.2; echo 3; echo 4 >&2"])?;
    let _removed = Removed(w, id.clone());
    wait_exited(w, &id)?;
    let tail: Vec<String> =
        log_lines(w, pb::LogsRequest { tail: 3, ..logs_request(&id) })?.into_iter().map(|(l, _)| l).collect();
    ensure!(tail == ["out 2\n", "out 3\n", "err 4\n"], "tail 3: {tail:?}");
    let all = log_lines(w, logs_request(&id))?;
    let third = all.iter().find(|(l, _)| l == "out 3\n").context("line 3")?.1.time.context("a time")?;
    let since: Vec<String> = log_lines(w, pb::LogsRequest { since: Some(third), ..logs_request(&id) })?
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    ensure!(since == ["out 3\n", "err 4\n"], "since the time of line 3: {since:?}");
    // The CLI's --since takes the time as logs -t prints it.
    let stamped = w.server.client_ok(&["logs", "-t", &id])?;
    let time = stamped.lines().find(|l| l.ends_with(" 3")).and_then(|l| l.split(' ').next()).context("logs -t")?;
    let out = w.server.client(&["logs", "--since", time, &id]);
    ensure!(out.stdout == b"3\n" && out.stderr == b"4\n", "logs --since {time}: {out:?}");
    let out = w.server.client_ok(&["logs", "--tail", "1", "--since", time, &id])?;
    ensure!(out.is_empty(), "--tail 1 is the stderr line: stdout {out:?}");
    Ok(())
}

fn rotation_keeps_three_files_within_the_limit_and_follow_sees_every_line(w: &World) -> Result<()> {
    // 3000 lines of 100 bytes (half as much again as the kept files hold), in bursts of 100, after a pause that
    // lets the follower start first.
    const LINES: usize = 3000;
    let pad = "x".repeat(93);
    let script = format!(
        "sleep 0.5; i=0; while [ $i -lt {LINES} ]; do printf '%06d {pad}\\n' $i; i=$((i+1)); \
         [ $((i % 100)) = 0 ] && sleep 0.02; done; true"
    );
    let id = w.server.run_detached(&[&w.image, "sh", "-c", &script])?;
    let _removed = Removed(w, id.clone());
    let mut follow = w.server.client_command(&["logs", "-f", &id]);
    follow.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = die_with_parent(&mut follow).spawn()?;
    let reader = BufReader::new(child.stdout.take().context("stdout pipe")?);
    let collector = std::thread::spawn(move || reader.lines().map_while(Result::ok).collect::<Vec<String>>());
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("logs -f did not end after the container exited");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let followed = collector.join().expect("collector thread");
    let number = |line: &String| -> Result<usize> {
        ensure!(line.len() == 100 && line.ends_with(&pad), "a mangled line: {line:?}");
        Ok(line[..6].parse()?)
    };
    let followed: Vec<usize> = followed.iter().map(number).collect::<Result<_>>()?;
    ensure!(
        followed == (0..LINES).collect::<Vec<_>>(),
        "logs -f saw {} lines, not 0..{LINES} in order (first {:?}, last {:?})",
        followed.len(),
        followed.first(),
        followed.last()
    );
    let dir = w.server.container_dir(&id);
    let files = log_files(&dir);
    ensure!(
        files.len() == LOG_MAX_FILES
            && files.iter().map(|(n, _)| n.as_str()).eq(["container.log", "container.log.1", "container.log.2"]),
        "log files: {files:?}"
    );
    ensure!(files.iter().all(|(_, size)| *size <= LOG_MAX_SIZE + MAX_RECORD), "log files over the limit: {files:?}");
    let kept = w.server.client_ok(&["logs", &id])?;
    let kept: Vec<usize> = kept.lines().map(|l| number(&l.to_string())).collect::<Result<_>>()?;
    let first = *kept.first().context("logs printed nothing")?;
    ensure!(first > 0, "nothing was rotated away: the test wrote too little");
    ensure!(
        kept == (first..LINES).collect::<Vec<_>>(),
        "logs: not the newest lines in order ({} from {first})",
        kept.len()
    );
    // The log goes with the container.
    w.server.client_ok(&["rm", &id])?;
    ensure!(!dir.exists() && log_files(&dir).is_empty(), "{} left after rm", dir.display());
    Ok(())
}

// ------------------------------------------------------------------------------------------------- events

/// Events from a stream until one for which `last` is true arrives, or `limit` passes.
async fn collect_events(
    stream: &mut tonic::Streaming<pb::EventsResponse>,
    last: impl Fn(&pb::EventsResponse) -> bool,
    limit: Duration,
) -> Result<Vec<pb::EventsResponse>> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.message())
            .await
            .with_context(|| format!("not the last event expected; got {:?}", actions(&events)))??
            .context("the Events stream ended")?;
        let done = last(&event);
        events.push(event);
        if done {
            return Ok(events);
        }
    }
}

fn actions(events: &[pb::EventsResponse]) -> Vec<String> {
    events.iter().map(|e| e.action.clone()).collect()
}

fn events_tell_a_containers_life_in_order_and_since_replays_it(w: &World) -> Result<()> {
    let name = unique("events");
    let expected = ["create", "start", "exec_start", "exec_die", "exec_start", "exec_die", "kill", "die", "destroy"];
    let events = runtime().block_on(async {
        let mut client = w.server.grpc().await?;
        let request = pb::EventsRequest { since: None, filters: vec![format!("container={name}")] };
        let mut stream = client.events(request).await?.into_inner();
        let s = &w.server;
        let id = s.client_ok(&["run", "-d", "--name", &name, &w.image, "sleep", "1000"])?.trim().to_string();
        s.client_ok(&["exec", &name, "true"])?;
        ensure!(s.client(&["exec", &name, "sh", "-c", "exit 3"]).status.code() == Some(3), "exec exit 3");
        s.client_ok(&["rm", "-f", &name])?;
        let events = collect_events(&mut stream, |e| e.action == "destroy", Duration::from_secs(10)).await?;
        ensure!(actions(&events) == expected, "events of run, exec, exec, rm -f: {:?}", actions(&events));
        for e in &events {
            let expected_id = if e.r#type == "exec" { e.attributes.get("container") } else { Some(&e.id) };
            ensure!(expected_id == Some(&id), "event of another container: {e:?}");
            ensure!(e.attributes.get("name") == Some(&name) && e.attributes.get("image") == Some(&w.image), "{e:?}");
        }
        let attribute = |i: usize, key: &str| events[i].attributes.get(key).cloned().unwrap_or_default();
        ensure!(attribute(3, "exitCode") == "0" && attribute(5, "exitCode") == "3", "exec exit codes: {events:?}");
        ensure!(events[2].id == events[3].id && events[2].id != events[4].id, "exec ids: {events:?}");
        ensure!(attribute(6, "signal") == "SIGKILL", "kill: {:?}", events[6]);
        ensure!(attribute(7, "exitCode") == "137" && attribute(7, "signal") == "SIGKILL", "die: {:?}", events[7]);
        let times: Vec<(i64, i32)> = events.iter().map(|e| e.time.map_or((0, 0), |t| (t.seconds, t.nanos))).collect();
        ensure!(times[0].0 > 0 && times.windows(2).all(|t| t[0] <= t[1]), "times out of order: {times:?}");

        // since: the kept events from the create on, again, then the stream stays open for live ones.
        let replay = pb::EventsRequest { since: events[0].time, filters: vec![format!("container={name}")] };
        let mut stream = client.events(replay).await?.into_inner();
        let replayed = collect_events(&mut stream, |e| e.action == "destroy", Duration::from_secs(5)).await?;
        ensure!(replayed == events, "since replayed {:?}", actions(&replayed));
        let more = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
        ensure!(more.is_err(), "the replay was followed by {more:?} instead of waiting for live events");
        anyhow::Ok(events)
    })?;

    // The CLI: text lines, and JSON lines that parse, until it is stopped.
    let since = format!("{}", events[0].time.context("a time")?.seconds);
    for format in ["text", "json"] {
        let filter = format!("container={name}");
        let mut command =
            w.server.client_command(&["events", "--since", &since, "--filter", &filter, "--format", format]);
        command.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = die_with_parent(&mut command).spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let mut got = Vec::new();
        while got.len() < expected.len() {
            match lines.next() {
                Some(line) => got.push(line?),
                None => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let got_actions: Vec<String> = if format == "json" {
            let parsed: Vec<Value> = got.iter().map(|l| serde_json::from_str(l)).collect::<Result<_, _>>()?;
            parsed.iter().map(|v| v["action"].as_str().unwrap_or_default().to_string()).collect()
        } else {
            got.iter().map(|l| l.split(' ').nth(2).unwrap_or_default().to_string()).collect()
        };
        ensure!(got_actions == expected, "cm-client events --format {format}: {got:#?}");
    }
    Ok(())
}

fn event_filters_select_and_an_unknown_key_is_invalid_argument(w: &World) -> Result<()> {
    runtime().block_on(async {
        let mut client = w.server.grpc().await?;
        let filters = ["type=image", "action=pull"].map(String::from).to_vec();
        let mut pulls = client.events(pb::EventsRequest { since: None, filters }).await?.into_inner();
        let dies = vec!["type=container".into(), "action=die".into(), "action=destroy".into()];
        let mut dies = client.events(pb::EventsRequest { since: None, filters: dies }).await?.into_inner();
        let name = unique("filtered");
        w.server.client_ok(&["run", "--rm", "--name", &name, &w.image, "true"])?;
        w.server.client_ok(&["pull", &w.image])?;
        let pull = collect_events(&mut pulls, |_| true, Duration::from_secs(10)).await?;
        ensure!(pull.len() == 1 && pull[0].id == w.image && pull[0].r#type == "image", "pull events: {pull:?}");
        ensure!(pull[0].attributes.get("imageID").is_some_and(|i| i.starts_with("sha256:")), "{pull:?}");
        let ours = |e: &pb::EventsResponse| e.attributes.get("name") == Some(&name);
        let died = collect_events(&mut dies, |e| ours(e) && e.action == "destroy", Duration::from_secs(10)).await?;
        // Other tests' containers may die meanwhile: this one's die comes before its destroy, and nothing but
        // die and destroy gets through.
        ensure!(died.iter().all(|e| e.action == "die" || e.action == "destroy"), "{:?}", actions(&died));
        let ours: Vec<String> = died.iter().filter(|e| ours(e)).map(|e| e.action.clone()).collect();
        ensure!(ours == ["die", "destroy"], "the run --rm container's die and destroy: {died:?}");

        let bad = client.events(pb::EventsRequest { since: None, filters: vec!["colour=red".into()] }).await;
        let status = bad.err().context("an unknown filter key was accepted")?;
        ensure!(status.code() == tonic::Code::InvalidArgument && status.message().contains("colour"), "{status:?}");
        let bad = client.events(pb::EventsRequest { since: None, filters: vec!["type=volume".into()] }).await;
        ensure!(code(bad) == Some(tonic::Code::InvalidArgument), "an unknown type");
        anyhow::Ok(())
    })?;
    let out = w.server.client(&["events", "--filter", "colour=red"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1) && stderr.contains("\"colour\""),
        "cm-client events --filter colour=red: {out:?}"
    );
    Ok(())
}

fn grpcurl_gets_one_shot_stats_and_a_bad_events_filter_is_refused(w: &World) -> Result<()> {
    let name = unique("grpcurl");
    let id = w.server.run_detached(&["--name", &name, &w.image, "sleep", "1000"])?;
    let _removed = Removed(w, id.clone());
    let request = format!(r#"{{"containers":["{name}"],"no_stream":true}}"#);
    let out = w.server.grpcurl(&["-d", &request, "cm.v1.ContainerService/Stats"]);
    cm_e2e::server::check(&out, "grpcurl Stats")?;
    let sample: Value = serde_json::from_slice(&out.stdout).with_context(|| format!("{out:?}"))?;
    ensure!(sample["id"] == id.as_str() && sample["name"] == name.as_str(), "{sample}");
    ensure!(sample["pids"]["current"] == "1", "grpcurl prints uint64 as strings: {sample}");
    let out = w.server.grpcurl(&["-d", r#"{"filters":["colour=red"]}"#, "cm.v1.ContainerService/Events"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && stderr.contains("InvalidArgument") && stderr.contains("colour"), "{stderr}");
    Ok(())
}

/// eth0's counters of a container, from a one-shot sample.
fn eth0(w: &World, container: &str) -> Result<pb::NetworkStats> {
    let sample = one_shot(w, &[container])?.pop().context("no sample")?;
    sample.networks.into_iter().find(|n| n.interface == "eth0").context("no eth0 in the sample")
}

fn a_ping_between_two_containers_moves_both_network_counters(w: &World) -> Result<()> {
    let a = w.server.run_detached(&[&w.image, "sleep", "60"])?;
    let _a = Removed(w, a.clone());
    let b = w.server.run_detached(&[&w.image, "sleep", "60"])?;
    let _b = Removed(w, b.clone());
    let inspect: Value = serde_json::from_str(&w.server.client_ok(&["inspect", &a])?)?;
    let a_ip = inspect[0]["NetworkSettings"]["IPAddress"].as_str().unwrap_or_default().to_string();
    ensure!(a_ip.parse::<std::net::Ipv4Addr>().is_ok(), "A's address: {a_ip:?}");
    let (a_before, b_before) = (eth0(w, &a)?, eth0(w, &b)?);
    // 20 pings of 1000 bytes: well above what ARP and IPv6 chatter add meanwhile.
    w.server.client_ok(&["exec", &b, "ping", "-c", "20", "-i", "0.05", "-s", "1000", "-W", "2", &a_ip])?;
    let (a_after, b_after) = (eth0(w, &a)?, eth0(w, &b)?);
    for (name, before, after) in [("A", &a_before, &a_after), ("B", &b_before, &b_after)] {
        ensure!(after.tx_bytes >= before.tx_bytes + 20 * 1000, "{name} sent too little: {before:?} -> {after:?}");
        ensure!(after.rx_bytes >= before.rx_bytes + 20 * 1000, "{name} got too little: {before:?} -> {after:?}");
        ensure!(after.rx_packets >= before.rx_packets + 20 && after.tx_packets >= before.tx_packets + 20);
    }
    Ok(())
}
