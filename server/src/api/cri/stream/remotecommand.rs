//! Kubernetes' remotecommand protocols (exec and attach) over any transport: the session core
//! ([`run_exec`], [`run_attach`]) turns the client's stdin and resize channels into a domain session and its
//! output into [`Out`] messages, the error channel's status last; [`exec`] and [`attach`] carry it over SPDY
//! (one stream per `streamType`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::Streams;
use super::conn::{SpdyConn, StreamWriter};
use super::spdy::header;
use crate::containers::{
    AttachRequest, Containers, ExecRequest, ExitRecord, InputBreak, SessionInput, SessionInputs, SessionOutput,
    SessionOutputs,
};

/// SPDY subprotocols, preferred first.
pub const PROTOCOLS: &[&str] =
    &["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
/// How long the client has to open its streams (the kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// What the session sends the client.
#[derive(Debug)]
pub enum Out {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The error channel's content: a status (v4, v5) or a message.
    Error(Vec<u8>),
}

/// The client's side: stdin (its end closes the process's stdin), resize messages, and whether it went away.
pub struct Inputs {
    pub stdin: Option<mpsc::Receiver<Vec<u8>>>,
    pub resize: Option<mpsc::Receiver<Vec<u8>>>,
    pub gone: watch::Receiver<bool>,
}

/// Whether the error channel carries a metav1.Status (v4 and later) or a plain message.
fn status_channel(protocol: &str) -> bool {
    matches!(protocol, "v4.channel.k8s.io" | "v5.channel.k8s.io")
}

async fn next(r: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match r {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Resize messages: JSON objects `{"Width":W,"Height":H}`, back to back (client-go ends each with a newline).
fn resizes(buf: &mut Vec<u8>) -> Result<Vec<SessionInput>, String> {
    let mut sizes = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    let mut used = 0;
    loop {
        match stream.next() {
            Some(Ok(v)) => {
                used = stream.byte_offset();
                let dim = |k: &str| v.get(k).and_then(|n| n.as_u64()).map(|n| n.min(u32::MAX as u64) as u32);
                match (dim("Width"), dim("Height")) {
                    (Some(cols), Some(rows)) => sizes.push(SessionInput::Resize { rows, cols }),
                    _ => return Err(format!("bad resize message {v} (want {{\"Width\":W,\"Height\":H}})")),
                }
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(e)) => return Err(format!("bad resize message: {e}")),
            None => break,
        }
    }
    buf.drain(..used);
    if buf.len() > 4096 {
        return Err("a resize message longer than 4096 bytes".into());
    }
    Ok(sizes)
}

/// The session's input stream. `detach`: for attach, the client's stdin ending ends the session (the process
/// keeps running), and `ended` fires.
fn session_inputs(mut inputs: Inputs, close_stdin: bool, ended: Option<oneshot::Sender<()>>) -> SessionInputs {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut resize_buf = Vec::new();
        let mut ended = ended;
        loop {
            let item = tokio::select! {
                data = next(&mut inputs.stdin) => match data {
                    Some(d) => Ok(SessionInput::Stdin(d)),
                    None => {
                        inputs.stdin = None;
                        if *inputs.gone.borrow() {
                            Err(InputBreak::Cancelled)
                        } else if let Some(ended) = ended.take() {
                            let _ = ended.send(());
                            Err(InputBreak::Cancelled)
                        } else if close_stdin {
                            Ok(SessionInput::CloseStdin)
                        } else {
                            continue;
                        }
                    }
                },
                data = next(&mut inputs.resize) => match data {
                    Some(d) => {
                        resize_buf.extend(d);
                        match resizes(&mut resize_buf) {
                            Ok(sizes) => {
                                for s in sizes {
                                    if tx.send(Ok(s)).await.is_err() {
                                        return;
                                    }
                                }
                                continue;
                            }
                            Err(e) => Err(InputBreak::Invalid(e)),
                        }
                    }
                    None => {
                        inputs.resize = None;
                        continue;
                    }
                },
                changed = inputs.gone.changed() => match changed {
                    Ok(()) if !*inputs.gone.borrow() => continue,
                    _ => Err(InputBreak::Cancelled),
                },
            };
            let last = item.is_err();
            if tx.send(item).await.is_err() || last {
                return;
            }
        }
    });
    ReceiverStream::new(rx).boxed()
}

/// The error channel's content for how the session ended (None: an empty one).
fn status(v4: bool, end: Result<Option<ExitRecord>, String>) -> Option<Vec<u8>> {
    let value = match end {
        Ok(Some(e)) if e.code != 0 => {
            let message = format!("command terminated with non-zero exit code: command exited with {}", e.code);
            if !v4 {
                return Some(message.into_bytes());
            }
            serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": e.code.to_string()}]},
            })
        }
        Ok(_) if v4 => serde_json::json!({"metadata": {}, "status": "Success"}),
        Ok(_) => return None,
        Err(message) if !v4 => return Some(message.into_bytes()),
        Err(message) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "code": 500,
        }),
    };
    Some(value.to_string().into_bytes())
}

