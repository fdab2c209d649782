//! The messages on the pipes between the monitor and the init it cloned, before the container runs: the
//! init says it joined its cgroups ([`SyncMsg::Joined`]), the monitor gives the go-ahead with the initial
//! terminal size ([`SyncMsg::Go`]). Each message is one write of at most [`MAX_LEN`] bytes, so it arrives
//! whole; EOF instead of a message means the other side gave up.

/// Longest encoded message.
pub const MAX_LEN: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMsg {
    /// Init to monitor: the init is in the container's cgroups.
    Joined,
    /// Monitor to init: start, with the terminal's rows and columns (0 = leave as is).
    Go { rows: u16, cols: u16 },
}

impl SyncMsg {
    /// The message's bytes: `j`, or `g` then rows and columns as big-endian u16s. Returns the buffer and
    /// the length used (no allocation: this is on the start path).
    pub fn encode(self) -> ([u8; MAX_LEN], usize) {
        match self {
            SyncMsg::Joined => ([b'j', 0, 0, 0, 0], 1),
            SyncMsg::Go { rows, cols } => {
                let (r, c) = (rows.to_be_bytes(), cols.to_be_bytes());
                ([b'g', r[0], r[1], c[0], c[1]], 5)
            }
        }
    }

    /// Decodes one whole message; anything else (empty, short, long, unknown tag) is an error.
    pub fn decode(bytes: &[u8]) -> Result<SyncMsg, String> {
        match bytes {
            [b'j'] => Ok(SyncMsg::Joined),
            [b'g', r0, r1, c0, c1] => {
                Ok(SyncMsg::Go { rows: u16::from_be_bytes([*r0, *r1]), cols: u16::from_be_bytes([*c0, *c1]) })
            }
            [] => Err("empty sync message".into()),
            [b'g', ..] => Err(format!("go message of {} bytes, expected 5", bytes.len())),
            [b'j', ..] => Err(format!("joined message of {} bytes, expected 1", bytes.len())),
            [tag, ..] => Err(format!("unknown sync message {tag:#04x}")),
        }
    }

    /// Writes the message in one write.
    pub fn send(self, fd: impl std::os::fd::AsFd) -> rustix::io::Result<()> {
        let (buf, len) = self.encode();
        match rustix::io::write(fd, &buf[..len])? {
            n if n == len => Ok(()),
            _ => Err(rustix::io::Errno::PIPE),
        }
    }

    /// Reads one message; Ok(None) at EOF (the other side closed without sending).
    pub fn receive(fd: impl std::os::fd::AsFd) -> Result<Option<SyncMsg>, String> {
        let mut buf = [0u8; MAX_LEN];
        let n = loop {
            match rustix::io::read(&fd, &mut buf) {
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(format!("read sync pipe: {e}")),
                Ok(n) => break n,
            }
        };
        if n == 0 { Ok(None) } else { SyncMsg::decode(&buf[..n]).map(Some) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for msg in [SyncMsg::Joined, SyncMsg::Go { rows: 24, cols: 80 }, SyncMsg::Go { rows: 0, cols: 65535 }] {
            let (buf, len) = msg.encode();
            assert_eq!(SyncMsg::decode(&buf[..len]), Ok(msg));
        }
        let (buf, len) = SyncMsg::Go { rows: 0x0102, cols: 0x0304 }.encode();
        assert_eq!(&buf[..len], b"g\x01\x02\x03\x04");
        let (buf, len) = SyncMsg::Joined.encode();
        assert_eq!(&buf[..len], b"j");
    }

    #[test]
    fn malformed_and_short_messages_are_errors() {
        for bad in [&b""[..], b"g", b"g\x00\x18\x00", b"g\x00\x18\x00\x50\x00", b"jj", b"x", b"\x00\x00\x00\x00\x00"] {
            assert!(SyncMsg::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn messages_cross_a_pipe_and_eof_is_none() {
        let (r, w) = nix::unistd::pipe().unwrap();
        SyncMsg::Go { rows: 50, cols: 132 }.send(&w).unwrap();
        assert_eq!(SyncMsg::receive(&r), Ok(Some(SyncMsg::Go { rows: 50, cols: 132 })));
        SyncMsg::Joined.send(&w).unwrap();
        assert_eq!(SyncMsg::receive(&r), Ok(Some(SyncMsg::Joined)));
        drop(w);
        assert_eq!(SyncMsg::receive(&r), Ok(None));
    }
}
