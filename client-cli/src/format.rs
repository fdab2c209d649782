//! Human formats: sizes as docker prints them (decimal units), ages ("3 days ago"), short ids.

use std::time::{SystemTime, UNIX_EPOCH};

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

/// "About a minute ago", "3 days ago", "N/A" for no time.
pub fn ago(seconds_since_epoch: Option<i64>) -> String {
    let Some(then) = seconds_since_epoch.filter(|s| *s > 0) else { return "N/A".into() };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let d = (now - then).max(0);
    let plural = |n: i64, unit: &str| format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" });
    match d {
        0..=59 => "Less than a minute ago".into(),
        60..=119 => "About a minute ago".into(),
        120..=3599 => plural(d / 60, "minute"),
        3600..=7199 => "About an hour ago".into(),
        7200..=172_799 => plural(d / 3600, "hour"),
        172_800..=1_209_599 => plural(d / 86_400, "day"),
        1_209_600..=5_183_999 => plural(d / 604_800, "week"),
        5_184_000..=63_071_999 => plural(d / 2_592_000, "month"),
        _ => plural(d / 31_536_000, "year"),
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
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        assert_eq!(ago(Some(now - 5)), "Less than a minute ago");
        assert_eq!(ago(Some(now - 3 * 86_400)), "3 days ago");
        assert_eq!(ago(None), "N/A");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A      BB\nlong   x\n");
    }
}
