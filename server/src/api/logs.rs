//! The Logs RPC: a container's output log as lines, filtered by stream, time and count, optionally followed
//! until the container exits. The log may span rotated files ([`logfile::Reader`] reads them in order and
//! follows rotations).
//!
//! Lines: output arrives in chunks as the container wrote them; a chunk's unfinished last line is held until
//! the rest of it arrives in a later chunk of the same stream, so a line written in pieces is one line, with
//! the time of its first piece. A held piece is sent as it is (without its newline) when the log ends, when
//! it grows past [`MAX_LINE`], or, when following, when nothing completed it for [`PARTIAL_WAIT`] (a prompt).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cm_api::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{RpcStream, timestamp};
use crate::containers::{Container, ContainerStatus, Containers};
use crate::runtime::logfile::{self, Record, Stream};

/// How often a followed log is checked for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(50);
/// A line is sent in pieces beyond this length.
const MAX_LINE: usize = 1 << 20;
/// How long, when following, an unfinished line waits for its end before it is sent as it is.
const PARTIAL_WAIT: Duration = Duration::from_millis(500);

/// A line: (unix nanos of its first byte, stream, bytes including the newline when it has one).
type Line = (i64, Stream, Vec<u8>);

/// Turns records into lines, joining the pieces of a line written in several chunks.
#[derive(Default)]
struct Lines {
    /// The unfinished line of each stream (stdout, stderr), and when it was last extended.
    pending: [Option<(Line, Instant)>; 2],
}

impl Lines {
    fn push(&mut self, record: Record, out: &mut Vec<Line>) {
        let Record { unix_nanos, stream, data } = record;
        let slot = &mut self.pending[stream as usize];
        for piece in data.split_inclusive(|b| *b == b'\n') {
            let ((time, _, mut line), _) = slot.take().unwrap_or(((unix_nanos, stream, Vec::new()), Instant::now()));
            line.extend_from_slice(piece);
            if line.ends_with(b"\n") || line.len() >= MAX_LINE {
                out.push((time, stream, line));
            } else {
                *slot = Some(((time, stream, line), Instant::now()));
            }
        }
    }

    /// The unfinished lines held longer than `wait` (all with a zero wait), oldest first.
    fn flush(&mut self, wait: Duration, out: &mut Vec<Line>) {
        let mut due: Vec<Line> = Vec::new();
        for slot in &mut self.pending {
            if slot.as_ref().is_some_and(|(_, since)| since.elapsed() >= wait) {
                due.extend(slot.take().map(|(line, _)| line));
            }
        }
        due.sort_by_key(|(time, _, _)| *time);
        out.extend(due);
    }
}

