//! `stats`: docker-stats-like resource usage, as a table (redrawn in place on a terminal, repeated otherwise)
//! or as JSON lines (one object per sample).
//!
//! Streaming, the server sends a sample of every container once per interval; a table is drawn when a round is
//! complete (the stream has been quiet for a moment, or a container comes round again). `--no-stream` takes two
//! one-shot samples a second apart, so that it can show a CPU percent, and prints the second.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use cm_api::v1::{self as pb, ContainerState};
use serde_json::{Value, json};

use crate::connect::Client;
use crate::error::status_error;
use crate::format::{self, rfc3339};

/// What `stats` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default: running ones); stopped ones get a row of zeros.
    #[arg(short, long)]
    all: bool,
    /// Print one sample (taken over one second) and exit.
    #[arg(long)]
    no_stream: bool,
    /// Output: a table, or json (one object per sample and line; stopped containers are left out).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Don't truncate ids.
    #[arg(long)]
    no_trunc: bool,
    /// Container ids, id prefixes or names (default: all running containers, those started later too).
    #[arg(value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// How long `--no-stream` waits between its two samples.
const NO_STREAM_INTERVAL: Duration = Duration::from_secs(1);
/// A streamed round is complete when no sample came for this long.
const ROUND_QUIET: Duration = Duration::from_millis(150);

const HEADER: [&str; 8] =
    ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"];

/// `stats`: exits when the stream ends (or after one sample with --no-stream).
pub async fn stats(client: &mut Client, mut options: StatsArgs) -> anyhow::Result<i32> {
    let containers = std::mem::take(&mut options.containers);
    // Rows of containers that are not running: those named, or all with --all.
    let stopped = stopped_containers(client, &containers, options.all).await?;
    if options.no_stream {
        return no_stream(client, containers, &stopped, &options).await;
    }
    let request =
        pb::StatsRequest { containers: running_names(&containers, &stopped), no_stream: false, interval: None };
    if !containers.is_empty() && request.containers.is_empty() {
        // Every named container is stopped: nothing will ever be sampled.
        print_round(&[], &stopped, &options, false)?;
        return Ok(0);
    }
    let mut stream = client.stats(request).await.map_err(status_error)?.into_inner();
    let redraw = options.format == Format::Table && std::io::stdout().is_terminal();
    let mut round: Vec<pb::StatsResponse> = Vec::new();
    loop {
        let next = if round.is_empty() {
            Some(stream.message().await)
        } else {
            tokio::time::timeout(ROUND_QUIET, stream.message()).await.ok()
        };
        match next {
            // Quiet: the round is complete.
            None => print_round(&std::mem::take(&mut round), &stopped, &options, redraw)?,
            Some(Ok(Some(sample))) => {
                if options.format == Format::Json {
                    println!("{}", sample_json(&sample));
                    std::io::stdout().flush()?;
                    continue;
                }
                if round.iter().any(|s| s.id == sample.id) {
                    print_round(&std::mem::take(&mut round), &stopped, &options, redraw)?;
                }
                round.push(sample);
            }
            Some(Ok(None)) => {
                if !round.is_empty() {
                    print_round(&round, &stopped, &options, redraw)?;
                }
                return Ok(0);
            }
            Some(Err(status)) => return Err(status_error(status)),
        }
    }
}

/// Two one-shot samples of every running container a second apart; the second is printed, with the CPU percent
/// over the second between them.
async fn no_stream(
    client: &mut Client,
    containers: Vec<String>,
    stopped: &[pb::Container],
    options: &StatsArgs,
) -> anyhow::Result<i32> {
    let running = running_names(&containers, stopped);
    if !containers.is_empty() && running.is_empty() {
        print_round(&[], stopped, options, false)?;
        return Ok(0);
    }
    let first = one_shot(client, running.clone()).await?;
    tokio::time::sleep(NO_STREAM_INTERVAL).await;
    // All running ones, then those of the first sample: a named container that stopped meanwhile is dropped
    // instead of failing the call.
    let second = one_shot(client, Vec::new()).await?;
    let wanted: HashSet<&str> = first.iter().map(|s| s.id.as_str()).collect();
    let mut samples: Vec<pb::StatsResponse> = second.into_iter().filter(|s| wanted.contains(s.id.as_str())).collect();
    for sample in &mut samples {
        let before = first.iter().find(|s| s.id == sample.id).expect("filtered by the first sample's ids");
        let percent = cpu_percent(before, sample);
        if let Some(cpu) = sample.cpu.as_mut() {
            cpu.percent = percent;
        }
    }
    if options.format == Format::Json {
        for sample in &samples {
            println!("{}", sample_json(sample));
        }
        return Ok(0);
    }
    print_round(&samples, stopped, options, false)?;
    Ok(0)
}

async fn one_shot(client: &mut Client, containers: Vec<String>) -> anyhow::Result<Vec<pb::StatsResponse>> {
    let request = pb::StatsRequest { containers, no_stream: true, interval: None };
    let mut stream = client.stats(request).await.map_err(status_error)?.into_inner();
    let mut samples = Vec::new();
    while let Some(sample) = stream.message().await.map_err(status_error)? {
        samples.push(sample);
    }
    Ok(samples)
}

