//! Human formats: sizes as docker prints them (decimal units), durations and ages ("3 days ago"), RFC 3339
//! times, short ids, published ports.

use std::time::{SystemTime, UNIX_EPOCH};

use cm_api::v1 as pb;

/// "5.2MB", "312kB", "17B" (powers of 1000, as docker).
pub fn size(bytes: i64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes.max(0) as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else if value < 10.0 {
        format!("{value:.2}{}", units[unit])
    } else if value < 100.0 {
        format!("{value:.1}{}", units[unit])
    } else {
        format!("{value:.0}{}", units[unit])
    }
}

/// A duration in whole seconds as docker says it (go-units HumanDuration): "Less than a second", "5 seconds",
/// "About a minute", "3 hours", "2 weeks".
pub fn human_duration(seconds: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let minutes = seconds / 60;
    // go-units rounds hours to the nearest one.
    let hours = (seconds + 1800) / 3600;
    match seconds {
        ..1 => "Less than a second".into(),
        1..60 => plural(seconds, "second"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => plural(minutes, "minute"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => plural(hours, "hour"),
        _ if hours < 24 * 7 * 2 => plural(hours / 24, "day"),
        _ if hours < 24 * 30 * 2 => plural(hours / 24 / 7, "week"),
        _ if hours < 24 * 365 * 2 => plural(hours / 24 / 30, "month"),
        _ => plural(seconds / 3600 / 24 / 365, "year"),
    }
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// "About a minute ago", "3 days ago", "N/A" for no time.
pub fn ago(seconds_since_epoch: Option<i64>) -> String {
    let Some(then) = seconds_since_epoch.filter(|s| *s > 0) else { return "N/A".into() };
    format!("{} ago", human_duration(now() - then))
}

/// A time as RFC 3339 in UTC with as many fraction digits as needed (Go's RFC3339Nano, which docker prints):
/// "2024-05-01T10:00:00Z", "2024-05-01T10:00:00.5Z".
pub fn rfc3339(time: &prost_types::Timestamp) -> String {
    let text = time.to_string();
    match text.split_once('.') {
        Some((whole, fraction)) => {
            let digits = fraction.trim_end_matches('Z').trim_end_matches('0');
            if digits.is_empty() { format!("{whole}Z") } else { format!("{whole}.{digits}Z") }
        }
        None => text,
    }
}

/// The first 12 hex digits of a digest or id.
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// Splits a normalized reference "registry/repo:tag" or "registry/repo@digest" into (repository, tag),
/// showing Docker Hub names as docker does ("alpine", "user/app").
pub fn repo_and_tag(reference: &str) -> (String, String) {
    let (name, tag) = match reference.split_once('@') {
        Some((name, _digest)) => (name, "<none>"),
        None => {
            let slash = reference.rfind('/').map_or(0, |i| i + 1);
            match reference[slash..].rfind(':') {
                Some(i) => (&reference[..slash + i], &reference[slash + i + 1..]),
                None => (reference, "<none>"),
            }
        }
    };
    let name = name.strip_prefix("docker.io/").map(|n| n.strip_prefix("library/").unwrap_or(n)).unwrap_or(name);
    (name.to_string(), tag.to_string())
}

/// Prints rows as left-aligned columns separated by three spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Docker's zero time, for times that have not happened.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A published port's protocol ("tcp" when the server left it empty).
pub fn protocol(p: &pb::PortMapping) -> &str {
    if p.protocol.is_empty() { "tcp" } else { &p.protocol }
}

/// "0.0.0.0:32768", "[::1]:8080".
pub fn host_address(p: &pb::PortMapping) -> String {
    match p.host_ip.as_str() {
        "" => format!("0.0.0.0:{}", p.host_port),
        ip if ip.contains(':') => format!("[{ip}]:{}", p.host_port),
        ip => format!("{ip}:{}", p.host_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_decimal_units_like_docker() {
        assert_eq!(size(17), "17B");
        assert_eq!(size(1_500), "1.50kB");
        assert_eq!(size(60_200_000), "60.2MB");
        assert_eq!(size(312_000_000), "312MB");
    }

    #[test]
    fn docker_hub_names_are_shown_short() {
        assert_eq!(repo_and_tag("docker.io/library/alpine:3.20"), ("alpine".into(), "3.20".into()));
        assert_eq!(repo_and_tag("docker.io/user/app:latest"), ("user/app".into(), "latest".into()));
        assert_eq!(repo_and_tag("127.0.0.1:5000/x/y:v1"), ("127.0.0.1:5000/x/y".into(), "v1".into()));
        assert_eq!(repo_and_tag("127.0.0.1:5000/x@sha256:ab"), ("127.0.0.1:5000/x".into(), "<none>".into()));
    }

    #[test]
    fn ages_read_like_docker() {
        assert_eq!(ago(Some(now() - 3 * 86_400)), "3 days ago");
        assert_eq!(ago(None), "N/A");
    }

    #[test]
    fn durations_read_like_go_units() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(120), "2 minutes");
        assert_eq!(human_duration(3599), "59 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5 * 3600 + 1700), "5 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(human_duration(20 * 86_400), "2 weeks");
        assert_eq!(human_duration(90 * 86_400), "3 months");
        assert_eq!(human_duration(3 * 365 * 86_400), "3 years");
    }

    #[test]
    fn times_print_as_rfc3339_nano() {
        let t = |seconds, nanos| rfc3339(&prost_types::Timestamp { seconds, nanos });
        assert_eq!(t(1_714_557_600, 0), "2024-05-01T10:00:00Z");
        assert_eq!(t(1_714_557_600, 500_000_000), "2024-05-01T10:00:00.5Z");
        assert_eq!(t(1_714_557_600, 123_456_789), "2024-05-01T10:00:00.123456789Z");
        assert_eq!(t(1_714_557_600, 120_000), "2024-05-01T10:00:00.00012Z");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A      BB\nlong   x\n");
    }
}
