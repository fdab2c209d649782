use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client's bytes, handed out `step` at a time (as a socket may).
struct Trickle {
    bytes: Vec<u8>,
    at: usize,
    step: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = self.step.min(self.bytes.len() - self.at).min(buf.remaining());
        let at = self.at;
        buf.put_slice(&self.bytes[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn request(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/cm.v1.ContainerService/ListImages"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", "grpc-python/1.85.3 grpc-c/52.0.0 (linux; chttp2)"),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

fn encode(encoder: &mut loona_hpack::Encoder<'_>, headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
}

/// Passes `input` through a UnixAuthority, `step` bytes per read.
fn through(input: Vec<u8>, step: usize) -> io::Result<Vec<u8>> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let mut out = Vec::new();
        UnixAuthority::new(Trickle { bytes: input, at: 0, step }).read_to_end(&mut out).await?;
        Ok(out)
    })
}

/// The frames after the preface: (type, flags, stream, payload).
fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    assert_eq!(&bytes[..PREFACE.len()], PREFACE, "the preface passes first");
    let mut rest = &bytes[PREFACE.len()..];
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let stream = u32::from_be_bytes(rest[5..9].try_into().unwrap());
        frames.push((rest[3], rest[4], stream, rest[9..9 + len].to_vec()));
        rest = &rest[9 + len..];
    }
    frames
}

/// The header lists of the output's header blocks, decoded as the server would (a fresh decoder).
fn header_lists(frames: &[(u8, u8, u32, Vec<u8>)]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut decoder = loona_hpack::Decoder::new();
    let mut lists = Vec::new();
    let mut block = Vec::new();
    for (kind, flags, _, payload) in frames {
        if *kind == HEADERS || *kind == CONTINUATION {
            let skip = if *kind == HEADERS && flags & PRIORITY != 0 { 5 } else { 0 };
            block.extend_from_slice(&payload[skip..]);
            if flags & END_HEADERS != 0 {
                lists.push(decoder.decode(&block).unwrap());
                block.clear();
            }
        }
    }
    lists
}

#[test]
fn a_socket_path_authority_becomes_localhost_and_the_rest_passes_unchanged() {
    let mut encoder = loona_hpack::Encoder::new();
    let settings = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 0]);
    let data = frame(0x0, END_STREAM, 1, b"\0\0\0\0\x05hello");
    let mut input = PREFACE.to_vec();
    input.extend(&settings);
    input.extend(frame(HEADERS, END_HEADERS, 1, &encode(&mut encoder, &request("tmp%2Fcm.sock"))));
    input.extend(&data);
    // The second request's headers are all references to the client's dynamic table.
    input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &encode(&mut encoder, &request("tmp%2Fcm.sock"))));
    input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &encode(&mut encoder, &request("/run/cm.sock"))));
    for step in [1, 7, 1 << 20] {
        let frames = frames(&through(input.clone(), step).unwrap());
        assert_eq!(frames.len(), 5, "step {step}");
        assert_eq!(frame(frames[0].0, frames[0].1, frames[0].2, &frames[0].3), settings);
        assert_eq!(frame(frames[2].0, frames[2].1, frames[2].2, &frames[2].3), data);
        assert_eq!((frames[1].1, frames[1].2), (END_HEADERS, 1));
        assert_eq!((frames[3].1, frames[3].2), (END_HEADERS | END_STREAM, 3));
        for list in header_lists(&frames) {
            assert_eq!(list, request("localhost"), "step {step}");
        }
    }
}

#[test]
fn a_valid_authority_is_kept() {
    for authority in ["localhost", "cm.sock", "127.0.0.1:7070", "[::1]:7070"] {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &encode(&mut loona_hpack::Encoder::new(), &request(authority))));
        assert_eq!(header_lists(&frames(&through(input, 5).unwrap())), vec![request(authority)]);
    }
}

#[test]
fn padding_priority_and_continuations_in_become_a_plain_block_out_split_at_16k() {
    let mut headers = request("tmp%2Fcm.sock");
    headers.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
    let block = encode(&mut loona_hpack::Encoder::new(), &headers);
    let (a, b) = block.split_at(100);
    let mut headers_payload = vec![3u8]; // pad length
    headers_payload.extend_from_slice(&[0x80, 0, 0, 0, 15]); // exclusive dependency on 0, weight 16
    headers_payload.extend_from_slice(a);
    headers_payload.extend_from_slice(&[0, 0, 0]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &headers_payload));
    input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
    let frames = frames(&through(input, 4096).unwrap());
    assert_eq!(frames.len(), 3, "40 KB of headers: HEADERS and two CONTINUATIONs");
    assert_eq!(frames[0].1, PRIORITY | END_STREAM);
    assert_eq!(&frames[0].3[..5], &[0x80, 0, 0, 0, 15]);
    assert!(frames.iter().all(|f| f.3.len() <= MAX_FRAME));
    assert_eq!((frames[1].0, frames[1].1, frames[2].0, frames[2].1), (CONTINUATION, 0, CONTINUATION, END_HEADERS));
    let mut expected = request("localhost");
    expected.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
    assert_eq!(header_lists(&frames), vec![expected]);
}

#[test]
fn a_frame_inside_a_header_block_or_a_bad_block_ends_the_connection() {
    let block = encode(&mut loona_hpack::Encoder::new(), &request("tmp%2Fcm.sock"));
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, 0, 1, &block[..10]));
    input.extend(frame(0x0, 0, 1, b"data"));
    assert_eq!(through(input, 100).unwrap_err().kind(), io::ErrorKind::InvalidData);

    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]));
    assert_eq!(through(input, 100).unwrap_err().kind(), io::ErrorKind::InvalidData);
}