/// Sends the session's output until its exit (or `stop`).
async fn pump(
    mut outputs: SessionOutputs,
    streams: Streams,
    out: &mpsc::Sender<Out>,
    stop: impl Future<Output = ()>,
) -> Result<Option<ExitRecord>, String> {
    tokio::pin!(stop);
    loop {
        let o = tokio::select! {
            o = outputs.recv() => o,
            _ = &mut stop => return Ok(None),
        };
        let message = match o {
            Some(Ok(SessionOutput::Stdout(d))) if streams.stdout => Out::Stdout(d),
            Some(Ok(SessionOutput::Stderr(d))) if streams.stderr => Out::Stderr(d),
            Some(Ok(SessionOutput::Exit(e))) => return Ok(Some(e)),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the session ended without an exit status".into()),
        };
        if out.send(message).await.is_err() {
            return Ok(None);
        }
    }
}

async fn gone(mut gone: watch::Receiver<bool>) {
    let _ = gone.wait_for(|g| *g).await;
}

/// An exec session; ends with the status on the error channel.
pub async fn run_exec(
    containers: Arc<Containers>,
    mut request: ExecRequest,
    streams: Streams,
    inputs: Inputs,
    protocol: &str,
    out: mpsc::Sender<Out>,
) {
    request.stdin = inputs.stdin.is_some();
    let watch = inputs.gone.clone();
    let end = match containers.exec(request, session_inputs(inputs, true, None)).await {
        Ok(outputs) => pump(outputs, streams, &out, gone(watch)).await,
        Err(e) => Err(e.to_string()),
    };
    if let Some(s) = status(status_channel(protocol), end) {
        let _ = out.send(Out::Error(s)).await;
    }
}

/// An attach session: ends when the container exits, the client's stdin ends, or the client goes away.
pub async fn run_attach(
    containers: Arc<Containers>,
    mut request: AttachRequest,
    streams: Streams,
    inputs: Inputs,
    protocol: &str,
    out: mpsc::Sender<Out>,
) {
    request.stdin = inputs.stdin.is_some();
    let watch = inputs.gone.clone();
    let (ended_tx, ended_rx) = oneshot::channel();
    let ended = if request.stdin { Some(ended_tx) } else { None };
    let end = match containers.attach(request, session_inputs(inputs, false, ended)).await {
        Ok(outputs) => {
            let stop = async move {
                tokio::select! {
                    _ = gone(watch) => {},
                    Ok(()) = ended_rx => {},
                }
            };
            // The kubelet reports an attach that ended without error as a success, whatever the exit.
            pump(outputs, streams, &out, stop).await.map(|_| None)
        }
        Err(e) => Err(e.to_string()),
    };
    if let Some(s) = status(status_channel(protocol), end) {
        let _ = out.send(Out::Error(s)).await;
    }
}

/// The streams a remotecommand client opens, by `streamType`.
#[derive(Default)]
struct SpdyStreams {
    error: Option<StreamWriter>,
    stdout: Option<StreamWriter>,
    stderr: Option<StreamWriter>,
    stdin: Option<mpsc::Receiver<Vec<u8>>>,
    resize: Option<mpsc::Receiver<Vec<u8>>>,
}

/// Waits for the streams the request implies: error, then stdin, stdout, stderr (not with a tty) and resize
/// (a tty, v3 and later), as asked.
async fn accept_streams(conn: &mut SpdyConn, streams: Streams, protocol: &str) -> Result<SpdyStreams, String> {
    let resize = streams.tty && !matches!(protocol, "channel.k8s.io" | "v2.channel.k8s.io");
    let expected = 1
        + streams.stdin as usize
        + streams.stdout as usize
        + (streams.stderr && !streams.tty) as usize
        + resize as usize;
    let mut got = SpdyStreams::default();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    let mut count = 0;
    while count < expected {
        let s = match tokio::time::timeout_at(deadline, conn.accept()).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err("the client went away while opening its streams".into()),
            Err(_) => return Err(format!("timed out waiting for the client's streams ({count} of {expected})")),
        };
        let kind = header(&s.headers, "streamtype").unwrap_or("").to_string();
        match kind.as_str() {
            "error" => got.error = Some(s.writer),
            "stdout" => got.stdout = Some(s.writer),
            "stderr" => got.stderr = Some(s.writer),
            "stdin" => got.stdin = Some(s.data),
            "resize" => got.resize = Some(s.data),
            other => {
                tracing::debug!(stream_type = other, "ignoring an unknown remotecommand stream");
                continue;
            }
        }
        count += 1;
    }
    if got.error.is_none() {
        return Err("the client opened no error stream".into());
    }
    Ok(got)
}

