//! SPDY/3.1 framing (draft-mbelshe-httpbis-spdy-00 with the 3.1 flow-control changes): the frames the kubelet's
//! streaming protocols use, and the name/value header blocks, zlib-compressed with the SPDY/3 dictionary in one
//! zlib stream per direction per session. Pure code: bytes in, frames out, and back.

use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The zlib dictionary of SPDY/3 header blocks (spec section 2.6.10.1).
const DICTIONARY: &[u8] = include_bytes!("spdy3_dictionary.bin");

const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
const SETTINGS_CLEAR: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// The largest frame payload accepted (the 24-bit length allows 16 MiB; nothing here needs more than this).
pub const MAX_FRAME: usize = 1 << 20;
/// The largest decompressed header block accepted, and the most pairs in one.
pub const MAX_HEADER_BLOCK: usize = 64 << 10;
const MAX_HEADER_PAIRS: usize = 256;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;

/// Header names (lower case) and values; a value may hold several, NUL-separated.
pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream { stream_id: u32, associated_id: u32, priority: u8, fin: bool, unidirectional: bool, headers: Headers },
    SynReply { stream_id: u32, fin: bool, headers: Headers },
    RstStream { stream_id: u32, status: u32 },
    Settings { clear: bool, entries: Vec<(u8, u32, u32)> },
    Ping { id: u32 },
    GoAway { last_good_stream_id: u32, status: u32 },
    Headers { stream_id: u32, fin: bool, headers: Headers },
    WindowUpdate { stream_id: u32, delta: u32 },
    Data { stream_id: u32, fin: bool, data: Vec<u8> },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpdyError {
    #[error("SPDY version {0} is not supported (only 3)")]
    Version(u16),
    #[error("SPDY frame of {0} bytes is larger than the {MAX_FRAME} accepted")]
    TooLarge(usize),
    #[error("SPDY {what} frame is too short ({len} bytes)")]
    Short { what: &'static str, len: usize },
    #[error("SPDY header block: {0}")]
    HeaderBlock(String),
    #[error("SPDY stream id 0 is not valid for a {0} frame")]
    StreamZero(&'static str),
}

/// One direction's header compressor (the whole session's blocks are one zlib stream).
pub struct HeaderEncoder(Compress);

impl Default for HeaderEncoder {
    fn default() -> Self {
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(DICTIONARY).expect("a fresh zlib stream takes a dictionary");
        HeaderEncoder(c)
    }
}

impl HeaderEncoder {
    fn encode(&mut self, headers: &Headers, out: &mut Vec<u8>) {
        let mut block = Vec::new();
        block.extend((headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            block.extend((name.len() as u32).to_be_bytes());
            block.extend(name.to_ascii_lowercase().as_bytes());
            block.extend((value.len() as u32).to_be_bytes());
            block.extend(value.as_bytes());
        }
        let mut input = &block[..];
        loop {
            out.reserve(block.len() + 64);
            let before_in = self.0.total_in();
            self.0.compress_vec(input, out, FlushCompress::Sync).expect("zlib compression of memory cannot fail");
            input = &input[(self.0.total_in() - before_in) as usize..];
            // Done when all input is taken and the sync flush fit (spare room left in out).
            if input.is_empty() && out.len() < out.capacity() {
                return;
            }
        }
    }
}

/// One direction's header decompressor.
pub struct HeaderDecoder(Decompress);

impl Default for HeaderDecoder {
    fn default() -> Self {
        HeaderDecoder(Decompress::new(true))
    }
}

impl HeaderDecoder {
    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(1024);
        loop {
            let (before_in, before_out) = (self.0.total_in(), out.len());
            if out.len() == out.capacity() {
                out.reserve(out.len().max(1024));
            }
            let result = self.0.decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.0.total_in() - before_in) as usize..];
            match result {
                Ok(Status::StreamEnd) => return Err(SpdyError::HeaderBlock("the zlib stream ended".into())),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0.set_dictionary(DICTIONARY).map_err(|e| SpdyError::HeaderBlock(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::HeaderBlock(format!("bad zlib data: {e}"))),
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::HeaderBlock(format!("larger than {MAX_HEADER_BLOCK} bytes")));
            }
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            if input.is_empty() && out.len() == before_out {
                return Ok(out);
            }
        }
    }

    fn decode(&mut self, input: &[u8]) -> Result<Headers, SpdyError> {
        let block = self.inflate(input)?;
        let mut b = &block[..];
        let bad = |m: &str| SpdyError::HeaderBlock(m.to_string());
        let take = |b: &mut &[u8]| -> Result<String, SpdyError> {
            if b.len() < 4 {
                return Err(bad("truncated length"));
            }
            let n = b.get_u32() as usize;
            if b.len() < n {
                return Err(bad("a name or value is longer than the block"));
            }
            let s = String::from_utf8(b[..n].to_vec()).map_err(|_| bad("a name or value is not UTF-8"))?;
            b.advance(n);
            Ok(s)
        };
        if b.len() < 4 {
            return Err(bad("no pair count"));
        }
        let count = b.get_u32() as usize;
        if count > MAX_HEADER_PAIRS {
            return Err(SpdyError::HeaderBlock(format!("{count} pairs, more than {MAX_HEADER_PAIRS}")));
        }
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            let name = take(&mut b)?;
            if name.is_empty() {
                return Err(bad("an empty header name"));
            }
            let value = take(&mut b)?;
            headers.push((name.to_ascii_lowercase(), value));
        }
        if !b.is_empty() {
            return Err(bad("bytes after the last pair"));
        }
        Ok(headers)
    }
}