pub fn logs(containers: Arc<Containers>, request: pb::LogsRequest) -> Result<RpcStream<pb::LogsResponse>, Status> {
    let c = containers.get(&request.container)?;
    if request.tail < 0 {
        return Err(Status::invalid_argument("tail must not be negative"));
    }
    let dir = containers.log_dir(&c);
    let since = request.since.map_or(0, |t| t.seconds.saturating_mul(1_000_000_000).saturating_add(t.nanos as i64));
    let (want_out, want_err) = match (request.stdout, request.stderr) {
        (false, false) => (true, true),
        other => other,
    };
    let keep = move |(t, s, _): &Line| {
        *t >= since && ((*s == Stream::Stdout && want_out) || (*s == Stream::Stderr && want_err))
    };
    let to_message = |(t, s, line): Line| {
        Ok(pb::LogsResponse {
            time: timestamp(t),
            stream: match s {
                Stream::Stdout => pb::LogStream::Stdout,
                Stream::Stderr => pb::LogStream::Stderr,
            }
            .into(),
            line,
        })
    };
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let failed = |e: std::io::Error| Err(Status::internal(format!("reading the log of {}: {e}", c.shown())));
        let mut reader = match logfile::Reader::open(&dir) {
            Ok(Some(reader)) => reader,
            Ok(None) if !request.follow => return,
            // Not started yet: nothing written so far.
            Ok(None) => match wait_for_log(&dir, &containers, &c).await {
                Ok(Some(reader)) => reader,
                Ok(None) => return,
                Err(e) => return drop(tx.send(failed(e)).await),
            },
            Err(e) => return drop(tx.send(failed(e)).await),
        };
        let mut lines = Lines::default();
        let mut batch = Vec::new();
        // What is there now; only the last `tail` lines of it when asked.
        let tail = request.tail as usize;
        let mut existing = VecDeque::new();
        loop {
            match reader.next_record() {
                Ok(Some(record)) => lines.push(record, &mut batch),
                Ok(None) => break,
                Err(e) => return drop(tx.send(failed(e)).await),
            }
            for line in batch.drain(..).filter(keep) {
                existing.push_back(line);
                if tail > 0 && existing.len() > tail {
                    existing.pop_front();
                }
            }
        }
        if !request.follow {
            lines.flush(Duration::ZERO, &mut batch);
            existing.extend(batch.drain(..).filter(keep));
            let skip = if tail > 0 { existing.len().saturating_sub(tail) } else { 0 };
            existing.drain(..skip);
        }
        for line in existing {
            if tx.send(to_message(line)).await.is_err() {
                return;
            }
        }
        if !request.follow {
            return;
        }
        loop {
            // Checked before reading: whatever the container wrote before it stopped is read below.
            let running = c.record().state.status == ContainerStatus::Running;
            let more = match reader.next_record() {
                Ok(Some(record)) => {
                    lines.push(record, &mut batch);
                    true
                }
                Ok(None) => {
                    lines.flush(if running { PARTIAL_WAIT } else { Duration::ZERO }, &mut batch);
                    false
                }
                Err(e) => return drop(tx.send(failed(e)).await),
            };
            for line in batch.drain(..).filter(keep) {
                if tx.send(to_message(line)).await.is_err() {
                    return;
                }
            }
            if more {
                continue;
            }
            if !running {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Waits until the container's log exists; None when the container stopped or went away first.
async fn wait_for_log(
    dir: &Path,
    containers: &Containers,
    c: &Arc<Container>,
) -> std::io::Result<Option<logfile::Reader>> {
    loop {
        if let Some(reader) = logfile::Reader::open(dir)? {
            return Ok(Some(reader));
        }
        if c.record().state.status == ContainerStatus::Stopped || containers.get(&c.id).is_err() {
            return Ok(None);
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(t: i64, stream: Stream, data: &[u8]) -> Record {
        Record { unix_nanos: t, stream, data: data.to_vec() }
    }

    fn text(lines: &[Line]) -> Vec<(i64, Stream, String)> {
        lines.iter().map(|(t, s, l)| (*t, *s, String::from_utf8_lossy(l).into_owned())).collect()
    }

    #[test]
    fn a_line_written_in_pieces_is_one_line_with_the_time_of_its_first_piece() {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        lines.push(record(1, Stream::Stdout, b"a\nhal"), &mut out);
        lines.push(record(2, Stream::Stderr, b"err\n"), &mut out);
        lines.push(record(3, Stream::Stdout, b"f "), &mut out);
        lines.push(record(4, Stream::Stdout, b"done\nnext"), &mut out);
        lines.flush(Duration::from_secs(60), &mut out);
        assert_eq!(
            text(&out),
            [
                (1, Stream::Stdout, "a\n".into()),
                (2, Stream::Stderr, "err\n".into()),
                (1, Stream::Stdout, "half done\n".into())
            ]
        );
        out.clear();
        lines.flush(Duration::ZERO, &mut out);
        assert_eq!(text(&out), [(4, Stream::Stdout, "next".into())], "the unfinished rest, at the end");
    }

    #[test]
    fn an_endless_line_is_sent_in_pieces() {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for t in 0..20 {
            lines.push(record(t, Stream::Stdout, &[b'x'; 64 << 10]), &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0, out[0].2.len()), (0, MAX_LINE));
    }
}