/// Runs a session over SPDY: `run` gets the inputs and the output channel.
async fn over_spdy<IO, F, Fut>(io: IO, streams: Streams, protocol: &'static str, run: F)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    F: FnOnce(Inputs, mpsc::Sender<Out>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut conn = SpdyConn::new(io);
    let opened = match accept_streams(&mut conn, streams, protocol).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "CRI streaming session not started");
            conn.close().await;
            return;
        }
    };
    let inputs = Inputs { stdin: opened.stdin, resize: opened.resize, gone: conn.gone() };
    let (tx, mut rx) = mpsc::channel::<Out>(16);
    let (stdout, stderr, error) = (opened.stdout, opened.stderr, opened.error);
    let writer = async move {
        while let Some(o) = rx.recv().await {
            let (target, data) = match o {
                Out::Stdout(d) => (&stdout, d),
                Out::Stderr(d) => (&stderr, d),
                Out::Error(d) => (&error, d),
            };
            if let Some(w) = target
                && !w.write(data).await
            {
                break;
            }
        }
        for w in [&stdout, &stderr, &error].into_iter().flatten() {
            w.finish().await;
        }
    };
    tokio::join!(run(inputs, tx), writer);
    conn.close().await;
}

pub async fn exec<IO: AsyncRead + AsyncWrite + Send + 'static>(
    containers: Arc<Containers>,
    request: ExecRequest,
    streams: Streams,
    protocol: &'static str,
    io: IO,
) {
    over_spdy(io, streams, protocol, |inputs, out| run_exec(containers, request, streams, inputs, protocol, out)).await
}

pub async fn attach<IO: AsyncRead + AsyncWrite + Send + 'static>(
    containers: Arc<Containers>,
    request: AttachRequest,
    streams: Streams,
    protocol: &'static str,
    io: IO,
) {
    over_spdy(io, streams, protocol, |inputs, out| run_attach(containers, request, streams, inputs, protocol, out))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitRecord {
        ExitRecord { code, ..Default::default() }
    }

    #[test]
    fn exit_codes_become_v4_statuses() {
        let ok = String::from_utf8(status(true, Ok(Some(exit(0)))).unwrap()).unwrap();
        assert_eq!(ok, r#"{"metadata":{},"status":"Success"}"#);
        let failed: serde_json::Value = serde_json::from_slice(&status(true, Ok(Some(exit(3)))).unwrap()).unwrap();
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0], serde_json::json!({"reason": "ExitCode", "message": "3"}));
        assert!(failed["message"].as_str().unwrap().starts_with("command terminated with non-zero exit code"));
        assert_eq!(status(false, Ok(Some(exit(0)))), None);
        assert!(status(false, Ok(Some(exit(2)))).is_some());
        let internal: serde_json::Value = serde_json::from_slice(&status(true, Err("boom".into())).unwrap()).unwrap();
        assert_eq!((internal["reason"].as_str(), internal["message"].as_str()), (Some("InternalError"), Some("boom")));
    }

    #[test]
    fn resize_messages_are_parsed_across_chunks() {
        let mut buf = br#"{"Width":80,"Height":24}"#.to_vec();
        buf.extend(b"\n{\"Width\":100,");
        let sizes = resizes(&mut buf).unwrap();
        assert_eq!(sizes, vec![SessionInput::Resize { rows: 24, cols: 80 }]);
        buf.extend(b"\"Height\":50}\n");
        assert_eq!(resizes(&mut buf).unwrap(), vec![SessionInput::Resize { rows: 50, cols: 100 }]);
        assert!(resizes(&mut br#"{"Width":"x"}"#.to_vec()).unwrap_err().starts_with("bad resize message"));
        assert!(resizes(&mut b"[1,2]".to_vec()).is_err());
        assert!(resizes(&mut b"nope".to_vec()).is_err());
    }
}
