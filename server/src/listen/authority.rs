//! Stock gRPC clients on the unix socket. grpcio (C core) and grpc-java send the socket path as the HTTP/2
//! `:authority` (`tmp%2Fcm.sock`, `/run/cm.sock`), which is no valid URI authority, and h2 (under hyper and
//! tonic) answers every such request with RST_STREAM(PROTOCOL_ERROR) while it parses the headers, before
//! any service or tower layer sees the request. containerd (Go's HTTP/2) takes any authority.
//!
//! [`UnixAuthority`] wraps the unix connections only, on their way in: it passes the bytes through frame by
//! frame and rewrites each header block (HEADERS and its CONTINUATIONs). A block is decoded with the
//! client's HPACK state (loona-hpack, dynamic table included), an `:authority` that `http` would refuse is
//! replaced by `localhost` (a valid one is kept), and the block is re-encoded as literals without indexing,
//! so the server's own decoder never adds to its dynamic table and stays in step. Everything else (the
//! preface, SETTINGS, DATA, ...) passes untouched, and the server's writes are not touched at all. TCP
//! connections do not go through it: h2 stays strict there.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a client sends before its first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Frames we send are at most this long: the smallest SETTINGS_MAX_FRAME_SIZE a peer may set.
const MAX_FRAME: usize = 16 * 1024;
/// A header block is buffered whole; larger ones end the connection (the server takes 16 KiB of headers).
const MAX_BLOCK: usize = 256 * 1024;
/// The server's SETTINGS_HEADER_TABLE_SIZE (h2's default, which hyper and tonic keep): the most the client's
/// encoder may use.
const HEADER_TABLE_SIZE: usize = 4096;
/// Replaces an `:authority` that is not one.
const LOCALHOST: &[u8] = b"localhost";

/// A connection whose incoming header blocks carry a valid `:authority`.
pub struct UnixAuthority<S> {
    inner: S,
    /// Bytes read but not yet handed on, and bytes ready to hand on.
    input: BytesMut,
    output: BytesMut,
    /// What is left of the preface, and of the payload of a frame passed through.
    preface_left: usize,
    passthrough_left: usize,
    block: Option<HeaderBlock>,
    decoder: loona_hpack::Decoder<'static>,
    scratch: Box<[u8]>,
    eof: bool,
}

/// A header block being collected: its HEADERS frame's stream, flags and priority, then its fragments.
struct HeaderBlock {
    stream: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

impl<S> UnixAuthority<S> {
    pub fn new(inner: S) -> UnixAuthority<S> {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        UnixAuthority {
            inner,
            input: BytesMut::new(),
            output: BytesMut::new(),
            preface_left: PREFACE_LEN,
            passthrough_left: 0,
            block: None,
            decoder,
            scratch: vec![0; 32 * 1024].into_boxed_slice(),
            eof: false,
        }
    }