/// The first value of a header (names are compared lower case).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

fn read_id(b: &mut &[u8]) -> u32 {
    b.get_u32() & 0x7fff_ffff
}

/// Takes one whole frame from the front of `buf`, or Ok(None) when more bytes are needed.
pub fn decode(buf: &mut BytesMut, headers: &mut HeaderDecoder) -> Result<Option<Frame>, SpdyError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    if len > MAX_FRAME {
        return Err(SpdyError::TooLarge(len));
    }
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let frame = buf.split_to(8 + len);
    let flags = frame[4];
    let mut p = &frame[8..];
    if frame[0] & 0x80 == 0 {
        let stream_id = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) & 0x7fff_ffff;
        if stream_id == 0 {
            return Err(SpdyError::StreamZero("DATA"));
        }
        return Ok(Some(Frame::Data { stream_id, fin: flags & FLAG_FIN != 0, data: p.to_vec() }));
    }
    let version = u16::from_be_bytes([frame[0] & 0x7f, frame[1]]);
    if version != VERSION {
        return Err(SpdyError::Version(version));
    }
    let kind = u16::from_be_bytes([frame[2], frame[3]]);
    let need = |what: &'static str, n: usize| if len < n { Err(SpdyError::Short { what, len }) } else { Ok(()) };
    let fin = flags & FLAG_FIN != 0;
    let frame = match kind {
        SYN_STREAM => {
            need("SYN_STREAM", 10)?;
            let stream_id = read_id(&mut p);
            let associated_id = read_id(&mut p);
            let priority = p[0] >> 5;
            p.advance(2);
            if stream_id == 0 {
                return Err(SpdyError::StreamZero("SYN_STREAM"));
            }
            let unidirectional = flags & FLAG_UNIDIRECTIONAL != 0;
            Frame::SynStream { stream_id, associated_id, priority, fin, unidirectional, headers: headers.decode(p)? }
        }
        SYN_REPLY | HEADERS => {
            need(if kind == SYN_REPLY { "SYN_REPLY" } else { "HEADERS" }, 4)?;
            let stream_id = read_id(&mut p);
            let h = headers.decode(p)?;
            if kind == SYN_REPLY {
                Frame::SynReply { stream_id, fin, headers: h }
            } else {
                Frame::Headers { stream_id, fin, headers: h }
            }
        }
        RST_STREAM => {
            need("RST_STREAM", 8)?;
            Frame::RstStream { stream_id: read_id(&mut p), status: p.get_u32() }
        }
        SETTINGS => {
            need("SETTINGS", 4)?;
            let count = p.get_u32() as usize;
            if p.len() != count * 8 {
                return Err(SpdyError::Short { what: "SETTINGS", len });
            }
            let entries = (0..count)
                .map(|_| {
                    let word = p.get_u32();
                    ((word >> 24) as u8, word & 0x00ff_ffff, p.get_u32())
                })
                .collect();
            Frame::Settings { clear: flags & SETTINGS_CLEAR != 0, entries }
        }
        PING => {
            need("PING", 4)?;
            Frame::Ping { id: p.get_u32() }
        }
        GOAWAY => {
            need("GOAWAY", 4)?;
            let last_good_stream_id = read_id(&mut p);
            // SPDY/2 peers send no status; 3 has one.
            let status = if p.len() >= 4 { p.get_u32() } else { 0 };
            Frame::GoAway { last_good_stream_id, status }
        }
        WINDOW_UPDATE => {
            need("WINDOW_UPDATE", 8)?;
            Frame::WindowUpdate { stream_id: read_id(&mut p), delta: p.get_u32() & 0x7fff_ffff }
        }
        // Unknown control frames (NOOP, CREDENTIAL) are ignored, as the spec says.
        _ => return decode(buf, headers),
    };
    Ok(Some(frame))
}

