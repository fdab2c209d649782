//! End to end: Exec into a running container through cm-client, grpcurl and the generated gRPC client: exit
//! codes, stdin EOF, a tty with resize, signals, cancellation, flow control with 200 MB, concurrency, and the
//! errors. One registry, one server and one long-running container serve the whole binary.

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use cm_api::v1 as pb;
use cm_e2e::Registry;
use cm_e2e::harness::{TestServer, busybox_registry_and_server, run_suite, runtime};
use cm_e2e::trials;
use libtest_mimic::Arguments;
use pb::exec_request::Frame as In;
use pb::exec_response::Frame as Out;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

struct World {
    _registry: Registry,
    server: TestServer,
    image: String,
    /// A container running `sleep` for the whole binary.
    container: String,
}

fn setup() -> Result<World> {
    let (registry, server, image) = busybox_registry_and_server(&[])?;
    let container = server.client_ok(&["run", "-d", "--name", "target", &image, "sleep", "100000"])?.trim().to_string();
    Ok(World { _registry: registry, server, image, container })
}

fn main() {
    let args = Arguments::from_args();
    let world = Arc::new(setup().expect("setting up the registry, server and container"));
    let trials = trials![world;
        exec_prints_output_and_returns_exit_codes,
        stdin_is_piped_and_eof_delivered,
        missing_and_non_executable_commands_exit_127_and_126,
        tty_session_gets_its_size_before_start_and_on_resize,
        signal_frame_delivers_sigterm,
        cancelling_the_stream_kills_the_process,
        detached_exec_can_be_waited_on_and_killed_by_id,
        two_hundred_megabytes_arrive_intact,
        fifty_concurrent_execs_get_their_own_output_and_codes,
        bad_requests_get_invalid_argument_not_found_or_failed_precondition,
        grpcurl_drives_exec_with_a_streamed_request,
        an_exec_right_after_start_sees_the_containers_root,
    ];
    // The shared server removes the long-running container, and every other, when it checks it left nothing.
    run_suite(&args, trials, world, |w| &w.server);
}

