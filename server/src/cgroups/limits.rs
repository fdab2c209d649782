//! Resource limits of a container, and the docker-style syntax users type for them ("256m", "0.5").

use std::fs;

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

/// Parses a memory size in docker's syntax: a number with an optional unit b, k, m, g or t (case-insensitive,
/// 1024-based, optionally followed by "b" or "ib": "512k", "256m", "1GB", "2GiB", "1.5g"); no unit means bytes.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!(
            "invalid memory size {s:?}: {why}; expected a number with an optional unit b, k, m, g or t, like 256m or 1g"
        )
    };
    let text = s.trim().to_ascii_lowercase();
    let digits_end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let shift = match unit.trim_start() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad("unknown unit")),
    };
    let (whole, fraction) = split_decimal(number).ok_or_else(|| bad("not a non-negative number"))?;
    let scale = 1u128 << shift;
    // fraction/10^len of a unit, rounded down to whole bytes.
    let fraction_bytes = if fraction.is_empty() {
        0
    } else {
        let digits = &fraction[..fraction.len().min(18)];
        let numerator: u128 = digits.parse().map_err(|_| bad("not a number"))?;
        numerator * scale / 10u128.pow(digits.len() as u32)
    };
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad("too large"))? };
    let total = whole.checked_mul(scale).and_then(|b| b.checked_add(fraction_bytes)).ok_or_else(|| bad("too large"))?;
    u64::try_from(total).map_err(|_| bad("too large"))
}

/// Parses a number of CPUs as docker's `--cpus` does ("0.5", "2", "1.25") into thousandths of a CPU; digits
/// past the third decimal round half up. Zero, negative and non-numbers are refused.
pub fn parse_cpus(s: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("invalid number of CPUs {s:?}: {why}; expected a number more than 0, like 0.5 or 2");
    let (whole, fraction) = split_decimal(s.trim()).ok_or_else(|| bad("not a positive number"))?;
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad("too large"))? };
    let millis_digits = fraction.chars().chain(std::iter::repeat('0')).take(3).collect::<String>();
    let mut millis: u64 = millis_digits.parse().map_err(|_| bad("not a number"))?;
    if fraction.as_bytes().get(3).is_some_and(|&d| d >= b'5') {
        millis += 1;
    }
    let total = whole.checked_mul(1000).and_then(|m| m.checked_add(millis)).ok_or_else(|| bad("too large"))?;
    if total == 0 {
        return Err(bad("must be more than 0 (at least 0.001)"));
    }
    Ok(total)
}

/// Splits "12.345" into ("12", "345"): ASCII digits around at most one dot, at least one digit in all.
fn split_decimal(s: &str) -> Option<(&str, &str)> {
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    (all_digits(whole) && all_digits(fraction) && !(whole.is_empty() && fraction.is_empty()))
        .then_some((whole, fraction))
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
fn count_cpu_list(list: &str) -> Option<u64> {
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
    fn parse_memory_accepts_docker_units_1024_based_case_insensitive() {
        let cases = [
            ("1073741824", 1 << 30),
            ("0", 0),
            ("1024b", 1024),
            ("1024B", 1024),
            ("512k", 512 * 1024),
            ("512K", 512 * 1024),
            ("256m", 256 * MIB),
            ("256M", 256 * MIB),
            ("256mb", 256 * MIB),
            ("256MiB", 256 * MIB),
            ("1g", 1 << 30),
            ("1G", 1 << 30),
            ("1gb", 1 << 30),
            ("2t", 2 << 40),
            ("1.5g", 3 << 29),
            ("0.5m", 512 * 1024),
            (" 64m ", 64 * MIB),
            ("64 m", 64 * MIB),
        ];
        for (input, want) in cases {
            assert_eq!(parse_memory(input), Ok(want), "parse_memory({input:?})");
        }
    }

    #[test]
    fn parse_memory_refuses_negatives_garbage_and_overflow_naming_the_input() {
        for input in ["", " ", "-1", "-256m", "abc", "m", "12x", "1.2.3", "1e9", "256mm", "0x10", "16777216t", "+5"] {
            let err = parse_memory(input).expect_err(input);
            assert!(err.contains(&format!("{input:?}")), "error for {input:?} does not name it: {err}");
        }
    }

    #[test]
    fn parse_cpus_gives_thousandths_and_rounds_past_three_decimals() {
        let cases = [
            ("0.5", 500),
            ("2", 2000),
            ("1.25", 1250),
            (".5", 500),
            ("1.", 1000),
            ("0.001", 1),
            ("1.2344", 1234),
            ("1.2345", 1235),
            ("0.9999", 1000),
            ("0.0005", 1),
            (" 3 ", 3000),
        ];
        for (input, want) in cases {
            assert_eq!(parse_cpus(input), Ok(want), "parse_cpus({input:?})");
        }
    }

    #[test]
    fn parse_cpus_refuses_zero_negative_and_garbage_naming_the_input() {
        for input in ["0", "0.0", "0.0004", "-1", "-0.5", "", ".", "abc", "1.2.3", "1e3", "inf", "NaN", "2 cpus"] {
            let err = parse_cpus(input).expect_err(input);
            assert!(err.contains(&format!("{input:?}")), "error for {input:?} does not name it: {err}");
        }
        assert!(parse_cpus("99999999999999999999").unwrap_err().contains("too large"));
    }

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
