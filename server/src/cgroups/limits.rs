//! Resource limits of a container, and the docker-style syntax users type for them ("256m", "0.5").

use std::fs;

pub use cm_api::units::{parse_cpus, parse_memory};

/// The smallest memory limit accepted: below this a container cannot even start (runc and docker refuse it
/// too: "Minimum memory limit allowed is 6MB").
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;
/// The smallest CPU limit: the kernel refuses a CFS quota below 1 ms per 100 ms period (docker: 0.01 CPUs).
pub const MIN_CPU_MILLIS: u64 = 10;
/// The largest pids.max the kernel accepts (PID_MAX_LIMIT on 64-bit).
pub const MAX_PIDS: u64 = 4 * 1024 * 1024;

/// Resource limits of a container. None = unlimited.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Memory (and memory+swap: swap does not extend it) in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU time in thousandths of a CPU per period: 500 = half a CPU, 2000 = two CPUs.
    pub cpu_millis: Option<u64>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<u64>,
}

impl Limits {
    /// Refuses limits the kernel would refuse or that cannot work, with a message a user can act on.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_for(online_cpus())
    }

    /// [`Limits::validate`] for a host with `host_cpus` online CPUs.
    pub(crate) fn validate_for(&self, host_cpus: u64) -> Result<(), String> {
        if let Some(bytes) = self.memory_bytes
            && bytes < MIN_MEMORY_BYTES
        {
            return Err(format!(
                "memory limit of {bytes} bytes is below the minimum of 6 MiB ({MIN_MEMORY_BYTES} bytes)"
            ));
        }
        if let Some(millis) = self.cpu_millis {
            if millis == 0 {
                return Err("cpu limit must be more than 0 CPUs (leave it unset for no limit)".to_string());
            }
            if millis < MIN_CPU_MILLIS {
                return Err(format!("cpu limit of {} CPUs is below the minimum of 0.01 CPUs", format_cpus(millis)));
            }
            if millis > host_cpus.saturating_mul(1000) {
                return Err(format!(
                    "cpu limit of {} CPUs is more than this host has: it has {host_cpus} CPUs, so use at most {host_cpus}",
                    format_cpus(millis)
                ));
            }
        }
        if let Some(pids) = self.pids {
            if pids == 0 {
                return Err("pids limit must be at least 1 (leave it unset for no limit)".to_string());
            }
            if pids > MAX_PIDS {
                return Err(format!("pids limit of {pids} is more than the kernel's maximum of {MAX_PIDS}"));
            }
        }
        Ok(())
    }
}

/// Formats thousandths of a CPU as a decimal number of CPUs: 1500 -> "1.5", 2000 -> "2".
pub fn format_cpus(millis: u64) -> String {
    let fraction = format!("{:03}", millis % 1000);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() { format!("{}", millis / 1000) } else { format!("{}.{fraction}", millis / 1000) }
}

/// Number of online CPUs of the host (/sys/devices/system/cpu/online), or what the scheduler lets us use
/// when that file cannot be read.
pub fn online_cpus() -> u64 {
    fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|list| count_cpu_list(&list))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64))
}

/// Counts the CPUs of a kernel CPU list such as "0-3,5,7-8".
pub(crate) fn count_cpu_list(list: &str) -> Option<u64> {
    let mut count = 0;
    for part in list.trim().split(',') {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
        count += last.checked_sub(first)? + 1;
    }
    (count > 0).then_some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn validate_accepts_unlimited_and_sane_limits() {
        assert_eq!(Limits::default().validate_for(2), Ok(()));
        let limits = Limits { memory_bytes: Some(MIN_MEMORY_BYTES), cpu_millis: Some(2000), pids: Some(1) };
        assert_eq!(limits.validate_for(2), Ok(()));
        assert_eq!(Limits { cpu_millis: Some(10), ..Limits::default() }.validate_for(1), Ok(()));
    }

    #[test]
    fn validate_refuses_memory_below_6_mib() {
        let err = Limits { memory_bytes: Some(MIN_MEMORY_BYTES - 1), ..Limits::default() }.validate_for(2).unwrap_err();
        assert!(err.contains("6 MiB") && err.contains("6291455"), "{err}");
        assert!(Limits { memory_bytes: Some(0), ..Limits::default() }.validate_for(2).is_err());
    }

    #[test]
    fn validate_refuses_zero_tiny_and_more_cpus_than_the_host_has_naming_the_count() {
        let zero = Limits { cpu_millis: Some(0), ..Limits::default() }.validate_for(2).unwrap_err();
        assert!(zero.contains("more than 0"), "{zero}");
        let tiny = Limits { cpu_millis: Some(5), ..Limits::default() }.validate_for(2).unwrap_err();
        assert!(tiny.contains("0.005") && tiny.contains("0.01"), "{tiny}");
        let many = Limits { cpu_millis: Some(2500), ..Limits::default() }.validate_for(2).unwrap_err();
        assert!(many.contains("2.5 CPUs") && many.contains("has 2 CPUs"), "{many}");
        let host = online_cpus();
        let over = Limits { cpu_millis: Some(host * 1000 + 1), ..Limits::default() }.validate().unwrap_err();
        assert!(over.contains(&format!("has {host} CPUs")), "{over}");
    }

    #[test]
    fn validate_refuses_zero_pids_and_more_than_the_kernel_allows() {
        let err = Limits { pids: Some(0), ..Limits::default() }.validate_for(2).unwrap_err();
        assert!(err.contains("at least 1"), "{err}");
        assert!(Limits { pids: Some(MAX_PIDS + 1), ..Limits::default() }.validate_for(2).is_err());
    }

    #[test]
    fn limits_round_trip_through_json() {
        let limits = Limits { memory_bytes: Some(64 * MIB), cpu_millis: None, pids: Some(100) };
        let json = serde_json::to_string(&limits).unwrap();
        assert_eq!(serde_json::from_str::<Limits>(&json).unwrap(), limits);
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-3,5,7-8"), Some(7));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert!(online_cpus() >= 1);
    }

    #[test]
    fn cpus_are_formatted_without_trailing_zeros() {
        assert_eq!(format_cpus(1500), "1.5");
        assert_eq!(format_cpus(2000), "2");
        assert_eq!(format_cpus(5), "0.005");
        assert_eq!(format_cpus(1250), "1.25");
    }
}
