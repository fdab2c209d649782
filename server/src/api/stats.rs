//! The Stats RPC: resource usage samples of one, several or all running containers, once or at an interval.
//!
//! Streaming, the first reading of each container is a baseline that is not sent: every sample sent carries
//! the CPU percent over the interval before it, `100 * (CPU ns used) / (wall-clock ns passed)`, i.e. percent of
//! one CPU (a busy loop limited to half a CPU reads 50, two busy CPUs 200), as docker computes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cm_api::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{RpcStream, timestamp};
use crate::containers::{Container, ContainerError, ContainerStatus, Containers, Sample};

/// The sampling interval when the request sets none.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest interval accepted: sampling faster measures mostly noise.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

pub async fn stats(
    containers: Arc<Containers>,
    request: pb::StatsRequest,
) -> Result<RpcStream<pb::StatsResponse>, Status> {
    let interval = match request.interval {
        None => DEFAULT_INTERVAL,
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            return Err(Status::invalid_argument("the stats interval must not be negative"));
        }
        Some(d) if d.seconds == 0 && d.nanos == 0 => DEFAULT_INTERVAL,
        Some(d) => Duration::new(d.seconds as u64, d.nanos as u32),
    };
    if interval < MIN_INTERVAL {
        return Err(Status::invalid_argument(format!(
            "the stats interval of {interval:?} is too short: use at least {MIN_INTERVAL:?}"
        )));
    }
    // Named containers must exist and run now; the stream then ends once all of them have stopped.
    let named = if request.containers.is_empty() {
        None
    } else {
        let mut list: Vec<Arc<Container>> = Vec::new();
        for name in &request.containers {
            let c = containers.get(name)?;
            if c.record().state.status != ContainerStatus::Running {
                return Err(Status::failed_precondition(format!(
                    "container {} is not running: Stats samples running containers only",
                    c.shown()
                )));
            }
            if !list.iter().any(|known| known.id == c.id) {
                list.push(c);
            }
        }
        Some(list)
    };
    if request.no_stream {
        let targets = named.clone().unwrap_or_else(|| running(&containers));
        let mut messages = Vec::new();
        for (c, sample, _) in sample_all(&containers, targets).await? {
            match sample {
                Ok(sample) => messages.push(Ok(to_proto(&c, &sample, 0.0))),
                // A named container that stopped since the check above is reported; an unnamed one is not.
                Err(e) if named.is_some() => return Err(e.into()),
                Err(_) => {}
            }
        }
        return Ok(Box::pin(tokio_stream::iter(messages)));
    }
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        // Container id -> (CPU ns, when) of its previous reading.
        let mut previous: HashMap<String, (u64, Instant)> = HashMap::new();
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = tx.closed() => return,
            }
            let targets = match &named {
                Some(list) => {
                    list.iter().filter(|c| c.record().state.status == ContainerStatus::Running).cloned().collect()
                }
                None => running(&containers),
            };
            if named.is_some() && targets.is_empty() {
                return;
            }
            let samples = match sample_all(&containers, targets).await {
                Ok(samples) => samples,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let mut current = HashMap::new();
            for (c, sample, at) in samples {
                // A container that stopped meanwhile is left out.
                let Ok(sample) = sample else { continue };
                let cpu_ns = sample.usage.cpu.total_ns;
                if let Some((before_ns, before)) = previous.get(&c.id) {
                    let elapsed = at.duration_since(*before).as_nanos().max(1) as f64;
                    let percent = cpu_ns.saturating_sub(*before_ns) as f64 * 100.0 / elapsed;
                    if tx.send(Ok(to_proto(&c, &sample, percent))).await.is_err() {
                        return;
                    }
                }
                current.insert(c.id.clone(), (cpu_ns, at));
            }
            previous = current;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

fn running(containers: &Containers) -> Vec<Arc<Container>> {
    containers.list().into_iter().filter(|c| c.record().state.status == ContainerStatus::Running).collect()
}

type Reading = (Arc<Container>, Result<Sample, ContainerError>, Instant);

/// Samples each container (file reads, off the async threads), with the moment of each reading.
async fn sample_all(containers: &Arc<Containers>, targets: Vec<Arc<Container>>) -> Result<Vec<Reading>, Status> {
    let containers = containers.clone();
    tokio::task::spawn_blocking(move || {
        targets
            .into_iter()
            .map(|c| {
                let sample = containers.sample(&c);
                (c, sample, Instant::now())
            })
            .collect()
    })
    .await
    .map_err(|e| Status::internal(format!("stats task: {e}")))
}

fn to_proto(c: &Container, sample: &Sample, cpu_percent: f64) -> pb::StatsResponse {
    let usage = &sample.usage;
    pb::StatsResponse {
        id: c.id.clone(),
        name: c.record().config.name,
        time: timestamp(sample.unix_nanos),
        cpu: Some(pb::CpuStats {
            total_ns: usage.cpu.total_ns,
            user_ns: usage.cpu.user_ns,
            system_ns: usage.cpu.system_ns,
            throttled_periods: usage.cpu.throttled_periods,
            throttled_ns: usage.cpu.throttled_ns,
            online_cpus: usage.cpu.online_cpus,
            percent: cpu_percent,
        }),
        memory: Some(pb::MemoryStats {
            usage_bytes: usage.memory.usage_bytes,
            working_set_bytes: usage.memory.working_set_bytes,
            limit_bytes: usage.memory.limit_bytes,
            rss_bytes: usage.memory.rss_bytes,
            cache_bytes: usage.memory.cache_bytes,
            swap_bytes: usage.memory.swap_bytes,
            oom_kills: usage.memory.oom_kills,
        }),
        pids: Some(pb::PidsStats { current: usage.pids.current, limit: usage.pids.limit }),
        block_io: Some(pb::BlockIoStats {
            read_bytes: usage.io.read_bytes,
            write_bytes: usage.io.write_bytes,
            read_ops: usage.io.read_ops,
            write_ops: usage.io.write_ops,
        }),
        networks: sample
            .networks
            .iter()
            .map(|n| pb::NetworkStats {
                interface: n.name.clone(),
                rx_bytes: n.rx_bytes,
                tx_bytes: n.tx_bytes,
                rx_packets: n.rx_packets,
                tx_packets: n.tx_packets,
                rx_errors: n.rx_errors,
                tx_errors: n.tx_errors,
                rx_dropped: n.rx_dropped,
                tx_dropped: n.tx_dropped,
            })
            .collect(),
    }
}
