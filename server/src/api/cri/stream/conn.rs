//! A server-side SPDY/3.1 session over an upgraded connection: streams the client opens come out of
//! [`SpdyConn::accept`] with their headers and a receiver of their data; each is answered with SYN_REPLY.
//! The peer's pings are answered, its data acknowledged with WINDOW_UPDATE; the session's end (EOF, GOAWAY, a
//! protocol error) ends every stream's data and sets [`SpdyConn::gone`].

use std::collections::HashMap;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::spdy::{self, Frame, HeaderDecoder, HeaderEncoder, Headers};

/// A stream the client opened.
pub struct SpdyStream {
    pub headers: Headers,
    /// The client's data; the end is its FIN (or a reset, or the session's end).
    pub data: mpsc::Receiver<Vec<u8>>,
    pub writer: StreamWriter,
}

enum Out {
    Frame(Frame),
    /// GOAWAY, flush and shut the connection down.
    Close,
}

/// Sends on one stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Out>,
}

impl StreamWriter {
    /// Sends data; false when the session is gone.
    pub async fn write(&self, data: Vec<u8>) -> bool {
        for chunk in data.chunks(32 << 10) {
            let frame = Frame::Data { stream_id: self.id, fin: false, data: chunk.to_vec() };
            if self.out.send(Out::Frame(frame)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Ends this side of the stream (FIN).
    pub async fn finish(&self) {
        let _ = self.out.send(Out::Frame(Frame::Data { stream_id: self.id, fin: true, data: vec![] })).await;
    }
}

pub struct SpdyConn {
    incoming: mpsc::Receiver<SpdyStream>,
    out: mpsc::Sender<Out>,
    gone: watch::Receiver<bool>,
    reader: JoinHandle<()>,
}

impl SpdyConn {
    pub fn new<IO: AsyncRead + AsyncWrite + Send + 'static>(io: IO) -> SpdyConn {
        let (read, write) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(64);
        let (incoming_tx, incoming) = mpsc::channel(16);
        let (gone_tx, gone) = watch::channel(false);
        tokio::spawn(write_frames(write, out_rx));
        let reader = tokio::spawn(read_frames(read, out_tx.clone(), incoming_tx, gone_tx));
        SpdyConn { incoming, out: out_tx, gone, reader }
    }

    /// The next stream the client opens; None when the session is over.
    pub async fn accept(&mut self) -> Option<SpdyStream> {
        self.incoming.recv().await
    }

    /// Becomes true when the client's side of the session ended.
    pub fn gone(&self) -> watch::Receiver<bool> {
        self.gone.clone()
    }

    /// Says GOAWAY and closes the connection once the frames before it are written.
    pub async fn close(self) {
        let _ = self.out.send(Out::Close).await;
    }
}

impl Drop for SpdyConn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn write_frames<W: AsyncWrite>(write: W, mut out: mpsc::Receiver<Out>) {
    tokio::pin!(write);
    let mut encoder = HeaderEncoder::default();
    let mut last_good = 0;
    while let Some(o) = out.recv().await {
        let mut bytes = Vec::new();
        let close = match o {
            Out::Frame(f) => {
                if let Frame::SynReply { stream_id, .. } = f {
                    last_good = stream_id;
                }
                spdy::encode(&f, &mut encoder, &mut bytes);
                false
            }
            Out::Close => {
                spdy::encode(&Frame::GoAway { last_good_stream_id: last_good, status: 0 }, &mut encoder, &mut bytes);
                true
            }
        };
        if write.write_all(&bytes).await.is_err() {
            break;
        }
        if close {
            let _ = write.flush().await;
            let _ = write.shutdown().await;
            break;
        }
    }
}

async fn read_frames<R: AsyncRead>(
    read: R,
    out: mpsc::Sender<Out>,
    incoming: mpsc::Sender<SpdyStream>,
    gone: watch::Sender<bool>,
) {
    tokio::pin!(read);
    let mut decoder = HeaderDecoder::default();
    let mut streams: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buf = BytesMut::with_capacity(64 << 10);
    let send = |f: Frame| out.send(Out::Frame(f));
    'session: loop {
        loop {
            let frame = match spdy::decode(&mut buf, &mut decoder) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "SPDY stream session ended by a protocol error");
                    let _ = send(Frame::GoAway { last_good_stream_id: 0, status: 1 }).await;
                    break 'session;
                }
            };
            match frame {
                Frame::SynStream { stream_id, fin, headers, .. } => {
                    if stream_id % 2 == 0 || streams.contains_key(&stream_id) {
                        let _ = send(Frame::RstStream { stream_id, status: spdy::RST_PROTOCOL_ERROR }).await;
                        continue;
                    }
                    let (tx, rx) = mpsc::channel(32);
                    let writer = StreamWriter { id: stream_id, out: out.clone() };
                    let _ = send(Frame::SynReply { stream_id, fin: false, headers: vec![] }).await;
                    if incoming.send(SpdyStream { headers, data: rx, writer }).await.is_err() {
                        let _ = send(Frame::RstStream { stream_id, status: spdy::RST_REFUSED_STREAM }).await;
                        continue;
                    }
                    if !fin {
                        streams.insert(stream_id, tx);
                    }
                }
                Frame::Data { stream_id, fin, data } => {
                    let len = data.len() as u32;
                    if let Some(tx) = streams.get(&stream_id)
                        && !data.is_empty()
                        && tx.send(data).await.is_err()
                    {
                        streams.remove(&stream_id);
                    }
                    if fin {
                        streams.remove(&stream_id);
                    }
                    if len > 0 {
                        let _ = send(Frame::WindowUpdate { stream_id, delta: len }).await;
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    streams.remove(&stream_id);
                }
                Frame::Ping { id } => {
                    let _ = send(Frame::Ping { id }).await;
                }
                Frame::GoAway { .. } => break 'session,
                Frame::SynReply { .. }
                | Frame::Headers { .. }
                | Frame::Settings { .. }
                | Frame::WindowUpdate { .. } => {}
            }
        }
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = gone.send(true);
}
