//! Frames on the monitor's unix socket: `[type: u8][length: u32 big-endian][payload]`.
//!
//! A connection that sends `Attach` receives the container's output from then on; every connection
//! receives `Started` when the process starts and one `Exit`, after all output was sent. A connection that
//! sends `Exec` owns that extra process instead: its stdin, resize and signal frames go to it, and it gets
//! the process's `Started`, output and `Exit`.

use super::bundle::{ExecSpec, ExitInfo};

/// Largest payload accepted, and sent: an Exec carries up to 1 MiB of arguments and environment (the API's
/// bound, api/bounds.rs), which JSON escaping can grow sixfold.
pub const MAX_FRAME: usize = 8 << 20;

/// Server to monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToMonitor {
    /// Send me the output from now on.
    Attach,
    /// Start the process (ignored if it was started), with an initial tty size (0 = leave).
    Start {
        rows: u16,
        cols: u16,
    },
    Stdin(Vec<u8>),
    CloseStdin,
    Resize {
        rows: u16,
        cols: u16,
    },
    Signal(i32),
    /// Run an extra process in the container; this connection owns it from now on.
    Exec(ExecSpec),
    /// Signal an exec by id (from any connection); answered with `Started` (it exists) or `NoSuchExec`.
    SignalExec {
        exec_id: String,
        signal: i32,
    },
    /// Send me that exec's `Exit` when it ends (at once if it has), or `NoSuchExec`.
    WaitExec(String),
    /// Open the CRI log file again (the kubelet moved it away to rotate it); answered with `Started` when it
    /// is open, or `Stderr` with the reason.
    ReopenLog,
}

/// Monitor to server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromMonitor {
    Started {
        pid: i32,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitInfo),
    /// The exec id named by `SignalExec` or `WaitExec` is unknown.
    NoSuchExec(String),
    /// The container's output that could not be written to its log (the disk is full), in bytes so far: sent
    /// to every connection when writing starts failing and when it works again, and to each new connection.
    LogDropped(u64),
}

/// A JSON payload (an exec's spec, an exit status); a failure to encode it is the caller's error, never an
/// empty payload.
fn json_frame(kind: u8, value: &impl serde::Serialize) -> std::io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(value).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("cannot encode frame {kind}: {e}"))
    })?;
    Ok(frame(kind, &payload))
}

fn json_frame_checked(kind: u8, value: &impl serde::Serialize) -> std::io::Result<Vec<u8>> {
    let frame = json_frame(kind, value)?;
    if frame.len() - 5 > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("frame {kind} of {} bytes is larger than the monitor takes ({MAX_FRAME})", frame.len() - 5),
        ));
    }
    Ok(frame)
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn size_payload(rows: u16, cols: u16) -> [u8; 4] {
    let (r, c) = (rows.to_be_bytes(), cols.to_be_bytes());
    [r[0], r[1], c[0], c[1]]
}

fn size_of(p: &[u8]) -> Result<(u16, u16), String> {
    if p.len() != 4 {
        return Err("tty size frame must have 4 bytes".into());
    }
    Ok((u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])))
}

impl ToMonitor {
    /// The frame's bytes; an error only when a JSON payload cannot be encoded.
    pub fn encode(&self) -> std::io::Result<Vec<u8>> {
        Ok(match self {
            ToMonitor::Attach => frame(1, &[]),
            ToMonitor::Start { rows, cols } => frame(2, &size_payload(*rows, *cols)),
            ToMonitor::Stdin(data) => frame(3, data),
            ToMonitor::CloseStdin => frame(4, &[]),
            ToMonitor::Resize { rows, cols } => frame(5, &size_payload(*rows, *cols)),
            ToMonitor::Signal(sig) => frame(6, &sig.to_be_bytes()),
            ToMonitor::Exec(spec) => json_frame_checked(7, spec)?,
            ToMonitor::SignalExec { exec_id, signal } => {
                let mut p = signal.to_be_bytes().to_vec();
                p.extend_from_slice(exec_id.as_bytes());
                frame(8, &p)
            }
            ToMonitor::WaitExec(exec_id) => frame(9, exec_id.as_bytes()),
            ToMonitor::ReopenLog => frame(15, &[]),
        })
    }

    fn decode(kind: u8, p: Vec<u8>) -> Result<Self, String> {
        Ok(match kind {
            1 => ToMonitor::Attach,
            2 => {
                let (rows, cols) = size_of(&p)?;
                ToMonitor::Start { rows, cols }
            }
            3 => ToMonitor::Stdin(p),
            4 => ToMonitor::CloseStdin,
            5 => {
                let (rows, cols) = size_of(&p)?;
                ToMonitor::Resize { rows, cols }
            }
            6 => ToMonitor::Signal(i32::from_be_bytes(p.try_into().map_err(|_| "signal frame must have 4 bytes")?)),
            7 => ToMonitor::Exec(serde_json::from_slice(&p).map_err(|e| format!("bad exec frame: {e}"))?),
            8 if p.len() >= 4 => ToMonitor::SignalExec {
                signal: i32::from_be_bytes([p[0], p[1], p[2], p[3]]),
                exec_id: String::from_utf8_lossy(&p[4..]).into_owned(),
            },
            9 => ToMonitor::WaitExec(String::from_utf8_lossy(&p).into_owned()),
            15 => ToMonitor::ReopenLog,
            k => return Err(format!("unknown frame type {k}")),
        })
    }
}

