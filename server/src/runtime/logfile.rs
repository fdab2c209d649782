//! The per-container output log, written by the monitor and read by the Logs RPC. Binary-safe records:
//! a header line `<unix nanos> <o|e> <length>\n`, then `length` bytes of output, then `\n`.

use std::io::{self, BufRead, Write};

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One chunk of output as the container wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub unix_nanos: i64,
    pub stream: Stream,
    pub data: Vec<u8>,
}

/// Appends a record.
pub fn write_record(out: &mut impl Write, unix_nanos: i64, stream: Stream, data: &[u8]) -> io::Result<()> {
    let s = match stream {
        Stream::Stdout => 'o',
        Stream::Stderr => 'e',
    };
    let mut buf = Vec::with_capacity(data.len() + 32);
    writeln!(buf, "{unix_nanos} {s} {}", data.len())?;
    buf.extend_from_slice(data);
    buf.push(b'\n');
    out.write_all(&buf)
}

/// Reads the next whole record; None at the end (a partly written last record counts as the end).
pub fn read_record(input: &mut impl BufRead) -> io::Result<Option<Record>> {
    let mut header = String::new();
    if input.read_line(&mut header)? == 0 || !header.ends_with('\n') {
        return Ok(None);
    }
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad log record header {header:?}"));
    let mut parts = header.trim_end().split(' ');
    let unix_nanos: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let stream = match parts.next() {
        Some("o") => Stream::Stdout,
        Some("e") => Stream::Stderr,
        _ => return Err(bad()),
    };
    let len: usize = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let mut data = vec![0u8; len + 1];
    match input.read_exact(&mut data) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    data.pop();
    Ok(Some(Record { unix_nanos, stream, data }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_binary_data_and_a_torn_tail_is_ignored() {
        let mut buf = Vec::new();
        write_record(&mut buf, 1, Stream::Stdout, b"line\n").unwrap();
        write_record(&mut buf, 2, Stream::Stderr, &[0, 10, 255]).unwrap();
        let whole = buf.len();
        write_record(&mut buf, 3, Stream::Stdout, b"torn").unwrap();
        buf.truncate(whole + 5);
        let mut r = io::BufReader::new(&buf[..]);
        assert_eq!(read_record(&mut r).unwrap().unwrap().data, b"line\n");
        let second = read_record(&mut r).unwrap().unwrap();
        assert_eq!((second.stream, second.data), (Stream::Stderr, vec![0, 10, 255]));
        assert_eq!(read_record(&mut r).unwrap(), None);
    }
}
