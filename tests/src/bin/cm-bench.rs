//! The numbers of the benchmarks in bench/: statistics and markdown tables of the samples the scripts took,
//! the size of a pushed image, and API latencies timed here over one connection to cm-server (each phase from
//! outside the server: the time a request was sent and its responses arrived; no log is read).
//!
//! ```text
//! cm-bench compare --what run --cm-label "cm-client run --rm" --podman-label "podman run --rm" runs.txt
//! cm-bench row --label "cm-client --version" version.txt
//! cm-bench run-latency --host unix:/tmp/cm.sock --image 127.0.0.1:5000/bench/busybox --runs 11
//! cm-bench exec-latency --host unix:/tmp/cm.sock --container web --runs 11
//! cm-bench stats-latency --host unix:/tmp/cm.sock --runs 100 --expect 1 web
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use cm_api::v1 as pb;
use cm_e2e::bench::{self, Summary};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

type Client = pb::container_service_client::ContainerServiceClient<tonic::transport::Channel>;

#[derive(Parser)]
#[command(about = "Statistics, reports and API latencies for cm's benchmarks (bench/)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The table and comparison of interleaved cm and podman runs: FILE holds "TOOL PREDECESSOR MICROSECONDS"
    /// lines (TOOL cm or podman).
    Compare {
        /// What was run, for the text: "run", "exec".
        #[arg(long)]
        what: String,
        #[arg(long)]
        cm_label: String,
        #[arg(long)]
        podman_label: String,
        /// The p50 cm should meet.
        #[arg(long)]
        target_ms: f64,
        file: std::path::PathBuf,
    },
    /// The table and comparison of interleaved pulls: FILE holds "TOOL NANOSECONDS" lines.
    PullCompare {
        /// Compressed size of the image (for the throughput).
        #[arg(long)]
        bytes: u64,
        /// podman's storage driver.
        #[arg(long)]
        driver: String,
        file: std::path::PathBuf,
    },
    /// One table row of the microsecond samples in FILE (one a line): "| LABEL | n | min | p50 | p90 | max |",
    /// or with --short "| LABEL | median | min | max |".
    Row {
        #[arg(long)]
        label: String,
        #[arg(long)]
        short: bool,
        file: std::path::PathBuf,
    },
    /// The median of the samples in FILE (one a line), rounded to an integer.
    Median { file: std::path::PathBuf },
    /// "MIN P50 P90 MAX" (rounded) of the samples on stdin, one a line; "- - - -" without samples.
    Summary,
    /// Total compressed size (config and layers) and layer count of REPO:TAG's manifest: "BYTES LAYERS".
    ImageSize {
        /// Registry address, 127.0.0.1:PORT.
        #[arg(long)]
        registry: String,
        #[arg(long)]
        name: String,
    },
    /// Runs RUNS containers of `true` through the API as `cm-client run --rm` does (Create with auto-remove,
    /// then Attach with start) on one connection and prints a table of the phases seen from the client.
    RunLatency {
        #[arg(long)]
        host: cm_api::Address,
        #[arg(long)]
        image: String,
        /// bridge or none.
        #[arg(long, default_value = "bridge")]
        network: String,
        #[arg(long, default_value_t = 11)]
        runs: usize,
    },
    /// Execs `true` RUNS times into CONTAINER through the API on one connection and prints a table of the
    /// phases seen from the client.
    ExecLatency {
        #[arg(long)]
        host: cm_api::Address,
        #[arg(long)]
        container: String,
        #[arg(long, default_value_t = 11)]
        runs: usize,
    },
    /// Times one-shot Stats calls over one connection to cm-server: prints each call's wall-clock time in
    /// microseconds (request sent to the last sample received), one per line, and checks each call returned
    /// `--expect` samples.
    StatsLatency {
        #[arg(long)]
        host: cm_api::Address,
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// Samples each call must return.
        #[arg(long)]
        expect: usize,
        /// Containers to sample (default: all running ones).
        containers: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Compare { what, cm_label, podman_label, target_ms, file } => {
            let runs = bench::parse_runs(&read(&file)?)?;
            print!("{}", bench::comparison(&what, &cm_label, &podman_label, target_ms, &runs)?);
        }
        Cmd::PullCompare { bytes, driver, file } => {
            print!("{}", bench::pull_comparison(bytes, &driver, &bench::parse_runs(&read(&file)?)?)?);
        }
        Cmd::Row { label, short, file } => {
            let values = bench::parse_values(&read(&file)?)?;
            println!("{}", if short { bench::median_row(&label, &values) } else { bench::full_row(&label, &values) });
        }
        Cmd::Median { file } => {
            let values = bench::parse_values(&read(&file)?)?;
            let summary = Summary::of(&values).with_context(|| format!("{} holds no samples", file.display()))?;
            println!("{:.0}", summary.p50);
        }
        Cmd::Summary => {
            let values = bench::parse_values(&std::io::read_to_string(std::io::stdin())?)?;
            match Summary::of(&values) {
                Some(s) => println!("{:.0} {:.0} {:.0} {:.0}", s.min, s.p50, s.p90, s.max),
                None => println!("- - - -"),
            }
        }
        Cmd::ImageSize { registry, name } => {
            let (repo, tag) = name.rsplit_once(':').unwrap_or((&name, "latest"));
            let accept = [cm_e2e::media_type::OCI_MANIFEST, cm_e2e::media_type::DOCKER_MANIFEST];
            let manifest = cm_e2e::get_manifest(&registry, repo, tag, &accept)?;
            let json: serde_json::Value = serde_json::from_slice(&manifest.bytes)?;
            let layers = json["layers"].as_array().context("the manifest has no layers")?;
            let size = |v: &serde_json::Value| v["size"].as_u64().unwrap_or(0);
            let bytes = size(&json["config"]) + layers.iter().map(size).sum::<u64>();
            ensure!(bytes > 0, "the manifest gives no sizes");
            println!("{bytes} {}", layers.len());
        }
        Cmd::RunLatency { host, image, network, runs } => block_on(run_latency(host, image, network, runs))?,
        Cmd::ExecLatency { host, container, runs } => block_on(exec_latency(host, container, runs))?,
        Cmd::StatsLatency { host, runs, expect, containers } => {
            block_on(stats_latency(host, runs, expect, containers))?
        }
    }
    Ok(())
}