fn start(container: &str, argv: &[&str]) -> pb::ExecStart {
    pb::ExecStart {
        container: container.into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// What an exec stream produced.
#[derive(Default, Debug)]
struct Outcome {
    started: Option<pb::ProcessStarted>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<pb::ExitStatus>,
}

/// Opens an Exec stream with the generated client, `start` as its first frame; returns the sender for the
/// frames that follow and the server's stream.
async fn open_exec(
    w: &World,
    start: pb::ExecStart,
) -> Result<(mpsc::Sender<pb::ExecRequest>, tonic::Streaming<pb::ExecResponse>)> {
    let mut client = w.server.grpc().await?;
    let (tx, rx) = mpsc::channel(8);
    tx.send(pb::ExecRequest { frame: Some(In::Start(start)) }).await?;
    let stream = client.exec(ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, stream))
}

/// Runs an exec with the generated client: sends `start`, then `input` frames, then (if `close`) half-closes;
/// collects everything until the stream ends.
async fn exec(w: &World, start: pb::ExecStart, input: Vec<In>, close: bool) -> Result<Outcome> {
    let (tx, mut stream) = open_exec(w, start).await?;
    let sender = tokio::spawn(async move {
        for frame in input {
            if tx.send(pb::ExecRequest { frame: Some(frame) }).await.is_err() {
                return None;
            }
        }
        if close { None } else { Some(tx) }
    });
    let mut outcome = Outcome::default();
    while let Some(message) = stream.message().await? {
        match message.frame {
            Some(Out::Started(s)) => outcome.started = Some(s),
            Some(Out::Stdout(d)) => outcome.stdout.extend(d),
            Some(Out::Stderr(d)) => outcome.stderr.extend(d),
            Some(Out::Exit(e)) => outcome.exit = Some(e),
            None => {}
        }
    }
    drop(sender.await?);
    Ok(outcome)
}

fn code(o: &Outcome) -> Result<i32> {
    o.exit.as_ref().map(|e| e.exit_code).context("no exit frame")
}

fn exec_prints_output_and_returns_exit_codes(w: &World) -> Result<()> {
    let out = w.server.client(&["exec", &w.container, "sh", "-c", "echo out; echo err >&2; exit 3"]);
    ensure!(out.status.code() == Some(3), "cm-client exec exit: {:?}", out.status);
    ensure!(String::from_utf8_lossy(&out.stdout) == "out\n", "stdout {:?}", out.stdout);
    ensure!(String::from_utf8_lossy(&out.stderr) == "err\n", "stderr {:?}", out.stderr);
    // The process is in the container: its PID namespace, hostname and root.
    let ps = w.server.client_ok(&["exec", "target", "ps"])?;
    ensure!(ps.lines().any(|l| l.trim_start().starts_with("1 ") && l.contains("sleep")), "ps: {ps}");
    let hostname = w.server.client_ok(&["exec", "target", "hostname"])?;
    ensure!(hostname.trim() == &w.container[..12], "hostname {hostname}");
    let o = runtime().block_on(exec(w, start(&w.container, &["sh", "-c", "kill -9 $$"]), vec![], true))?;
    ensure!(o.started.is_some(), "no started frame");
    ensure!(code(&o)? == 137 && o.exit.as_ref().unwrap().signal == "SIGKILL", "{o:?}");
    Ok(())
}

fn stdin_is_piped_and_eof_delivered(w: &World) -> Result<()> {
    let mut child = w
        .server
        .client_command(&["exec", "-i", &w.container, "sort", "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(b"a\nb\n")?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success() && out.stdout == b"b\na\n", "sort -r: {out:?}");
    let mut s = start(&w.container, &["cat"]);
    s.stdin = true;
    let input = vec![
        In::Stdin(pb::StdinData { data: b"hello ".to_vec() }),
        In::Stdin(pb::StdinData { data: b"world".to_vec() }),
    ];
    let o = runtime().block_on(exec(w, s, input, true))?;
    ensure!(o.stdout == b"hello world" && code(&o)? == 0, "{o:?}");
    Ok(())
}

fn missing_and_non_executable_commands_exit_127_and_126(w: &World) -> Result<()> {
    let out = w.server.client(&["exec", &w.container, "no-such-command"]);
    ensure!(out.status.code() == Some(127), "{:?}", out.status);
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-command"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = w.server.client(&["exec", &w.container, "/etc/passwd"]);
    ensure!(out.status.code() == Some(126), "{:?}", out.status);
    let o = runtime().block_on(exec(w, start(&w.container, &["/etc"]), vec![], true))?;
    ensure!(code(&o)? == 126 && !o.exit.unwrap().error.is_empty(), "a directory is not executable");
    Ok(())
}

fn tty_session_gets_its_size_before_start_and_on_resize(w: &World) -> Result<()> {
    let mut s = start(&w.container, &["sh", "-c", "stty size; read line; stty size; tty"]);
    s.tty = true;
    s.stdin = true;
    s.tty_size = Some(pb::TtySize { rows: 30, cols: 100 });
    let o = runtime().block_on(async {
        let (tx, mut stream) = open_exec(w, s).await?;
        let mut outcome = Outcome::default();
        let mut resized = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        // The client keeps its side open to the end: the exit frame must still end the stream.
        while let Some(m) = tokio::time::timeout_at(deadline, stream.message()).await?? {
            match m.frame {
                Some(Out::Stdout(d)) => {
                    outcome.stdout.extend(d);
                    if !resized && String::from_utf8_lossy(&outcome.stdout).contains("30 100") {
                        resized = true;
                        tx.send(pb::ExecRequest { frame: Some(In::Resize(pb::TtySize { rows: 45, cols: 132 })) })
                            .await?;
                        tx.send(pb::ExecRequest { frame: Some(In::Stdin(pb::StdinData { data: b"go\r".to_vec() })) })
                            .await?;
                    }
                }
                Some(Out::Stderr(d)) => outcome.stderr.extend(d),
                Some(Out::Exit(e)) => outcome.exit = Some(e),
                _ => {}
            }
        }
        drop(tx);
        anyhow::Ok(outcome)
    })?;
    let text = String::from_utf8_lossy(&o.stdout);
    ensure!(text.contains("30 100"), "initial size not applied before start: {text:?}");
    ensure!(text.contains("45 132"), "resize not applied: {text:?}");
    ensure!(text.contains("/dev/pts/"), "the tty is the container's own: {text:?}");
    ensure!(o.stderr.is_empty(), "a tty merges stderr");
    ensure!(code(&o)? == 0, "{o:?}");
    Ok(())
}

fn signal_frame_delivers_sigterm(w: &World) -> Result<()> {
    let s = start(&w.container, &["sh", "-c", "trap 'exit 42' TERM; echo ready; while true; do sleep 0.05; done"]);
    let o = runtime().block_on(async {
        let (tx, mut stream) = open_exec(w, s).await?;
        let mut outcome = Outcome::default();
        while let Some(m) = stream.message().await? {
            match m.frame {
                Some(Out::Stdout(d)) if d.starts_with(b"ready") => {
                    tx.send(pb::ExecRequest { frame: Some(In::Signal("SIGTERM".into())) }).await?;
                }
                Some(Out::Exit(e)) => outcome.exit = Some(e),
                _ => {}
            }
        }
        anyhow::Ok(outcome)
    })?;
    ensure!(code(&o)? == 42, "{o:?}");
    Ok(())
}

fn cancelling_the_stream_kills_the_process(w: &World) -> Result<()> {
    let marker = "cm-e2e-cancel-marker";
    runtime().block_on(async {
        let s = start(&w.container, &["sh", "-c", &format!("echo up; exec sleep 1000 {marker}")]);
        let (tx, mut stream) = open_exec(w, s).await?;
        while let Some(m) = stream.message().await? {
            if matches!(m.frame, Some(Out::Stdout(_))) {
                break;
            }
        }
        drop(stream);
        drop(tx);
        anyhow::Ok(())
    })?;
    for _ in 0..100 {
        let ps = w.server.client_ok(&["exec", &w.container, "ps"])?;
        if !ps.contains(marker) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the cancelled exec is still running")
}

fn detached_exec_can_be_waited_on_and_killed_by_id(w: &World) -> Result<()> {
    runtime().block_on(async {
        let mut s = start(&w.container, &["sleep", "1000"]);
        s.exec_id = "detached-1".into();
        s.detach_on_disconnect = true;
        let (tx, mut stream) = open_exec(w, s).await?;
        let first = stream.message().await?.and_then(|m| m.frame);
        ensure!(matches!(&first, Some(Out::Started(s)) if s.exec_id == "detached-1"), "{first:?}");
        drop(stream);
        drop(tx);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let waiter = {
            let mut client = w.server.grpc().await?;
            let container = w.container.clone();
            tokio::spawn(async move { client.wait(pb::WaitRequest { container, exec_id: "detached-1".into() }).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        ensure!(!waiter.is_finished(), "the detached exec ended when its stream went away");
        let mut client = w.server.grpc().await?;
        client
            .kill(pb::KillRequest {
                container: w.container.clone(),
                signal: "SIGKILL".into(),
                exec_id: "detached-1".into(),
            })
            .await?;
        let status = waiter.await??.into_inner().status.context("status")?;
        ensure!(status.exit_code == 137, "{status:?}");
        // Waiting again answers at once; an unknown exec id is NOT_FOUND.
        let again =
            client.wait(pb::WaitRequest { container: w.container.clone(), exec_id: "detached-1".into() }).await?;
        ensure!(again.into_inner().status.unwrap().exit_code == 137);
        let missing = client.wait(pb::WaitRequest { container: w.container.clone(), exec_id: "nope".into() }).await;
        ensure!(missing.as_ref().is_err_and(|s| s.code() == tonic::Code::NotFound), "{missing:?}");
        anyhow::Ok(())
    })
}

fn two_hundred_megabytes_arrive_intact(w: &World) -> Result<()> {
    // 200 MB of pseudo-random bytes through `cat` and back, compared by checksum.
    const TOTAL: usize = 200 << 20;
    let mut expected = Sha256::new();
    let mut got = Sha256::new();
    let mut received = 0usize;
    runtime().block_on(async {
        let mut s = start(&w.container, &["cat"]);
        s.stdin = true;
        let (tx, mut stream) = open_exec(w, s).await?;
        let mut state: u64 = 0x9e3779b97f4a7c15;
        let mut chunks = Vec::new();
        for _ in 0..TOTAL / (256 << 10) {
            let mut chunk = vec![0u8; 256 << 10];
            for word in chunk.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            expected.update(&chunk);
            chunks.push(chunk);
        }
        let sender = tokio::spawn(async move {
            for chunk in chunks {
                if tx.send(pb::ExecRequest { frame: Some(In::Stdin(pb::StdinData { data: chunk })) }).await.is_err() {
                    break;
                }
            }
        });
        let mut exit = None;
        while let Some(m) = stream.message().await? {
            match m.frame {
                Some(Out::Stdout(d)) => {
                    received += d.len();
                    got.update(&d);
                }
                Some(Out::Exit(e)) => exit = Some(e),
                _ => {}
            }
        }
        sender.await?;
        ensure!(exit.is_some_and(|e| e.exit_code == 0), "cat failed");
        anyhow::Ok(())
    })?;
    ensure!(received == TOTAL, "received {received} of {TOTAL} bytes");
    ensure!(expected.finalize() == got.finalize(), "checksum mismatch");
    Ok(())
}

fn fifty_concurrent_execs_get_their_own_output_and_codes(w: &World) -> Result<()> {
    runtime().block_on(async {
        let mut tasks = Vec::new();
        for i in 0..50 {
            let s = start(&w.container, &["sh", "-c", &format!("echo exec-{i}; exit {}", i % 7)]);
            tasks.push(async move { (i, exec(w, s, vec![], true).await) });
        }
        for (i, outcome) in futures::future::join_all(tasks).await {
            let o = outcome?;
            ensure!(o.stdout == format!("exec-{i}\n").as_bytes(), "exec {i}: {o:?}");
            ensure!(code(&o)? == i % 7, "exec {i}: {o:?}");
        }
        anyhow::Ok(())
    })
}

fn bad_requests_get_invalid_argument_not_found_or_failed_precondition(w: &World) -> Result<()> {
    runtime().block_on(async {
        let status_of = |r: Result<Outcome>| r.err().and_then(|e| e.downcast::<tonic::Status>().ok()).map(|s| s.code());
        let unknown = exec(w, start("no-such-container", &["true"]), vec![], true).await;
        ensure!(status_of(unknown) == Some(tonic::Code::NotFound));
        let stopped = w.server.client_ok(&["create", &w.image, "true"])?;
        let not_running = exec(w, start(stopped.trim(), &["true"]), vec![], true).await;
        ensure!(status_of(not_running) == Some(tonic::Code::FailedPrecondition));
        let empty = exec(w, start(&w.container, &[]), vec![], true).await;
        ensure!(status_of(empty) == Some(tonic::Code::InvalidArgument));
        // A first message that is not a start frame.
        let mut client = w.server.grpc().await?;
        let (tx, rx) = mpsc::channel(2);
        tx.send(pb::ExecRequest { frame: Some(In::CloseStdin(true)) }).await?;
        drop(tx);
        let r = client.exec(ReceiverStream::new(rx)).await;
        ensure!(r.as_ref().err().map(|s| s.code()) == Some(tonic::Code::InvalidArgument), "first frame");
        // A stdin frame above the documented 1 MiB.
        let mut s = start(&w.container, &["cat"]);
        s.stdin = true;
        let big = exec(w, s, vec![In::Stdin(pb::StdinData { data: vec![b'x'; (1 << 20) + 1] })], true).await;
        ensure!(status_of(big) == Some(tonic::Code::InvalidArgument), "oversized stdin frame");
        anyhow::Ok(())
    })
}

fn grpcurl_drives_exec_with_a_streamed_request(w: &World) -> Result<()> {
    let body = format!(
        r#"{{"start":{{"container":"{}","argv":["sort","-r"],"stdin":true}}}} {{"stdin":{{"data":"YQpiCg=="}}}}"#,
        w.container
    );
    let mut cmd = std::process::Command::new("grpcurl");
    cmd.args(["-plaintext", "-unix", "-d", "@"]).arg(w.server.socket()).arg("cm.v1.ContainerService/Exec");
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    child.stdin.take().unwrap().write_all(body.as_bytes())?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "grpcurl: {text}{}", String::from_utf8_lossy(&out.stderr));
    // "b\na\n" in base64.
    ensure!(text.contains("\"started\"") && text.contains("YgphCg==") && text.contains("\"exit\""), "{text}");
    Ok(())
}

/// Start returns once the container's command runs, so an exec right after it joins a finished mount
/// namespace: the container's root, never the host's files seen before the init's pivot_root.
fn an_exec_right_after_start_sees_the_containers_root(w: &World) -> Result<()> {
    for _ in 0..10 {
        let id = runtime().block_on(async {
            let mut client = w.server.grpc().await?;
            let spec = pb::ContainerSpec {
                image: w.image.clone(),
                command: vec!["sleep".into(), "30".into()],
                ..Default::default()
            };
            let id = client.create(pb::CreateRequest { spec: Some(spec) }).await?.into_inner().id;
            client.start(pb::StartRequest { container: id.clone() }).await?;
            anyhow::Ok(id)
        })?;
        let o = runtime().block_on(exec(w, start(&id, &["readlink", "/bin/cat"]), vec![], true));
        let _ = w.server.client(&["rm", "-f", &id]);
        let o = o?;
        ensure!(code(&o)? == 0 && o.stdout == b"busybox\n", "exec right after start: {o:?}");
    }
    Ok(())
}
