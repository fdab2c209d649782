//! Statistics and report text for the benchmarks in bench/: the shell scripts start the registry, the servers
//! and podman and time the client commands; `cm-bench` (src/bin/cm-bench.rs) turns the samples into the
//! markdown report with these functions, and times API calls itself where a phase inside a run is wanted.
//! Nothing here reads a log.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};

/// min, p50, p90 and max of a set of samples (any unit). p50 is the median (the mean of the middle two for an
/// even count), p90 the nearest rank (the ceil(0.9 n)-th smallest).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// How many samples.
    pub n: usize,
    /// The smallest.
    pub min: f64,
    /// The median.
    pub p50: f64,
    /// The nearest-rank 90th percentile.
    pub p90: f64,
    /// The largest.
    pub max: f64,
}

impl Summary {
    /// The summary of `samples`, or None when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let p50 = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        let rank = (0.9 * n as f64).ceil() as usize;
        Some(Summary { n, min: v[0], p50, p90: v[rank.max(1) - 1], max: v[n - 1] })
    }
}

/// Microseconds as milliseconds with one decimal: "12.3 ms".
pub fn ms(us: f64) -> String {
    format!("{:.1} ms", us / 1000.0)
}

/// Parses one number a line (blank lines skipped).
pub fn parse_values(text: &str) -> Result<Vec<f64>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse::<f64>().with_context(|| format!("not a number: {l:?}")))
        .collect()
}

/// One timed run of an interleaved comparison: which tool, which tool ran just before it, and how long it took.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// "cm" or "podman".
    pub tool: String,
    /// The tool of the run before (empty for the first).
    pub after: String,
    /// Duration (µs for run and exec, ns for pull).
    pub value: f64,
}

/// Parses "TOOL [PREDECESSOR] VALUE" lines (the predecessor may be missing).
pub fn parse_runs(text: &str) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (tool, after, value) = match fields.as_slice() {
            [tool, value] => (*tool, "", *value),
            [tool, after, value] => (*tool, *after, *value),
            _ => bail!("expected \"TOOL [PREDECESSOR] VALUE\", got {line:?}"),
        };
        let value = value.parse().with_context(|| format!("not a number in {line:?}"))?;
        runs.push(Run { tool: tool.into(), after: after.into(), value });
    }
    Ok(runs)
}

fn values_of<'a>(runs: &'a [Run], tool: &'a str) -> impl Iterator<Item = f64> + 'a {
    runs.iter().filter(move |r| r.tool == tool).map(|r| r.value)
}

/// "| LABEL | n | min | p50 | p90 | max |" in ms (samples in µs); dashes without samples.
pub fn full_row(label: &str, samples: &[f64]) -> String {
    match Summary::of(samples) {
        Some(s) => format!("| {label} | {} | {} | {} | {} | {} |", s.n, ms(s.min), ms(s.p50), ms(s.p90), ms(s.max)),
        None => format!("| {label} | 0 | - | - | - | - |"),
    }
}

/// "| LABEL | median | min | max |" in ms (samples in µs); dashes without samples.
pub fn median_row(label: &str, samples: &[f64]) -> String {
    match Summary::of(samples) {
        Some(s) => format!("| {label} | {} | {} | {} |", ms(s.p50), ms(s.min), ms(s.max)),
        None => format!("| {label} | - | - | - |"),
    }
}

/// The run/exec comparison of cm against podman from interleaved runs (µs): the table, the p50 ratio, whether
/// cm met `target_ms`, every run in order, and the p50s by the tool that ran just before.
pub fn comparison(what: &str, cm_label: &str, podman_label: &str, target_ms: f64, runs: &[Run]) -> Result<String> {
    let cm: Vec<f64> = values_of(runs, "cm").collect();
    let podman: Vec<f64> = values_of(runs, "podman").collect();
    let (Some(c), Some(p)) = (Summary::of(&cm), Summary::of(&podman)) else {
        bail!("the runs file needs runs of both cm and podman")
    };
    let mut out = String::new();
    writeln!(out, "| command | runs | min | p50 | p90 | max |")?;
    writeln!(out, "|---------|-----:|----:|----:|----:|----:|")?;
    writeln!(out, "{}", full_row(cm_label, &cm))?;
    writeln!(out, "{}", full_row(podman_label, &podman))?;
    writeln!(out)?;
    let ratio = p.p50 / c.p50;
    if ratio >= 1.0 {
        writeln!(out, "p50 ratio podman / cm = {ratio:.2}: cm-client {what} is {ratio:.2}x faster than podman {what}")?;
    } else {
        let slower = 1.0 / ratio;
        writeln!(
            out,
            "p50 ratio podman / cm = {ratio:.2}: cm-client {what} is {slower:.2}x slower than podman {what}"
        )?;
    }
    writeln!(out)?;
    let target_us = target_ms * 1000.0;
    if c.p50 <= target_us {
        writeln!(out, "Target: cm p50 <= {target_ms} ms: **met** (p50 {})", ms(c.p50))?;
    } else {
        writeln!(
            out,
            "Target: cm p50 <= {target_ms} ms: **not met** (p50 {}, {} over)",
            ms(c.p50),
            ms(c.p50 - target_us)
        )?;
    }
    writeln!(out)?;
    let list = |v: &[f64]| v.iter().map(|us| format!("{:.1}", us / 1000.0)).collect::<Vec<_>>().join(" ");
    writeln!(out, "Every run, in order (ms): cm {}.", list(&cm))?;
    writeln!(out, "podman {}.", list(&podman))?;
    writeln!(out)?;
    let by_prev = |tool: &str, after: &str| {
        let v: Vec<f64> = runs.iter().filter(|r| r.tool == tool && r.after == after).map(|r| r.value).collect();
        match Summary::of(&v) {
            Some(s) => format!("{tool} after {after}: {} ({} runs)", ms(s.p50), s.n),
            None => format!("{tool} after {after}: no runs"),
        }
    };
    // Alternating the order makes every tool run half the time right after itself, half right after the other.
    writeln!(
        out,
        "p50 by the {what} just before: {}; {}; {}; {}.",
        by_prev("cm", "cm"),
        by_prev("cm", "podman"),
        by_prev("podman", "podman"),
        by_prev("podman", "cm")
    )?;
    Ok(out)
}