impl FromMonitor {
    /// The frame's bytes; an error only when a JSON payload cannot be encoded.
    pub fn encode(&self) -> std::io::Result<Vec<u8>> {
        Ok(match self {
            FromMonitor::Started { pid } => frame(10, &pid.to_be_bytes()),
            FromMonitor::Stdout(d) => frame(11, d),
            FromMonitor::Stderr(d) => frame(12, d),
            FromMonitor::Exit(info) => json_frame(13, info)?,
            FromMonitor::NoSuchExec(id) => frame(14, id.as_bytes()),
            FromMonitor::LogDropped(n) => frame(15, &n.to_be_bytes()),
        })
    }

    fn decode(kind: u8, p: Vec<u8>) -> Result<Self, String> {
        Ok(match kind {
            10 => FromMonitor::Started { pid: i32::from_be_bytes(p.try_into().map_err(|_| "bad started frame")?) },
            11 => FromMonitor::Stdout(p),
            12 => FromMonitor::Stderr(p),
            13 => FromMonitor::Exit(serde_json::from_slice(&p).map_err(|e| format!("bad exit frame: {e}"))?),
            14 => FromMonitor::NoSuchExec(String::from_utf8_lossy(&p).into_owned()),
            15 => FromMonitor::LogDropped(u64::from_be_bytes(p.try_into().map_err(|_| "bad log-dropped frame")?)),
            k => return Err(format!("unknown frame type {k}")),
        })
    }
}

/// Reassembles frames from bytes as they arrive.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn next_raw(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(format!("frame of {len} bytes is larger than {MAX_FRAME}"));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some((kind, payload)))
    }

    pub fn next_to_monitor(&mut self) -> Result<Option<ToMonitor>, String> {
        self.next_raw()?.map(|(k, p)| ToMonitor::decode(k, p)).transpose()
    }

    pub fn next_from_monitor(&mut self) -> Result<Option<FromMonitor>, String> {
        self.next_raw()?.map(|(k, p)| FromMonitor::decode(k, p)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bundle::Process;

    #[test]
    fn frames_round_trip_even_when_split_across_reads() {
        let msgs = vec![
            ToMonitor::Attach,
            ToMonitor::Start { rows: 24, cols: 80 },
            ToMonitor::Stdin(b"hello".to_vec()),
            ToMonitor::CloseStdin,
            ToMonitor::Resize { rows: 50, cols: 132 },
            ToMonitor::Signal(15),
            ToMonitor::Exec(ExecSpec {
                exec_id: "e1".into(),
                process: Process { args: vec!["sh".into()], tty: true, ..Default::default() },
                ..Default::default()
            }),
            ToMonitor::SignalExec { exec_id: "e1".into(), signal: 9 },
            ToMonitor::WaitExec("e1".into()),
            ToMonitor::ReopenLog,
        ];
        let bytes: Vec<u8> = msgs.iter().flat_map(|m| m.encode().unwrap()).collect();
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for b in bytes.chunks(3) {
            d.push(b);
            while let Some(m) = d.next_to_monitor().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, msgs);
        let exit = FromMonitor::Exit(ExitInfo { code: 137, signal: 9, ..Default::default() });
        d.push(&exit.encode().unwrap());
        assert_eq!(d.next_from_monitor().unwrap(), Some(exit));
        let dropped = FromMonitor::LogDropped(1 << 40);
        d.push(&dropped.encode().unwrap());
        assert_eq!(d.next_from_monitor().unwrap(), Some(dropped));
    }

    #[test]
    fn a_payload_that_cannot_be_encoded_is_an_error_not_an_empty_frame() {
        struct Unencodable;
        impl serde::Serialize for Unencodable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let err = json_frame(7, &Unencodable).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("cannot encode frame 7"), "{err}");
    }

    #[test]
    fn short_and_malformed_payloads_are_errors() {
        for (kind, payload) in [(2u8, &b"\x00\x18"[..]), (5, b""), (6, b"\x00\x00\x0f"), (7, b"{"), (8, b"\x00\x09")] {
            let mut d = Decoder::default();
            d.push(&frame(kind, payload));
            assert!(d.next_to_monitor().is_err(), "kind {kind}");
        }
        for (kind, payload) in [(10u8, &b"\x00"[..]), (13, b"not json")] {
            let mut d = Decoder::default();
            d.push(&frame(kind, payload));
            assert!(d.next_from_monitor().is_err(), "kind {kind}");
        }
    }

    #[test]
    fn oversized_and_unknown_frames_are_errors() {
        let mut d = Decoder::default();
        d.push(&[3, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_to_monitor().is_err());
        let mut d = Decoder::default();
        d.push(&[99, 0, 0, 0, 0]);
        assert!(d.next_to_monitor().is_err());
    }
}
