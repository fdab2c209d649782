//! `logs`: a container's log, to stdout and stderr as it was written.

use std::io::Write;

use cm_api::v1::{self as pb, LogStream};

use crate::connect::Client;
use crate::error::status_error;
use crate::format::{ZERO_TIME, rfc3339};
use crate::parse;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Keep printing new lines until the container exits.
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end, or "all".
    #[arg(short = 'n', long, value_name = "N", default_value = "all", value_parser = parse_tail)]
    tail: Tail,
    /// Only lines since a time: RFC 3339 (2024-05-01T10:00:00Z), a duration ago (10m, 1h30m) or unix seconds.
    #[arg(long, value_name = "TIME", value_parser = parse::parse_since_now)]
    since: Option<prost_types::Timestamp>,
    /// Prefix each line with its time (RFC 3339, nanoseconds).
    #[arg(short, long)]
    timestamps: bool,
    /// Container id, id prefix or name.
    container: String,
}

/// `logs --tail`: the last N lines, or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    All,
    Last(i64),
}

/// "all" or a number (a negative number means all, as docker).
pub fn parse_tail(text: &str) -> anyhow::Result<Tail> {
    if text == "all" {
        return Ok(Tail::All);
    }
    let n: i64 = text.parse().map_err(|_| anyhow::anyhow!("invalid line count '{text}': give a number or \"all\""))?;
    Ok(if n < 0 { Tail::All } else { Tail::Last(n) })
}

/// `logs`: each line to stdout or stderr, as it was written.
pub async fn logs(client: &mut Client, options: LogsArgs) -> anyhow::Result<i32> {
    let now = std::time::SystemTime::now().into();
    let mut since = options.since;
    let tail = match options.tail {
        Tail::All => 0,
        // The API's 0 means all; docker's --tail 0 means none of the past lines: only those from now on.
        Tail::Last(0) => {
            since = Some(since.map_or(now, |s| max_time(s, now)));
            0
        }
        Tail::Last(n) => n,
    };
    let request = pb::LogsRequest {
        container: options.container,
        follow: options.follow,
        tail,
        since,
        stdout: false,
        stderr: false,
    };
    let mut stream = client.logs(request).await.map_err(status_error)?.into_inner();
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    while let Some(line) = stream.message().await.map_err(status_error)? {
        let out: &mut dyn Write = if line.stream == LogStream::Stderr as i32 { &mut stderr } else { &mut stdout };
        if options.timestamps {
            write!(out, "{} ", line.time.map_or_else(|| ZERO_TIME.to_string(), |t| rfc3339(&t)))?;
        }
        out.write_all(&line.line)?;
        out.flush()?;
    }
    Ok(0)
}

fn max_time(a: prost_types::Timestamp, b: prost_types::Timestamp) -> prost_types::Timestamp {
    if (a.seconds, a.nanos) >= (b.seconds, b.nanos) { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_takes_all_or_a_count() {
        assert_eq!(parse_tail("all").unwrap(), Tail::All);
        assert_eq!(parse_tail("10").unwrap(), Tail::Last(10));
        assert_eq!(parse_tail("0").unwrap(), Tail::Last(0));
        assert_eq!(parse_tail("-1").unwrap(), Tail::All);
        assert!(parse_tail("some").is_err());
    }
}