/// The pull comparison from interleaved runs (ns): table with throughput (`bytes` / median), every run, ratio.
pub fn pull_comparison(bytes: u64, driver: &str, runs: &[Run]) -> Result<String> {
    let cm: Vec<f64> = values_of(runs, "cm").collect();
    let podman: Vec<f64> = values_of(runs, "podman").collect();
    let (Some(c), Some(p)) = (Summary::of(&cm), Summary::of(&podman)) else {
        bail!("the runs file needs runs of both cm and podman")
    };
    let secs = |ns: f64| format!("{:.3} s", ns / 1e9);
    let mibps = |ns: f64| format!("{:.1} MiB/s", bytes as f64 / 1_048_576.0 / (ns / 1e9));
    let row = |label: &str, s: &Summary| {
        format!("| {label} | {} | {} | {} | {} | {} |", s.n, secs(s.min), secs(s.p50), secs(s.max), mibps(s.p50))
    };
    let list = |v: &[f64]| v.iter().map(|ns| format!("{:.3}", ns / 1e9)).collect::<Vec<_>>().join(" ");
    let mut out = String::new();
    writeln!(out, "| tool | runs | min | median | max | throughput |")?;
    writeln!(out, "|------|-----:|----:|-------:|----:|-----------:|")?;
    writeln!(out, "{}", row("cm-client pull", &c))?;
    writeln!(out, "{}", row(&format!("podman pull ({driver})"), &p))?;
    writeln!(out)?;
    writeln!(out, "Throughput: compressed image size / median time. Every run, in order (seconds):")?;
    writeln!(out, "cm-client {}; podman {}.", list(&cm), list(&podman))?;
    writeln!(out)?;
    let ratio = p.p50 / c.p50;
    if ratio >= 1.0 {
        writeln!(out, "cm-client pull is {ratio:.2}x faster than podman pull (median)")?;
    } else {
        writeln!(
            out,
            "cm-client pull is {:.2}x slower than podman pull (median; podman/cm = {ratio:.2})",
            1.0 / ratio
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two_and_p90_the_nearest_rank() {
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.n, s.min, s.p50, s.p90, s.max), (4, 1.0, 2.5, 4.0, 4.0));
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(Summary::of(&ten).unwrap().p90, 9.0);
        assert_eq!(Summary::of(&[7.0]).unwrap().p50, 7.0);
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn runs_parse_with_or_without_a_predecessor() {
        let runs = parse_runs("cm  1500\npodman cm 2500\n\n").unwrap();
        assert_eq!(runs[0], Run { tool: "cm".into(), after: "".into(), value: 1500.0 });
        assert_eq!(runs[1].after, "cm");
        assert!(parse_runs("cm x y z").is_err());
    }

    #[test]
    fn comparison_reports_the_ratio_target_and_predecessors() {
        let runs = parse_runs("cm podman 10000\npodman cm 40000\npodman podman 40000\ncm podman 20000\n").unwrap();
        let text = comparison("run", "cm-client run --rm", "podman run --rm", 25.0, &runs).unwrap();
        assert!(text.contains("| cm-client run --rm | 2 | 10.0 ms | 15.0 ms | 20.0 ms | 20.0 ms |"), "{text}");
        assert!(text.contains("cm-client run is 2.67x faster than podman run"), "{text}");
        assert!(text.contains("**met** (p50 15.0 ms)"), "{text}");
        assert!(text.contains("cm after podman: 15.0 ms (2 runs); podman after podman: 40.0 ms (1 runs)"), "{text}");
        assert!(text.contains("cm after cm: no runs"), "{text}");
    }

    #[test]
    fn pull_comparison_gives_throughput_of_the_median() {
        let runs = parse_runs("cm 1000000000\npodman 2000000000\n").unwrap();
        let text = pull_comparison(10 << 20, "overlay", &runs).unwrap();
        assert!(text.contains("| cm-client pull | 1 | 1.000 s | 1.000 s | 1.000 s | 10.0 MiB/s |"), "{text}");
        assert!(text.contains("2.00x faster"), "{text}");
    }
}