/// Percent of one CPU between two samples of a container: CPU time over wall-clock time.
pub fn cpu_percent(before: &pb::StatsResponse, after: &pb::StatsResponse) -> f64 {
    let nanos =
        |t: Option<prost_types::Timestamp>| t.map_or(0, |t| t.seconds as i128 * 1_000_000_000 + t.nanos as i128);
    let wall = nanos(after.time) - nanos(before.time);
    let cpu = |s: &pb::StatsResponse| s.cpu.as_ref().map_or(0, |c| c.total_ns);
    if wall <= 0 {
        return 0.0;
    }
    cpu(after).saturating_sub(cpu(before)) as f64 * 100.0 / wall as f64
}

/// The containers that are not running among those named (all of them when none are named and `all`).
async fn stopped_containers(client: &mut Client, names: &[String], all: bool) -> anyhow::Result<Vec<pb::Container>> {
    let is_stopped = |c: &pb::Container| c.state != ContainerState::Running as i32;
    if names.is_empty() {
        if !all {
            return Ok(Vec::new());
        }
        let listed = client.list(pb::ListRequest { all: true }).await.map_err(status_error)?.into_inner();
        return Ok(listed.containers.into_iter().filter(is_stopped).collect());
    }
    let mut stopped = Vec::new();
    for name in names {
        let request = pb::InspectRequest { container: name.clone() };
        let c = client.inspect(request).await.map_err(status_error)?.into_inner().container.unwrap_or_default();
        if is_stopped(&c) {
            stopped.push(c);
        }
    }
    Ok(stopped)
}

/// The names given minus those of stopped containers (by name, id or id prefix).
fn running_names(names: &[String], stopped: &[pb::Container]) -> Vec<String> {
    let is_stopped = |name: &String| stopped.iter().any(|c| c.name == *name || c.id.starts_with(name.as_str()));
    names.iter().filter(|n| !is_stopped(n)).cloned().collect()
}

fn print_round(
    samples: &[pb::StatsResponse],
    stopped: &[pb::Container],
    options: &StatsArgs,
    redraw: bool,
) -> anyhow::Result<()> {
    let id = |id: &str| if options.no_trunc { id.to_string() } else { format::short_id(id).to_string() };
    let mut rows: Vec<Vec<String>> = samples.iter().map(|s| row(s, &id(&s.id))).collect();
    rows.extend(stopped.iter().map(|c| {
        let mut row = vec![id(&c.id), c.name.clone()];
        row.extend(["0.00%", "0B / 0B", "0.00%", "0B / 0B", "0B / 0B", "0"].map(String::from));
        row
    }));
    let mut out = std::io::stdout().lock();
    if redraw {
        // Clear the screen and go home, as docker stats does.
        write!(out, "\x1b[2J\x1b[H")?;
    }
    write!(out, "{}", format::table(&HEADER, &rows))?;
    out.flush()?;
    Ok(())
}

/// A table row: docker's columns and units (binary for memory, decimal for I/O).
pub fn row(s: &pb::StatsResponse, id: &str) -> Vec<String> {
    let cpu = s.cpu.unwrap_or_default();
    let memory = s.memory.unwrap_or_default();
    let io = s.block_io.unwrap_or_default();
    let (rx, tx) = s.networks.iter().fold((0, 0), |(rx, tx), n| (rx + n.rx_bytes, tx + n.tx_bytes));
    let (limit, mem_percent) = match memory.limit_bytes {
        0 => ("unlimited".to_string(), "--".to_string()),
        limit => (binary_size(limit), format!("{:.2}%", memory.working_set_bytes as f64 * 100.0 / limit as f64)),
    };
    vec![
        id.to_string(),
        s.name.clone(),
        format!("{:.2}%", cpu.percent),
        format!("{} / {limit}", binary_size(memory.working_set_bytes)),
        mem_percent,
        format!("{} / {}", decimal_size(rx), decimal_size(tx)),
        format!("{} / {}", decimal_size(io.read_bytes), decimal_size(io.write_bytes)),
        s.pids.as_ref().map_or(0, |p| p.current).to_string(),
    ]
}

/// `value` with `digits` significant digits, without trailing zeros (Go's %.Ng for the values here).
fn significant(value: f64, digits: i32) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let whole_digits = value.abs().log10().floor() as i32 + 1;
    let decimals = (digits - whole_digits).max(0) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text }
}