fn control(out: &mut Vec<u8>, kind: u16, flags: u8, body: &[u8]) {
    out.extend((0x8000 | VERSION).to_be_bytes());
    out.extend(kind.to_be_bytes());
    out.push(flags);
    out.extend(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend(body);
}

/// Appends a frame's bytes to `out`.
pub fn encode(frame: &Frame, headers: &mut HeaderEncoder, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    match frame {
        Frame::SynStream { stream_id, associated_id, priority, fin, unidirectional, headers: h } => {
            body.extend(stream_id.to_be_bytes());
            body.extend(associated_id.to_be_bytes());
            body.extend([priority << 5, 0]);
            headers.encode(h, &mut body);
            let flags = if *fin { FLAG_FIN } else { 0 } | if *unidirectional { FLAG_UNIDIRECTIONAL } else { 0 };
            control(out, SYN_STREAM, flags, &body);
        }
        Frame::SynReply { stream_id, fin, headers: h } | Frame::Headers { stream_id, fin, headers: h } => {
            body.extend(stream_id.to_be_bytes());
            headers.encode(h, &mut body);
            let kind = if matches!(frame, Frame::SynReply { .. }) { SYN_REPLY } else { HEADERS };
            control(out, kind, if *fin { FLAG_FIN } else { 0 }, &body);
        }
        Frame::RstStream { stream_id, status } => {
            body.extend(stream_id.to_be_bytes());
            body.extend(status.to_be_bytes());
            control(out, RST_STREAM, 0, &body);
        }
        Frame::Settings { clear, entries } => {
            body.extend((entries.len() as u32).to_be_bytes());
            for (flags, id, value) in entries {
                body.extend(((*flags as u32) << 24 | (id & 0x00ff_ffff)).to_be_bytes());
                body.extend(value.to_be_bytes());
            }
            control(out, SETTINGS, if *clear { SETTINGS_CLEAR } else { 0 }, &body);
        }
        Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
        Frame::GoAway { last_good_stream_id, status } => {
            body.extend(last_good_stream_id.to_be_bytes());
            body.extend(status.to_be_bytes());
            control(out, GOAWAY, 0, &body);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            body.extend(stream_id.to_be_bytes());
            body.extend(delta.to_be_bytes());
            control(out, WINDOW_UPDATE, 0, &body);
        }
        Frame::Data { stream_id, fin, data } => {
            out.extend((stream_id & 0x7fff_ffff).to_be_bytes());
            out.push(if *fin { FLAG_FIN } else { 0 });
            out.extend(&(data.len() as u32).to_be_bytes()[1..]);
            out.extend(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn round_trip(frames: &[Frame]) {
        let (mut enc, mut dec) = (HeaderEncoder::default(), HeaderDecoder::default());
        let mut wire = Vec::new();
        for f in frames {
            encode(f, &mut enc, &mut wire);
        }
        // Fed one byte at a time: frames come out whole, in order, with the shared zlib stream intact.
        let (mut buf, mut got) = (BytesMut::new(), Vec::new());
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(f) = decode(&mut buf, &mut dec).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn every_frame_kind_round_trips_through_one_session() {
        let headers = h(&[("streamtype", "error"), ("x-multi", "a\0b")]);
        round_trip(&[
            Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 7,
                fin: false,
                unidirectional: false,
                headers: headers.clone(),
            },
            Frame::SynReply { stream_id: 1, fin: false, headers: vec![] },
            Frame::SynStream {
                stream_id: 3,
                associated_id: 1,
                priority: 0,
                fin: true,
                unidirectional: true,
                headers: h(&[("streamtype", "stdout")]),
            },
            Frame::Headers { stream_id: 3, fin: false, headers: headers.clone() },
            Frame::Data { stream_id: 1, fin: false, data: b"hello".to_vec() },
            Frame::Data { stream_id: 1, fin: true, data: vec![] },
            Frame::RstStream { stream_id: 3, status: RST_REFUSED_STREAM },
            Frame::Settings { clear: true, entries: vec![(1, 7, 65536), (0, 4, 100)] },
            Frame::Ping { id: 42 },
            Frame::WindowUpdate { stream_id: 1, delta: 1 << 20 },
            Frame::GoAway { last_good_stream_id: 3, status: 0 },
        ]);
    }

    #[test]
    fn frames_of_a_known_good_peer_decode() {
        // Written by moby/spdystream's framer (client-go's, the kubelet's): tests/cri/spdy-capture.
        let wire: &[u8] = include_bytes!("testdata/spdystream-frames.bin");
        let (mut buf, mut dec, mut got) = (BytesMut::from(wire), HeaderDecoder::default(), Vec::new());
        while let Some(f) = decode(&mut buf, &mut dec).unwrap() {
            got.push(f);
        }
        assert!(buf.is_empty());
        let syn = |stream_id, fin, headers| Frame::SynStream {
            stream_id,
            associated_id: 0,
            priority: 0,
            fin,
            unidirectional: false,
            headers,
        };
        let mut error_headers = match &got[0] {
            Frame::SynStream { headers, .. } => headers.clone(),
            other => panic!("{other:?}"),
        };
        error_headers.sort();
        assert_eq!(error_headers, h(&[("streamtype", "error"), ("x-multi", "a\0b")]));
        assert_eq!(
            got[1..],
            [
                syn(3, true, h(&[("streamtype", "stdout")])),
                Frame::SynReply { stream_id: 1, fin: false, headers: vec![] },
                Frame::Data { stream_id: 1, fin: false, data: b"hello".to_vec() },
                Frame::Data { stream_id: 1, fin: true, data: vec![] },
                Frame::Ping { id: 7 },
                Frame::WindowUpdate { stream_id: 1, delta: 100 },
                Frame::Settings { clear: false, entries: vec![(0, 7, 65536)] },
                Frame::RstStream { stream_id: 3, status: 5 },
                Frame::GoAway { last_good_stream_id: 3, status: 0 },
            ]
        );
    }

    #[test]
    fn header_names_become_lower_case_and_first_values_are_found() {
        let (mut enc, mut dec) = (HeaderEncoder::default(), HeaderDecoder::default());
        let mut wire = Vec::new();
        let f = Frame::SynReply { stream_id: 5, fin: false, headers: h(&[("StreamType", "data\0x")]) };
        encode(&f, &mut enc, &mut wire);
        let Some(Frame::SynReply { headers, .. }) = decode(&mut BytesMut::from(&wire[..]), &mut dec).unwrap() else {
            panic!("no reply")
        };
        assert_eq!(headers[0].0, "streamtype");
        assert_eq!(header(&headers, "STREAMTYPE"), Some("data"));
        assert_eq!(header(&headers, "port"), None);
    }

    #[test]
    fn header_blocks_use_the_spdy3_dictionary() {
        // A peer-independent check: the zlib stream's header names the dictionary by its Adler-32.
        let mut enc = HeaderEncoder::default();
        let mut out = Vec::new();
        enc.encode(&h(&[("a", "b")]), &mut out);
        assert_eq!(out[1] & 0x20, 0x20, "FDICT set");
        assert_eq!(&out[2..6], &[0xe3, 0xc6, 0xa7, 0xc2], "the SPDY/3 dictionary's id");
        assert_eq!(DICTIONARY.len(), 1423);
    }

    #[test]
    fn malformed_frames_are_refused_with_a_reason() {
        let mut dec = HeaderDecoder::default();
        let mut bad_version = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert_eq!(decode(&mut bad_version, &mut dec), Err(SpdyError::Version(2)));
        let mut huge = BytesMut::from(&[0x80, 3, 0, 0, 0, 0xff, 0xff, 0xff][..]);
        assert_eq!(decode(&mut huge, &mut dec), Err(SpdyError::TooLarge(0xff_ffff)));
        let mut short_rst = BytesMut::from(&[0x80, 3, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(decode(&mut short_rst, &mut dec), Err(SpdyError::Short { what: "RST_STREAM", .. })));
        let mut data_zero = BytesMut::from(&[0, 0, 0, 0, 0, 0, 0, 1, 9][..]);
        assert_eq!(decode(&mut data_zero, &mut dec), Err(SpdyError::StreamZero("DATA")));
        let mut garbage_headers = BytesMut::from(&[0x80, 3, 0, 2, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4][..]);
        let err = decode(&mut garbage_headers, &mut dec).unwrap_err();
        assert!(err.to_string().starts_with("SPDY header block: bad zlib data"), "{err}");
        // Incomplete frames wait for more bytes.
        let mut partial = BytesMut::from(&[0x80, 3, 0, 6, 0, 0, 0, 4, 0][..]);
        assert_eq!(decode(&mut partial, &mut dec), Ok(None));
    }

    #[test]
    fn oversized_and_inconsistent_header_blocks_are_refused() {
        let (mut enc, mut dec) = (HeaderEncoder::default(), HeaderDecoder::default());
        let mut wire = Vec::new();
        let big = "x".repeat(MAX_HEADER_BLOCK + 1);
        encode(&Frame::SynReply { stream_id: 1, fin: false, headers: h(&[("a", &big)]) }, &mut enc, &mut wire);
        let err = decode(&mut BytesMut::from(&wire[..]), &mut dec).unwrap_err();
        assert_eq!(err, SpdyError::HeaderBlock(format!("larger than {MAX_HEADER_BLOCK} bytes")));

        // A block claiming more pairs than it holds.
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(DICTIONARY).unwrap();
        let mut body = Vec::with_capacity(256);
        body.extend([0, 0, 0, 1]);
        c.compress_vec(&[0, 0, 0, 2, 0, 0, 0, 1, b'a', 0, 0, 0, 0], &mut body, FlushCompress::Sync).unwrap();
        let mut frame = Vec::new();
        control(&mut frame, SYN_REPLY, 0, &body);
        let err = decode(&mut BytesMut::from(&frame[..]), &mut HeaderDecoder::default()).unwrap_err();
        assert_eq!(err, SpdyError::HeaderBlock("truncated length".into()));
    }
}