    /// Moves what can be moved from `input` to `output`: the preface, frames passed through, finished header
    /// blocks rewritten.
    fn process(&mut self) -> io::Result<()> {
        loop {
            let pass = if self.preface_left > 0 { &mut self.preface_left } else { &mut self.passthrough_left };
            if *pass > 0 {
                let n = (*pass).min(self.input.len());
                *pass -= n;
                self.output.extend_from_slice(&self.input.split_to(n));
                if *pass > 0 {
                    return Ok(());
                }
                continue;
            }
            if self.input.len() < FRAME_HEADER_LEN {
                return Ok(());
            }
            let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]) as usize;
            let (kind, flags) = (self.input[3], self.input[4]);
            let stream = [self.input[5], self.input[6], self.input[7], self.input[8]];
            if kind != HEADERS && kind != CONTINUATION {
                if self.block.is_some() {
                    return Err(invalid("a frame other than CONTINUATION inside a header block"));
                }
                self.output.extend_from_slice(&self.input.split_to(FRAME_HEADER_LEN));
                self.passthrough_left = len;
                continue;
            }
            if len > MAX_BLOCK {
                return Err(invalid("header frame too large"));
            }
            if self.input.len() < FRAME_HEADER_LEN + len {
                return Ok(());
            }
            self.input.advance(FRAME_HEADER_LEN);
            let payload = self.input.split_to(len);
            self.header_frame(kind, flags, stream, &payload)?;
        }
    }

    fn header_frame(&mut self, kind: u8, flags: u8, stream: [u8; 4], payload: &[u8]) -> io::Result<()> {
        match (kind, &mut self.block) {
            (HEADERS, None) => {
                let mut fragment = payload;
                if flags & PADDED != 0 {
                    let (&pad, rest) = fragment.split_first().ok_or_else(|| invalid("empty padded HEADERS"))?;
                    let keep = rest.len().checked_sub(pad as usize).ok_or_else(|| invalid("padding too long"))?;
                    fragment = &rest[..keep];
                }
                let priority = if flags & PRIORITY != 0 {
                    let (priority, rest) =
                        fragment.split_first_chunk::<5>().ok_or_else(|| invalid("HEADERS too short"))?;
                    fragment = rest;
                    Some(*priority)
                } else {
                    None
                };
                self.block = Some(HeaderBlock {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                    fragment: fragment.into(),
                });
            }
            (CONTINUATION, Some(block)) if block.stream == stream => {
                if block.fragment.len() + payload.len() > MAX_BLOCK {
                    return Err(invalid("header block too large"));
                }
                block.fragment.extend_from_slice(payload);
            }
            _ => return Err(invalid("HEADERS inside a header block, or CONTINUATION outside one")),
        }
        if flags & END_HEADERS != 0 {
            let block = self.block.take().expect("a block is being collected");
            self.rewrite(block)?;
        }
        Ok(())
    }

    /// Decodes `block`, fixes its `:authority` and appends it, re-encoded, as HEADERS and CONTINUATION frames.
    fn rewrite(&mut self, block: HeaderBlock) -> io::Result<()> {
        let mut encoded = Vec::with_capacity(block.fragment.len() * 2);
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                let value = if &*name == b":authority" && http::uri::Authority::try_from(&*value).is_err() {
                    LOCALHOST
                } else {
                    &value
                };
                literal_without_indexing(&mut encoded, &name, value);
            })
            .map_err(|e| invalid(&format!("cannot decode a header block: {e}")))?;
        let mut flags = if block.end_stream { END_STREAM } else { 0 };
        let mut first = Vec::new();
        if let Some(priority) = block.priority {
            flags |= PRIORITY;
            first.extend_from_slice(&priority);
        }
        let take = (MAX_FRAME - first.len()).min(encoded.len());
        first.extend_from_slice(&encoded[..take]);
        let mut rest = encoded[take..].chunks(MAX_FRAME).peekable();
        let last = rest.peek().is_none();
        self.frame(HEADERS, flags | if last { END_HEADERS } else { 0 }, block.stream, &first);
        while let Some(chunk) = rest.next() {
            let last = rest.peek().is_none();
            self.frame(CONTINUATION, if last { END_HEADERS } else { 0 }, block.stream, chunk);
        }
        Ok(())
    }

    fn frame(&mut self, kind: u8, flags: u8, stream: [u8; 4], payload: &[u8]) {
        self.output.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        self.output.extend_from_slice(&[kind, flags]);
        self.output.extend_from_slice(&stream);
        self.output.extend_from_slice(payload);
    }
}

/// HPACK "literal header field without indexing, new name", strings not Huffman-coded (RFC 7541 6.2.2).
fn literal_without_indexing(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    for string in [name, value] {
        loona_hpack::encoder::encode_integer_into(string.len(), 7, 0, out).expect("writing to a Vec");
        out.extend_from_slice(string);
    }
}

fn invalid(what: &str) -> io::Error {
    tracing::debug!(what, "HTTP/2 from a unix-socket client refused");
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2 from the client: {what}"))
}

impl<S: AsyncRead + Unpin> AsyncRead for UnixAuthority<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = buf.remaining().min(this.output.len());
                buf.put_slice(&this.output.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever incomplete frame is left goes on as it is: the server sees it cut short.
                if this.input.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                let n = buf.remaining().min(this.input.len());
                buf.put_slice(&this.input.split_to(n));
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
                this.block = None;
            } else {
                this.input.extend_from_slice(read.filled());
                this.process()?;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for UnixAuthority<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for UnixAuthority<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
