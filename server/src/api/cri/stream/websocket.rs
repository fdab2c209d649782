//! Exec and attach over WebSocket (v5.channel.k8s.io, v4.channel.k8s.io): binary messages whose first byte is
//! the channel (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize); v5's `[255, channel]` closes a channel
//! (the client's stdin). The connection's close ends the session. Port-forward over WebSocket is client-go's
//! tunnel (`SPDY/3.1+portforward.k8s.io`): the SPDY session's bytes in binary messages, both ways.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, frame::coding::CloseCode};

use super::Streams;
use super::remotecommand::{Inputs, Out, run_attach, run_exec};
use crate::containers::{AttachRequest, Containers, ExecRequest};

/// WebSocket subprotocols, preferred first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// Port-forward's SPDY session tunnelled through WebSocket.
pub const PORTFORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

async fn over_websocket<IO, F, Fut>(io: IO, streams: Streams, protocol: &'static str, run: F)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(Inputs, mpsc::Sender<Out>) -> Fut,
    Fut: Future<Output = ()>,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut source) = ws.split();
    let (stdin_tx, stdin) = mpsc::channel::<Vec<u8>>(32);
    let (resize_tx, resize) = mpsc::channel::<Vec<u8>>(8);
    let (gone_tx, gone) = watch::channel(false);
    let v5 = protocol == "v5.channel.k8s.io";
    let reader = tokio::spawn(async move {
        let mut stdin_tx = Some(stdin_tx);
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(d) => d,
                Message::Close(_) => break,
                _ => continue,
            };
            match (data.first().copied(), data.get(1).copied()) {
                (Some(STDIN), _) if data.len() > 1 => {
                    if let Some(tx) = &stdin_tx
                        && tx.send(data[1..].to_vec()).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                (Some(RESIZE), _) => {
                    let _ = resize_tx.send(data[1..].to_vec()).await;
                }
                (Some(CLOSE), Some(STDIN)) if v5 => stdin_tx = None,
                _ => {}
            }
        }
        let _ = gone_tx.send(true);
    });
    let inputs =
        Inputs { stdin: streams.stdin.then_some(stdin), resize: streams.tty.then_some(resize), gone: gone.clone() };
    let (tx, mut rx) = mpsc::channel::<Out>(16);
    let writer = async move {
        while let Some(o) = rx.recv().await {
            let (channel, data) = match o {
                Out::Stdout(d) => (STDOUT, d),
                Out::Stderr(d) => (STDERR, d),
                Out::Error(d) => (ERROR, d),
            };
            let mut message = Vec::with_capacity(data.len() + 1);
            message.push(channel);
            message.extend(data);
            if sink.send(Message::Binary(message.into())).await.is_err() {
                return;
            }
        }
        let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = sink.send(Message::Close(Some(close))).await;
        let _ = sink.close().await;
    };
    tokio::join!(run(inputs, tx), writer);
    // The client answers the close; give it a moment, then drop the connection.
    let mut reader = reader;
    if tokio::time::timeout(std::time::Duration::from_secs(5), &mut reader).await.is_err() {
        reader.abort();
    }
}

pub async fn exec<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    containers: Arc<Containers>,
    request: ExecRequest,
    streams: Streams,
    protocol: &'static str,
    io: IO,
) {
    over_websocket(io, streams, protocol, |inputs, out| run_exec(containers, request, streams, inputs, protocol, out))
        .await
}

pub async fn attach<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    containers: Arc<Containers>,
    request: AttachRequest,
    streams: Streams,
    protocol: &'static str,
    io: IO,
) {
    over_websocket(io, streams, protocol, |inputs, out| run_attach(containers, request, streams, inputs, protocol, out))
        .await
}

/// Port-forward through the WebSocket tunnel: the SPDY session runs on one end of a pipe whose other end the
/// WebSocket messages carry.
pub async fn portforward<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    pod: String,
    netns: Option<PathBuf>,
    io: IO,
) {
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut source) = ws.split();
    let (session_end, tunnel_end) = tokio::io::duplex(64 << 10);
    let (mut from_session, mut to_session) = tokio::io::split(tunnel_end);
    let session = tokio::spawn(super::portforward::serve(pod, netns, session_end));
    let inbound = async move {
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(d) => d,
                Message::Close(_) => break,
                _ => continue,
            };
            if to_session.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to_session.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match from_session.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = sink.send(Message::Close(Some(close))).await;
        let _ = sink.close().await;
    };
    // Either side ending ends the tunnel; the session then sees EOF and ends its forwards.
    tokio::select! {
        _ = inbound => {},
        _ = outbound => {},
    }
    session.abort();
}