/// Memory as docker stats shows it: 1024-based, 4 significant digits ("1.953MiB", "256MiB", "0B").
pub fn binary_size(bytes: u64) -> String {
    scaled(bytes, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB", "PiB"], 4)
}

/// I/O as docker stats shows it: 1000-based, 3 significant digits ("1.2kB", "12.3MB", "0B").
pub fn decimal_size(bytes: u64) -> String {
    scaled(bytes, 1000.0, &["B", "kB", "MB", "GB", "TB", "PB"], 3)
}

fn scaled(bytes: u64, base: f64, units: &[&str], digits: i32) -> String {
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= base && unit < units.len() - 1 {
        value /= base;
        unit += 1;
    }
    format!("{}{}", significant(value, digits), units[unit])
}

/// One sample as a JSON object (the API's field names).
pub fn sample_json(s: &pb::StatsResponse) -> Value {
    let cpu = s.cpu.unwrap_or_default();
    let memory = s.memory.unwrap_or_default();
    let pids = s.pids.unwrap_or_default();
    let io = s.block_io.unwrap_or_default();
    let networks: Vec<Value> = s
        .networks
        .iter()
        .map(|n| {
            json!({
                "interface": n.interface, "rx_bytes": n.rx_bytes, "tx_bytes": n.tx_bytes,
                "rx_packets": n.rx_packets, "tx_packets": n.tx_packets, "rx_errors": n.rx_errors,
                "tx_errors": n.tx_errors, "rx_dropped": n.rx_dropped, "tx_dropped": n.tx_dropped,
            })
        })
        .collect();
    json!({
        "id": s.id,
        "name": s.name,
        "time": s.time.map(|t| rfc3339(&t)),
        "cpu": {
            "total_ns": cpu.total_ns, "user_ns": cpu.user_ns, "system_ns": cpu.system_ns,
            "throttled_periods": cpu.throttled_periods, "throttled_ns": cpu.throttled_ns,
            "online_cpus": cpu.online_cpus, "percent": cpu.percent,
        },
        "memory": {
            "usage_bytes": memory.usage_bytes, "working_set_bytes": memory.working_set_bytes,
            "limit_bytes": memory.limit_bytes, "rss_bytes": memory.rss_bytes, "cache_bytes": memory.cache_bytes,
            "swap_bytes": memory.swap_bytes, "oom_kills": memory.oom_kills,
        },
        "pids": { "current": pids.current, "limit": pids.limit },
        "block_io": {
            "read_bytes": io.read_bytes, "write_bytes": io.write_bytes, "read_ops": io.read_ops,
            "write_ops": io.write_ops,
        },
        "networks": networks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn sizes_read_like_docker_stats() {
        assert_eq!(binary_size(0), "0B");
        assert_eq!(binary_size(1536 * 1024), "1.5MiB");
        assert_eq!(binary_size(256 * MIB), "256MiB");
        assert_eq!(binary_size(2_048_000), "1.953MiB");
        assert_eq!(binary_size(1023), "1023B");
        assert_eq!(decimal_size(0), "0B");
        assert_eq!(decimal_size(1234), "1.23kB");
        assert_eq!(decimal_size(12_345_678), "12.3MB");
        assert_eq!(decimal_size(999), "999B");
    }

    fn sample(seconds: i64, nanos: i32, cpu_ns: u64) -> pb::StatsResponse {
        pb::StatsResponse {
            id: "0123456789abcdef".into(),
            name: "web".into(),
            time: Some(prost_types::Timestamp { seconds, nanos }),
            cpu: Some(pb::CpuStats { total_ns: cpu_ns, percent: 49.5, ..Default::default() }),
            memory: Some(pb::MemoryStats {
                usage_bytes: 3 * MIB,
                working_set_bytes: 2 * MIB,
                limit_bytes: 256 * MIB,
                ..Default::default()
            }),
            pids: Some(pb::PidsStats { current: 4, limit: 0 }),
            block_io: Some(pb::BlockIoStats { read_bytes: 1200, write_bytes: 0, ..Default::default() }),
            networks: vec![pb::NetworkStats {
                interface: "eth0".into(),
                rx_bytes: 1500,
                tx_bytes: 648,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_row_has_dockers_columns() {
        let row = row(&sample(10, 0, 0), "0123456789ab");
        assert_eq!(row, ["0123456789ab", "web", "49.50%", "2MiB / 256MiB", "0.78%", "1.5kB / 648B", "1.2kB / 0B", "4"]);
        let mut unlimited = sample(10, 0, 0);
        unlimited.memory.as_mut().unwrap().limit_bytes = 0;
        let row = super::row(&unlimited, "x");
        assert_eq!((row[3].as_str(), row[4].as_str()), ("2MiB / unlimited", "--"));
    }

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time_of_one_cpu() {
        let before = sample(10, 0, 1_000_000_000);
        let after = sample(11, 0, 1_500_000_000);
        assert!((cpu_percent(&before, &after) - 50.0).abs() < 1e-9);
        assert_eq!(cpu_percent(&after, &before), 0.0, "time going backwards reads 0");
    }

    #[test]
    fn json_uses_the_apis_field_names() {
        let value = sample_json(&sample(1_714_557_600, 0, 7));
        assert_eq!(value["time"], "2024-05-01T10:00:00Z");
        assert_eq!(value["cpu"]["total_ns"], 7);
        assert_eq!(value["memory"]["limit_bytes"], 256 * MIB);
        assert_eq!(value["networks"][0]["interface"], "eth0");
    }
}
