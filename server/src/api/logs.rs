//! The Logs RPC: a container's output log as lines, filtered by stream, time and count, optionally followed
//! until the container exits.

use std::io::{BufReader, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use cm_api::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{RpcStream, timestamp};
use crate::containers::{Containers, Status as State};
use crate::runtime::logfile::{self, Record, Stream};

/// How often a followed log is checked for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(50);

/// Splits records into lines (a line keeps its newline; a record's unfinished tail is a line of its own).
fn lines(record: Record) -> impl Iterator<Item = (i64, Stream, Vec<u8>)> {
    let Record { unix_nanos, stream, data } = record;
    data.split_inclusive(|b| *b == b'\n').map(|l| (unix_nanos, stream, l.to_vec())).collect::<Vec<_>>().into_iter()
}

pub fn logs(containers: Arc<Containers>, request: pb::LogsRequest) -> Result<RpcStream<pb::LogsResponse>, Status> {
    let c = containers.get(&request.container)?;
    if request.tail < 0 {
        return Err(Status::invalid_argument("tail must not be negative"));
    }
    let path = containers.log_path(&c);
    let since = request.since.map_or(0, |t| t.seconds.saturating_mul(1_000_000_000).saturating_add(t.nanos as i64));
    let (want_out, want_err) = match (request.stdout, request.stderr) {
        (false, false) => (true, true),
        other => other,
    };
    let keep = move |(t, s, _): &(i64, Stream, Vec<u8>)| {
        *t >= since && ((*s == Stream::Stdout && want_out) || (*s == Stream::Stderr && want_err))
    };
    let to_message = |(t, s, line): (i64, Stream, Vec<u8>)| {
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
        let mut reader = match std::fs::File::open(&path) {
            Ok(f) => BufReader::new(f),
            Err(_) if !request.follow => return,
            Err(_) => {
                // Not started yet: nothing written so far.
                match wait_for_file(&path, &containers, &c).await {
                    Some(f) => BufReader::new(f),
                    None => return,
                }
            }
        };
        let mut existing = Vec::new();
        while let Ok(Some(record)) = logfile::read_record(&mut reader) {
            existing.extend(lines(record).filter(keep));
        }
        let skip = if request.tail > 0 { existing.len().saturating_sub(request.tail as usize) } else { 0 };
        for line in existing.into_iter().skip(skip) {
            if tx.send(to_message(line)).await.is_err() {
                return;
            }
        }
        if !request.follow {
            return;
        }
        loop {
            let running = c.record().state.status == State::Running;
            let position = reader.stream_position().unwrap_or(0);
            match logfile::read_record(&mut reader) {
                Ok(Some(record)) => {
                    for line in lines(record).filter(keep) {
                        if tx.send(to_message(line)).await.is_err() {
                            return;
                        }
                    }
                }
                _ => {
                    // A torn record is re-read once it is whole.
                    let _ = reader.seek(SeekFrom::Start(position));
                    if !running {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(FOLLOW_POLL) => {}
                        _ = tx.closed() => return,
                    }
                }
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

async fn wait_for_file(
    path: &std::path::Path,
    containers: &Containers,
    c: &Arc<crate::containers::Container>,
) -> Option<std::fs::File> {
    loop {
        if let Ok(f) = std::fs::File::open(path) {
            return Some(f);
        }
        if c.record().state.status == State::Stopped || containers.get(&c.id).is_err() {
            return None;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}
