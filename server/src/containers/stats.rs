//! A running container's resource usage: its cgroup's counters plus the network counters of its network
//! namespace, read from files (no process is spawned, so sampling many containers stays cheap).

use std::sync::Arc;

use super::{Container, ContainerError, ContainerStatus, Containers};
use crate::cgroups::Usage;
use crate::clock::now_nanos;

/// One sample of one container.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub unix_nanos: i64,
    pub usage: Usage,
    /// Every interface of the container's network namespace but loopback.
    pub networks: Vec<InterfaceCounters>,
}

/// Counters of one network interface, as /proc/net/dev has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Parses /proc/<pid>/net/dev: two header lines, then `name: rx bytes packets errs drop fifo frame compressed
/// multicast tx bytes packets errs drop fifo colls carrier compressed`. Loopback is left out (it is traffic the
/// container sends itself).
pub fn parse_net_dev(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let values: Vec<u64> = counters.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
            if name == "lo" || values.len() < 12 {
                return None;
            }
            Some(InterfaceCounters {
                name: name.to_string(),
                rx_bytes: values[0],
                rx_packets: values[1],
                rx_errors: values[2],
                rx_dropped: values[3],
                tx_bytes: values[8],
                tx_packets: values[9],
                tx_errors: values[10],
                tx_dropped: values[11],
            })
        })
        .collect()
}

impl Containers {
    /// A usage sample of a running container. FAILED_PRECONDITION when it is not running (or stops while
    /// being read).
    pub fn sample(&self, c: &Arc<Container>) -> Result<Sample, ContainerError> {
        let not_running = || ContainerError::NoUsage(c.shown());
        let record = c.record();
        if record.state.status != ContainerStatus::Running {
            return Err(not_running());
        }
        let cgroup = self.cgroup(c);
        let usage = match cgroup.usage() {
            Ok(usage) => usage,
            // The exit removes the cgroup: a container that just stopped.
            Err(_) if c.record().state.status != ContainerStatus::Running => return Err(not_running()),
            Err(e) => return Err(ContainerError::Internal(format!("reading the usage of {}: {e}", c.shown()))),
        };
        // A host-network container shares the host's interfaces: their counters are not the container's.
        let networks = if self.network_of(&record).is_ok_and(|n| n.shares_host_namespace()) {
            Vec::new()
        } else {
            std::fs::read_to_string(format!("/proc/{}/net/dev", record.state.pid))
                .map(|text| parse_net_dev(&text))
                .unwrap_or_default()
        };
        Ok(Sample { unix_nanos: now_nanos(), usage, networks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1234      12    0    0    0     0          0         0     1234      12    0    0    0     0       0          0
  eth0: 1048576     800    1    2    0     0          0         3   524288     400    4    5    0     0       0          0
veth-x:       7       1    0    0    0     0          0         0        9       2    0    0    0     0       0          0
";

    #[test]
    fn net_dev_gives_every_interface_but_loopback() {
        let interfaces = parse_net_dev(NET_DEV);
        assert_eq!(
            interfaces,
            vec![
                InterfaceCounters {
                    name: "eth0".into(),
                    rx_bytes: 1_048_576,
                    rx_packets: 800,
                    rx_errors: 1,
                    rx_dropped: 2,
                    tx_bytes: 524_288,
                    tx_packets: 400,
                    tx_errors: 4,
                    tx_dropped: 5,
                },
                InterfaceCounters {
                    name: "veth-x".into(),
                    rx_bytes: 7,
                    rx_packets: 1,
                    tx_bytes: 9,
                    tx_packets: 2,
                    ..Default::default()
                },
            ]
        );
    }

    #[test]
    fn net_dev_of_a_namespace_with_only_loopback_or_garbage_is_empty() {
        let only_lo: String = NET_DEV.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert!(parse_net_dev(&only_lo).is_empty());
        assert!(parse_net_dev("").is_empty());
        assert!(parse_net_dev("eth0: 1 2 3\n").is_empty(), "too few fields");
    }
}