fn read(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn block_on<F: Future<Output = Result<()>>>(future: F) -> Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(future)
}

async fn connect(host: cm_api::Address) -> Result<Client> {
    let cm_api::Address::Unix(path) = host else { bail!("cm-bench needs a unix: address") };
    let channel = tonic::transport::Endpoint::from_static("http://cm.sock")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move { tokio::net::UnixStream::connect(path).await.map(hyper_util::rt::TokioIo::new) }
        }))
        .await
        .context("connecting to cm-server")?;
    Ok(Client::new(channel))
}

/// Microseconds from `from` to `to`.
fn us(from: Instant, to: Instant) -> f64 {
    to.duration_since(from).as_secs_f64() * 1e6
}

/// Prints "| phase | median | min | max |" rows of the phases (label, µs samples), the header first.
fn phase_table(phases: &[(&str, Vec<f64>)]) {
    println!("| phase (seen from the client) | median | min | max |");
    println!("|------------------------------|-------:|----:|----:|");
    for (label, samples) in phases {
        println!("{}", bench::median_row(label, samples));
    }
}

async fn run_latency(host: cm_api::Address, image: String, network: String, runs: usize) -> Result<()> {
    let network = match network.as_str() {
        "bridge" => pb::NetworkMode::Bridge,
        "none" => pb::NetworkMode::None,
        other => bail!("--network must be bridge or none, not {other:?}"),
    };
    let mut client = connect(host).await?;
    let mut phases: [(&str, Vec<f64>); 6] = [
        ("Create call (request → response): image, record", Vec::new()),
        ("Attach(start) → started frame: cgroup, network, monitor, init released", Vec::new()),
        ("started frame → exit frame: rootfs, exec `true`, exit, exit recorded", Vec::new()),
        ("exit frame → end of the stream", Vec::new()),
        ("**total** (Create sent → stream ended)", Vec::new()),
        ("end of the stream → container gone (auto-remove, after the client is done)", Vec::new()),
    ];
    for _ in 0..runs {
        let spec = pb::ContainerSpec {
            image: image.clone(),
            command: vec!["true".into()],
            network: network as i32,
            auto_remove: true,
            ..Default::default()
        };
        let t0 = Instant::now();
        let id = client.create(pb::CreateRequest { spec: Some(spec) }).await?.into_inner().id;
        let created = Instant::now();
        let (tx, rx) = mpsc::channel(2);
        let start = pb::AttachStart { container: id.clone(), start: true, ..Default::default() };
        tx.send(pb::AttachRequest { frame: Some(pb::attach_request::Frame::Start(start)) }).await?;
        let mut stream = client.attach(ReceiverStream::new(rx)).await?.into_inner();
        let (mut started, mut exited) = (None, None);
        while let Some(message) = stream.message().await? {
            match message.frame {
                Some(pb::attach_response::Frame::Started(_)) => started = Some(Instant::now()),
                Some(pb::attach_response::Frame::Exit(e)) => {
                    ensure!(e.exit_code == 0, "the container exited with {}", e.exit_code);
                    exited = Some(Instant::now());
                }
                _ => {}
            }
        }
        let ended = Instant::now();
        drop(tx);
        let (started, exited) = (started.context("no started frame")?, exited.context("no exit frame")?);
        let gone = until_gone(&mut client, &id).await?;
        for (phase, value) in phases.iter_mut().zip([
            us(t0, created),
            us(created, started),
            us(started, exited),
            us(exited, ended),
            us(t0, ended),
            us(ended, gone),
        ]) {
            phase.1.push(value);
        }
        // Like the timed runs, the next one does not pay for this one's writeback.
        nix::unistd::sync();
    }
    phase_table(&phases);
    Ok(())
}

