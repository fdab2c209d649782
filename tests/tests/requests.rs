//! End to end: who may talk to cm-server and what a request may carry. TCP is served only with TLS and a
//! client certificate (certificates made here with rcgen: a CA, the server's, a client's, and a client's from
//! another CA); TCP without TLS is refused at start. Oversized requests are refused as INVALID_ARGUMENT naming
//! the field while the server keeps answering; a large but bounded exec env reaches the monitor; a 64 MB stdin
//! frame is an error; an image whose /etc/passwd is /dev/zero fails setup at once; a cancelled exec is killed;
//! 1,000 execs leave no descriptor behind in the monitor. One registry and one server serve the whole binary.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use cm_api::v1 as pb;
use cm_e2e::certs::Certs;
use cm_e2e::harness::{
    TestServer, bounded, busybox_registry_and_server, eventually, processes_mentioning, run_suite, runtime, stderr,
    stdout, summary, unique,
};
use cm_e2e::server::bin;
use cm_e2e::{Compression, Entry, Image, ImageConfig, Layer, ManifestFormat, Registry, fixtures, push_image, trials};
use libtest_mimic::Arguments;
use pb::exec_request::Frame as In;
use pb::exec_response::Frame as Out;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

struct World {
    registry: Registry,
    server: TestServer,
    image: String,
    /// A container running `sleep` for the whole binary.
    container: String,
    /// The server's TLS listener, tcp://127.0.0.1:PORT.
    tcp: String,
    certs: Certs,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn setup() -> Result<World> {
    let certs = Certs::make()?;
    let tcp = format!("tcp://127.0.0.1:{}", free_port()?);
    let (cert, key, ca) = (certs.path("server.pem"), certs.path("server.key"), certs.path("ca.pem"));
    let flags = [
        "--listen",
        &tcp,
        "--tls-cert",
        cert.to_str().context("cert path")?,
        "--tls-key",
        key.to_str().context("key path")?,
        "--tls-ca",
        ca.to_str().context("ca path")?,
    ];
    let (registry, server, image) = busybox_registry_and_server(&flags)?;
    let container = server.client_ok(&["run", "-d", &image, "sleep", "100000"])?.trim().to_string();
    Ok(World { registry, server, image, container, tcp, certs })
}

fn main() {
    let args = Arguments::from_args();
    let world = Arc::new(setup().expect("setting up the certificates, registry, server and container"));
    let trials = trials![world;
        a_tcp_client_with_a_certificate_of_the_ca_is_served,
        a_tcp_client_without_a_certificate_is_refused,
        a_client_certificate_of_another_ca_is_refused,
        tcp_without_tls_is_refused_at_start,
        a_create_with_100000_env_entries_is_refused_while_the_server_answers_others,
        oversized_fields_are_refused_naming_the_field_and_the_limit,
        env_entries_with_a_nul_byte_are_refused,
        an_exec_with_a_large_env_reaches_the_monitor_and_a_larger_one_is_refused,
        a_64_mb_stdin_frame_is_an_error_not_exit_137,
        an_image_whose_passwd_is_dev_zero_fails_setup_with_a_clear_error,
        an_exec_whose_client_went_away_after_half_closing_is_killed,
        a_thousand_execs_leave_no_descriptor_in_the_monitor,
    ];
    run_suite(&args, trials, world, |w| &w.server);
}

/// cm-client against the TLS listener, with `tls` options (flag, certs file name).
fn tls_client(w: &World, tls: &[(&str, &str)], args: &[&str]) -> Result<std::process::Output> {
    let mut command = Command::new(bin("cm-client"));
    command.arg("--host").arg(&w.tcp);
    for (flag, file) in tls {
        command.arg(flag).arg(w.certs.path(file));
    }
    command.args(args);
    bounded(command, None, Duration::from_secs(30))
}

const FULL: [(&str, &str); 3] = [("--tls-ca", "ca.pem"), ("--tls-cert", "client.pem"), ("--tls-key", "client.key")];

fn a_tcp_client_with_a_certificate_of_the_ca_is_served(w: &World) -> Result<()> {
    let out = tls_client(w, &FULL, &["images"])?;
    ensure!(out.status.success() && stdout(&out).contains("busybox"), "{}", summary(&out));
    let out = tls_client(w, &FULL, &["exec", &w.container, "echo", "over tls"])?;
    ensure!(out.status.success() && stdout(&out) == "over tls\n", "{}", summary(&out));
    // The same through the environment.
    let mut command = Command::new(bin("cm-client"));
    command.args(["ps", "-q"]).env("CM_HOST", &w.tcp);
    for (var, file) in [("CM_TLS_CA", "ca.pem"), ("CM_TLS_CERT", "client.pem"), ("CM_TLS_KEY", "client.key")] {
        command.env(var, w.certs.path(file));
    }
    let out = bounded(command, None, Duration::from_secs(30))?;
    ensure!(out.status.success() && w.container.starts_with(stdout(&out).trim()), "{}", summary(&out));
    Ok(())
}

fn a_tcp_client_without_a_certificate_is_refused(w: &World) -> Result<()> {
    let out = tls_client(w, &[("--tls-ca", "ca.pem")], &["images"])?;
    ensure!(!out.status.success(), "served without a client certificate: {}", summary(&out));
    let out = tls_client(w, &[], &["images"])?;
    ensure!(!out.status.success(), "served over plaintext TCP: {}", summary(&out));
    ensure!(stderr(&out).contains("needs TLS"), "the error says TLS is needed: {}", summary(&out));
    Ok(())
}

fn a_client_certificate_of_another_ca_is_refused(w: &World) -> Result<()> {
    let other = [("--tls-ca", "ca.pem"), ("--tls-cert", "other.pem"), ("--tls-key", "other.key")];
    let out = tls_client(w, &other, &["images"])?;
    ensure!(!out.status.success(), "served a certificate of another CA: {}", summary(&out));
    // And a server certificate this client does not trust (its CA is the other one).
    let wrong_ca = [("--tls-ca", "other.pem"), ("--tls-cert", "client.pem"), ("--tls-key", "client.key")];
    let out = tls_client(w, &wrong_ca, &["images"])?;
    ensure!(!out.status.success(), "trusted a server certificate of another CA: {}", summary(&out));
    Ok(())
}

/// cm-server with `args` and a fresh root; it must exit non-zero at once, with `message` in its output.
fn refused_at_start(args: &[&str], message: &str) -> Result<()> {
    let root = tempfile::Builder::new().prefix("cm-e2e-refused-").tempdir_in("/tmp")?;
    let mut command = Command::new(bin("cm-server"));
    command.arg("--root").arg(root.path()).args(["--bridge", "none"]).args(args);
    let out = bounded(command, None, Duration::from_secs(30))?;
    ensure!(!out.status.success(), "cm-server {args:?} started: {}", summary(&out));
    ensure!(stderr(&out).contains(message), "expected {message:?}: {}", summary(&out));
    ensure!(std::fs::read_dir(root.path())?.next().is_none(), "the refused server left state in its root");
    Ok(())
}

fn tcp_without_tls_is_refused_at_start(w: &World) -> Result<()> {
    let socket = w.certs.path("refused.sock");
    let unix = format!("unix:{}", socket.display());
    for host in ["127.0.0.1", "[::1]"] {
        let tcp = format!("tcp://{host}:{}", free_port()?);
        refused_at_start(&["--listen", &unix, "--listen", &tcp], "without TLS")?;
    }
    ensure!(!socket.exists(), "the refused server bound its unix socket");
    let cert = w.certs.path("server.pem").display().to_string();
    let tcp = format!("tcp://127.0.0.1:{}", free_port()?);
    refused_at_start(&["--listen", &tcp, "--tls-cert", &cert], "missing --tls-key, --tls-ca")?;
    let not_pem = w.certs.path("ca.pem").display().to_string() + ".missing";
    let key = w.certs.path("server.key").display().to_string();
    refused_at_start(&["--listen", &tcp, "--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &not_pem], "--tls-ca")?;
    Ok(())
}

fn spec(w: &World) -> pb::ContainerSpec {
    pb::ContainerSpec { image: w.image.clone(), command: vec!["true".into()], ..Default::default() }
}

fn invalid(result: Result<impl std::fmt::Debug, tonic::Status>, needles: &[&str]) -> Result<()> {
    let status = match result {
        Ok(v) => bail!("accepted: {v:?}"),
        Err(status) => status,
    };
    ensure!(status.code() == tonic::Code::InvalidArgument, "{status:?}");
    ensure!(status.message().len() < 300, "the message echoes the input: {} bytes", status.message().len());
    for needle in needles {
        ensure!(status.message().contains(needle), "{needle:?} not in {:?}", status.message());
    }
    Ok(())
}

fn a_create_with_100000_env_entries_is_refused_while_the_server_answers_others(w: &World) -> Result<()> {
    runtime().block_on(async {
        let env: Vec<String> = (0..100_000).map(|i| format!("VARIABLE_{i}=value")).collect();
        let mut creates = Vec::new();
        for _ in 0..4 {
            let mut client = w.server.grpc().await?;
            let request = pb::CreateRequest { spec: Some(pb::ContainerSpec { env: env.clone(), ..spec(w) }) };
            creates.push(tokio::spawn(async move { client.create(request).await }));
        }
        // Others are answered meanwhile, on their own connections.
        for _ in 0..10 {
            let mut client = w.server.grpc().await?;
            client.list(pb::ListRequest { all: true }).await?;
            client.list_images(pb::ListImagesRequest {}).await?;
        }
        for create in creates {
            invalid(create.await?, &["spec.env", "100000 entries", "limit of 4096"])?;
        }
        anyhow::Ok(())
    })
}

fn oversized_fields_are_refused_naming_the_field_and_the_limit(w: &World) -> Result<()> {
    let mega = "x".repeat(1 << 20);
    runtime().block_on(async {
        let mut client = w.server.grpc().await?;
        let name = pb::ContainerSpec { name: mega.clone(), ..spec(w) };
        invalid(client.create(pb::CreateRequest { spec: Some(name) }).await, &["spec.name", "limit of 253"])?;
        let labels = (0..1000).map(|i| (format!("l{i}"), String::new())).collect();
        let labels = pb::ContainerSpec { labels, ..spec(w) };
        invalid(client.run(pb::RunRequest { spec: Some(labels) }).await, &["spec.labels", "limit of 256"])?;
        let mounts = pb::ContainerSpec { mounts: vec![pb::Mount::default(); 200], ..spec(w) };
        invalid(client.create(pb::CreateRequest { spec: Some(mounts) }).await, &["spec.mounts", "limit of 128"])?;
        let ports = pb::ContainerSpec { ports: vec![pb::PortMapping::default(); 2000], ..spec(w) };
        invalid(client.create(pb::CreateRequest { spec: Some(ports) }).await, &["spec.ports", "limit of 1024"])?;
        let kill = pb::KillRequest { container: w.container.clone(), signal: mega.clone(), ..Default::default() };
        invalid(client.kill(kill).await, &["signal", "limit of 256"])?;
        let pull = pb::PullImageRequest { reference: mega.clone(), auth: None };
        invalid(client.pull_image(pull).await.map(|_| ()), &["reference", "limit of 1024"])?;
        let filters = pb::EventsRequest { filters: vec!["type=image".into(); 100], since: None };
        invalid(client.events(filters).await.map(|_| ()), &["filters", "limit of 64"])?;
        // A message past --max-request-size (4 MiB) is refused by the transport, not read.
        let huge = pb::ContainerSpec { env: vec![format!("A={}", "x".repeat(5 << 20))], ..spec(w) };
        let status = client.create(pb::CreateRequest { spec: Some(huge) }).await.unwrap_err();
        ensure!(status.code() == tonic::Code::OutOfRange, "{status:?}");
        ensure!(status.message().len() < 300, "{status:?}");
        anyhow::Ok(())
    })
}

fn env_entries_with_a_nul_byte_are_refused(w: &World) -> Result<()> {
    runtime().block_on(async {
        let mut client = w.server.grpc().await?;
        let nul = pb::ContainerSpec { env: vec!["A=b\0c".into()], ..spec(w) };
        invalid(client.create(pb::CreateRequest { spec: Some(nul) }).await, &["env", "NUL"])?;
        let mut s = start(&w.container, &["true"]);
        s.env = vec!["A=b\0c".into()];
        invalid(open_exec(w, s).await.map(|_| ()), &["env", "NUL"])?;
        anyhow::Ok(())
    })
}

fn start(container: &str, argv: &[&str]) -> pb::ExecStart {
    pb::ExecStart {
        container: container.into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Opens an Exec stream, `start` as its first frame, on a connection of its own.
async fn open_exec(
    w: &World,
    start: pb::ExecStart,
) -> Result<(mpsc::Sender<pb::ExecRequest>, tonic::Streaming<pb::ExecResponse>), tonic::Status> {
    let mut client = w.server.grpc().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (tx, rx) = mpsc::channel(8);
    tx.send(pb::ExecRequest { frame: Some(In::Start(start)) }).await.expect("the channel is open");
    let stream = client.exec(ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, stream))
}

/// Everything an exec stream sent until it ended: stdout, and the exit or the status it ended with.
async fn drain(stream: &mut tonic::Streaming<pb::ExecResponse>) -> (Vec<u8>, Result<pb::ExitStatus, tonic::Status>) {
    let mut out = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(pb::ExecResponse { frame: Some(Out::Stdout(d)) })) => out.extend(d),
            Ok(Some(pb::ExecResponse { frame: Some(Out::Exit(e)) })) => return (out, Ok(e)),
            Ok(Some(_)) => {}
            Ok(None) => return (out, Err(tonic::Status::unknown("the stream ended without an exit"))),
            Err(status) => return (out, Err(status)),
        }
    }
}

fn an_exec_with_a_large_env_reaches_the_monitor_and_a_larger_one_is_refused(w: &World) -> Result<()> {
    runtime().block_on(async {
        // 7 x 100 KiB: more than the 1 MiB monitor frames of before, within the API's 1 MiB for argv and env.
        let value = "v".repeat(100 << 10);
        let mut s = start(&w.container, &["sh", "-c", "echo ${#E0} ${#E6}"]);
        s.env = (0..7).map(|i| format!("E{i}={value}")).collect();
        let (tx, mut stream) = open_exec(w, s.clone()).await?;
        drop(tx);
        let (out, exit) = drain(&mut stream).await;
        ensure!(exit?.exit_code == 0, "the exec failed");
        ensure!(String::from_utf8_lossy(&out) == "102400 102400\n", "{:?}", String::from_utf8_lossy(&out));
        s.env = (0..11).map(|i| format!("E{i}={value}")).collect();
        invalid(open_exec(w, s).await.map(|_| ()), &["start.argv and start.env", "limit of 1048576"])?;
        anyhow::Ok(())
    })?;
    // The monitor is still there.
    ensure!(w.server.client_ok(&["exec", &w.container, "echo", "alive"])? == "alive\n");
    Ok(())
}

fn a_64_mb_stdin_frame_is_an_error_not_exit_137(w: &World) -> Result<()> {
    runtime().block_on(async {
        for (size, code) in [(64 << 20, tonic::Code::InvalidArgument), (2 << 20, tonic::Code::InvalidArgument)] {
            let mut s = start(&w.container, &["cat"]);
            s.stdin = true;
            let (tx, mut stream) = open_exec(w, s).await?;
            let frame = pb::ExecRequest { frame: Some(In::Stdin(pb::StdinData { data: vec![b'x'; size] })) };
            let sender = tokio::spawn(async move { tx.send(frame).await.is_ok().then_some(tx) });
            let (_, end) = drain(&mut stream).await;
            drop(sender.await?);
            match end {
                Ok(exit) => bail!("a {size}-byte stdin frame ended the exec with {exit:?}"),
                Err(status) => {
                    ensure!(status.code() == code, "{size} bytes: {status:?}");
                    ensure!(status.message().len() < 300, "{status:?}");
                }
            }
        }
        anyhow::Ok(())
    })
}

fn an_image_whose_passwd_is_dev_zero_fails_setup_with_a_clear_error(w: &World) -> Result<()> {
    let hostile =
        Layer::new(&[Entry::dir("/etc", 0o755), Entry::symlink("/etc/passwd", "/dev/zero")], Compression::Gzip);
    let image = Image::new(ManifestFormat::Oci, ImageConfig::default(), vec![fixtures::busybox_layer(), hostile]);
    push_image(&w.registry.addr(), "test/zero-passwd", "latest", &image)?;
    let reference = format!("{}/test/zero-passwd:latest", w.registry.addr());
    w.server.client_ok(&["pull", &reference])?;
    let name = unique("zero-passwd");
    let run = w.server.client_command(&["run", "--rm", "--name", &name, &reference, "true"]);
    let out = bounded(run, None, Duration::from_secs(60))?;
    ensure!(!out.status.success(), "{}", summary(&out));
    ensure!(stderr(&out).contains("/etc/passwd is not a regular file"), "{}", summary(&out));
    let _ = w.server.client(&["rm", "-f", &name]);
    w.server.client_ok(&["rmi", &reference])?;
    Ok(())
}

fn an_exec_whose_client_went_away_after_half_closing_is_killed(w: &World) -> Result<()> {
    let marker = "cm-e2e-half-closed-marker";
    runtime().block_on(async {
        let s = start(&w.container, &["sleep", "1000", marker]);
        let (tx, mut stream) = open_exec(w, s).await?;
        drop(tx); // the half-close: the process has no stdin to lose
        let first = stream.message().await?.and_then(|m| m.frame);
        ensure!(matches!(first, Some(Out::Started(_))), "{first:?}");
        drop(stream); // the client goes away (as at a deadline) while `sleep` prints nothing
        anyhow::Ok(())
    })?;
    eventually("the exec to be killed", Duration::from_secs(20), || {
        Ok(!w.server.client_ok(&["exec", &w.container, "ps"])?.contains(marker))
    })
}

fn monitor_fds(w: &World) -> Result<usize> {
    let monitor = processes_mentioning(&w.server.container_dir(&w.container).display().to_string());
    let [line] = monitor.as_slice() else { bail!("expected one monitor, found {monitor:?}") };
    let pid = line.split_whitespace().next().context("pid")?;
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

fn a_thousand_execs_leave_no_descriptor_in_the_monitor(w: &World) -> Result<()> {
    let before = monitor_fds(w)?;
    runtime().block_on(async {
        for i in 0..1000 {
            let (tx, mut stream) = open_exec(w, start(&w.container, &["true"])).await?;
            drop(tx);
            let (_, exit) = drain(&mut stream).await;
            ensure!(exit?.exit_code == 0, "exec {i} failed");
        }
        anyhow::Ok(())
    })?;
    // The last connections close as their streams end; give the monitor its poll round.
    eventually("the monitor's descriptors to return", Duration::from_secs(10), || Ok(monitor_fds(w)? <= before))
        .with_context(|| format!("{before} descriptors before, {} after", monitor_fds(w).unwrap_or(0)))
}