/// Polls Inspect until the container is gone (NOT_FOUND); when that was seen.
async fn until_gone(client: &mut Client, id: &str) -> Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.inspect(pb::InspectRequest { container: id.into() }).await {
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(Instant::now()),
            Err(status) => return Err(status.into()),
            Ok(_) if Instant::now() > deadline => bail!("container {id} was not removed within 10 s"),
            Ok(_) => tokio::time::sleep(Duration::from_micros(500)).await,
        }
    }
}

async fn exec_latency(host: cm_api::Address, container: String, runs: usize) -> Result<()> {
    let mut client = connect(host).await?;
    let mut phases: [(&str, Vec<f64>); 4] = [
        ("Exec(start) → started frame: the monitor spawns the process, reports its pid", Vec::new()),
        ("started frame → exit frame: `true` runs and exits, the monitor reports the exit", Vec::new()),
        ("exit frame → end of the stream", Vec::new()),
        ("**total** (Exec sent → stream ended)", Vec::new()),
    ];
    for _ in 0..runs {
        let start = pb::ExecStart { container: container.clone(), argv: vec!["true".into()], ..Default::default() };
        let (tx, rx) = mpsc::channel(2);
        let t0 = Instant::now();
        tx.send(pb::ExecRequest { frame: Some(pb::exec_request::Frame::Start(start)) }).await?;
        let mut stream = client.exec(ReceiverStream::new(rx)).await?.into_inner();
        let (mut started, mut exited) = (None, None);
        while let Some(message) = stream.message().await? {
            match message.frame {
                Some(pb::exec_response::Frame::Started(_)) => started = Some(Instant::now()),
                Some(pb::exec_response::Frame::Exit(e)) => {
                    ensure!(e.exit_code == 0, "the exec exited with {}", e.exit_code);
                    exited = Some(Instant::now());
                }
                _ => {}
            }
        }
        let ended = Instant::now();
        drop(tx);
        let (started, exited) = (started.context("no started frame")?, exited.context("no exit frame")?);
        for (phase, value) in
            phases.iter_mut().zip([us(t0, started), us(started, exited), us(exited, ended), us(t0, ended)])
        {
            phase.1.push(value);
        }
    }
    phase_table(&phases);
    Ok(())
}

async fn stats_latency(host: cm_api::Address, runs: usize, expect: usize, containers: Vec<String>) -> Result<()> {
    let mut client = connect(host).await?;
    for _ in 0..runs {
        let request = pb::StatsRequest { containers: containers.clone(), no_stream: true, interval: None };
        let started = Instant::now();
        let mut stream = client.stats(request).await?.into_inner();
        let mut samples = 0;
        while stream.message().await?.is_some() {
            samples += 1;
        }
        let micros = started.elapsed().as_micros();
        ensure!(samples == expect, "a Stats call returned {samples} samples, not {expect}");
        println!("{micros}");
    }
    Ok(())
}
