//! The per-container output log, written by the monitor and read by the Logs RPC. Binary-safe records:
//! a header line `<unix nanos> <o|e> <length>\n`, then `length` bytes of output, then `\n`.
//!
//! Rotation by size: before a record would make `container.log` larger than the limit, the monitor renames
//! it to `container.log.1` (shifting `.1` to `.2` and so on, dropping the oldest) and starts a new
//! `container.log`; at most `max_files` files are kept, the current one included (docker's json-file
//! `max-size`/`max-file`). So every file holds at most the limit, except that a single record larger than the
//! limit (at most one read of the container's output, 64 KiB) gets a file of its own. [`Reader`] reads the
//! files oldest first and follows the current one across rotations.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::bundle::{LOG_FILE, LogLimits};

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

/// A record as written: header, data, newline.
fn encode(unix_nanos: i64, stream: Stream, data: &[u8]) -> Vec<u8> {
    let s = match stream {
        Stream::Stdout => 'o',
        Stream::Stderr => 'e',
    };
    let mut buf = Vec::with_capacity(data.len() + 32);
    let _ = writeln!(buf, "{unix_nanos} {s} {}", data.len());
    buf.extend_from_slice(data);
    buf.push(b'\n');
    buf
}

/// The monitor's side: appends records to `container.log` in a directory, rotating it by size.
pub struct Writer {
    dir: PathBuf,
    file: File,
    size: u64,
    limits: LogLimits,
}

impl Writer {
    /// Opens (appends to) the log in `dir`. With rotation on, rotated files beyond `max_files` (left by a run
    /// with a larger limit) are removed.
    pub fn open(dir: &Path, limits: LogLimits) -> io::Result<Writer> {
        let file = fs::OpenOptions::new().create(true).append(true).open(dir.join(LOG_FILE))?;
        let size = file.metadata()?.len();
        if limits.max_size > 0 {
            for (n, path) in rotated_files(dir)? {
                if n + 1 > limits.max_files.max(1) as u64 {
                    let _ = fs::remove_file(path);
                }
            }
        }
        Ok(Writer { dir: dir.to_path_buf(), file, size, limits })
    }

    /// Appends a record, rotating first when it would take the current file past the size limit. A failed
    /// rotation is reported and the record still written (to the current file). A record that cannot be
    /// written whole (ENOSPC) is not written at all: the error says so and the log stays readable.
    pub fn write(&mut self, unix_nanos: i64, stream: Stream, data: &[u8]) -> io::Result<()> {
        let record = encode(unix_nanos, stream, data);
        let max = self.limits.max_size;
        if max > 0
            && self.size > 0
            && self.size + record.len() as u64 > max
            && let Err(e) = self.rotate()
        {
            note!("cm-monitor: cannot rotate {}: {e}", self.dir.join(LOG_FILE).display());
        }
        if let Err(e) = self.file.write_all(&record) {
            // A record cut short (the disk filled up in the middle of it) would garble every later one for
            // readers: take it back, so the log holds whole records only.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += record.len() as u64;
        Ok(())
    }

    /// container.log.(N-2) -> .(N-1), ..., container.log -> .1 (with N = max_files; N = 1 keeps no old file),
    /// then a new container.log.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.limits.max_files.max(1) as u64;
        let current = self.dir.join(LOG_FILE);
        if keep == 1 {
            fs::remove_file(&current)?;
        } else {
            for n in (1..keep - 1).rev() {
                match fs::rename(rotated_name(&self.dir, n), rotated_name(&self.dir, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&current, rotated_name(&self.dir, 1))?;
        }
        self.file = fs::OpenOptions::new().create(true).append(true).open(&current)?;
        self.size = 0;
        Ok(())
    }
}

/// The kubelet's container log (CRI format), written by the monitor next to `container.log`: one line per
/// line of output, `<RFC 3339 time> <stdout|stderr> <F|P> <text>`, where P marks a partial line (output that
/// did not end with a newline in this read; the rest follows in later lines) and F a full one.
pub struct CriWriter {
    path: PathBuf,
    file: File,
}

impl CriWriter {
    /// Opens (appends to) the file, making its directory.
    pub fn open(path: &Path) -> io::Result<CriWriter> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(CriWriter { path: path.to_path_buf(), file })
    }

    /// Opens the file again (after the kubelet rotated it away: ReopenContainerLog).
    pub fn reopen(&mut self) -> io::Result<()> {
        *self = CriWriter::open(&self.path)?;
        Ok(())
    }

    pub fn write(&mut self, unix_nanos: i64, stream: Stream, data: &[u8]) -> io::Result<()> {
        self.file.write_all(&encode_cri(unix_nanos, stream, data))
    }
}

/// The CRI log lines of one chunk of output.
pub fn encode_cri(unix_nanos: i64, stream: Stream, data: &[u8]) -> Vec<u8> {
    let time = prost_types::Timestamp {
        seconds: unix_nanos.div_euclid(1_000_000_000),
        nanos: unix_nanos.rem_euclid(1_000_000_000) as i32,
    };
    let stream = match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    };
    let mut out = Vec::with_capacity(data.len() + 48);
    let mut rest = data;
    while !rest.is_empty() {
        let (line, tag, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], 'F', &rest[i + 1..]),
            None => (rest, 'P', &rest[rest.len()..]),
        };
        let _ = write!(out, "{time} {stream} {tag} ");
        out.extend_from_slice(line);
        out.push(b'\n');
        rest = next;
    }
    out
}

/// `container.log.N`.
fn rotated_name(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{LOG_FILE}.{n}"))
}

/// The rotated files in `dir` as (N, path), in no particular order.
fn rotated_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let prefix = format!("{LOG_FILE}.");
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|n| n.parse().ok()) else {
            continue;
        };
        found.push((n, entry.path()));
    }
    Ok(found)
}

/// Every file of the log with its inode, oldest first (the highest N first, container.log last); files that
/// vanish while being listed are left out.
fn log_files(dir: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let mut rotated = match rotated_files(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let paths = rotated.into_iter().map(|(_, path)| path).chain([dir.join(LOG_FILE)]);
    Ok(paths.filter_map(|path| fs::metadata(&path).ok().map(|m| (path, m.ino()))).collect())
}

/// Opens `path` if it still is the file with inode `ino`.
fn open_if_same(path: &Path, ino: u64) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) if file.metadata()?.ino() == ino => Ok(Some(file)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))),
    }
}

/// How often opening the log retries when a rotation changes the files under it.
const OPEN_ATTEMPTS: usize = 20;

/// Reads a container's log across its rotated files, oldest first, and keeps following `container.log` across
/// rotations: when the file being read was renamed away, it is read to its end and then the file that came
/// after it. A reader that falls behind by more than the files kept loses the lines rotated away meanwhile and
/// goes on with the oldest file left.
pub struct Reader {
    dir: PathBuf,
    current: BufReader<File>,
    ino: u64,
    /// The current file no longer gets records (it was rotated away).
    done_growing: bool,
    /// Newer files opened with the current one, oldest first.
    newer: Vec<(File, u64)>,
}

impl Reader {
    /// Opens every file of the log in `dir` at once (so that a rotation meanwhile loses nothing); None when
    /// there is no log (yet).
    pub fn open(dir: &Path) -> io::Result<Option<Reader>> {
        for _ in 0..OPEN_ATTEMPTS {
            let listed = log_files(dir)?;
            let mut opened = Vec::new();
            for (path, ino) in &listed {
                match open_if_same(path, *ino)? {
                    Some(file) => opened.push((file, *ino)),
                    None => break, // rotated meanwhile: list again
                }
            }
            if opened.len() < listed.len() {
                continue;
            }
            if opened.is_empty() {
                return Ok(None);
            }
            let (file, ino) = opened.remove(0);
            opened.reverse(); // popped from the back: oldest last
            return Ok(Some(Reader {
                dir: dir.to_path_buf(),
                current: BufReader::new(file),
                ino,
                done_growing: false,
                newer: opened,
            }));
        }
        Err(io::Error::other(format!("the log in {} kept rotating while being opened", dir.display())))
    }

    /// The next whole record, or None when everything written so far has been read (call again later to
    /// follow). A torn record at the end of the current file is read once it is whole.
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        loop {
            let position = self.current.stream_position()?;
            if let Some(record) = read_record(&mut self.current)? {
                return Ok(Some(record));
            }
            self.current.seek(SeekFrom::Start(position))?;
            if !self.done_growing {
                let live = fs::metadata(self.dir.join(LOG_FILE)).map(|m| m.ino());
                if self.newer.is_empty() && live.as_ref().is_ok_and(|ino| *ino == self.ino) {
                    return Ok(None);
                }
                // Rotated: every record it will ever hold was written before the rename; read them first.
                self.done_growing = true;
                continue;
            }
            let Some((file, ino)) = self.newer.pop().map_or_else(|| self.successor(), |next| Ok(Some(next)))? else {
                return Ok(None); // between the rename and the new file: try again later
            };
            self.current = BufReader::new(file);
            self.ino = ino;
            self.done_growing = false;
        }
    }

    /// The file that came after the current one: the next newer file, or the oldest when the current one was
    /// rotated away entirely. None when the current one is still the newest (the new file is not there yet).
    fn successor(&self) -> io::Result<Option<(File, u64)>> {
        for _ in 0..OPEN_ATTEMPTS {
            let listed = log_files(&self.dir)?;
            let next = match listed.iter().position(|(_, ino)| *ino == self.ino) {
                Some(i) => listed.get(i + 1),
                None => listed.first(),
            };
            let Some((path, ino)) = next else { return Ok(None) };
            if let Some(file) = open_if_same(path, *ino)? {
                return Ok(Some((file, *ino)));
            }
        }
        Err(io::Error::other(format!("the log in {} kept rotating while being read", self.dir.display())))
    }
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
    fn cri_lines_mark_full_and_partial_lines() {
        let out = encode_cri(1_700_000_000_123_456_789, Stream::Stdout, b"a\nbc\npart");
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "2023-11-14T22:13:20.123456789Z stdout F a");
        assert!(lines[1].ends_with(" stdout F bc") && lines[2].ends_with(" stdout P part"), "{text}");
        assert_eq!(
            String::from_utf8(encode_cri(0, Stream::Stderr, b"\n")).unwrap(),
            "1970-01-01T00:00:00Z stderr F \n"
        );
    }

    #[test]
    fn records_round_trip_with_binary_data_and_a_torn_tail_is_ignored() {
        let mut buf = Vec::new();
        buf.extend(encode(1, Stream::Stdout, b"line\n"));
        buf.extend(encode(2, Stream::Stderr, &[0, 10, 255]));
        let whole = buf.len();
        buf.extend(encode(3, Stream::Stdout, b"torn"));
        buf.truncate(whole + 5);
        let mut r = io::BufReader::new(&buf[..]);
        assert_eq!(read_record(&mut r).unwrap().unwrap().data, b"line\n");
        let second = read_record(&mut r).unwrap().unwrap();
        assert_eq!((second.stream, second.data), (Stream::Stderr, vec![0, 10, 255]));
        assert_eq!(read_record(&mut r).unwrap(), None);
    }

    fn limits(max_size: u64, max_files: u32) -> LogLimits {
        LogLimits { max_size, max_files }
    }

    /// `n` records "line <i>\n" (padded to 100 bytes of output each), stdout.
    fn write_lines(w: &mut Writer, from: usize, to: usize) {
        for i in from..to {
            w.write(i as i64, Stream::Stdout, format!("{:<99}\n", format!("line {i}")).as_bytes()).unwrap();
        }
    }

    fn read_all(r: &mut Reader) -> Vec<usize> {
        let mut seen = Vec::new();
        while let Some(record) = r.next_record().unwrap() {
            seen.push(record.unix_nanos as usize);
        }
        seen
    }

    fn files(dir: &Path) -> Vec<(String, u64)> {
        let mut names: Vec<(String, u64)> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rotation_keeps_at_most_max_files_each_within_the_limit_and_the_reader_gets_the_newest_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path(), limits(1000, 3)).unwrap();
        write_lines(&mut w, 0, 100);
        let kept = files(dir.path());
        let names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["container.log", "container.log.1", "container.log.2"]);
        assert!(kept.iter().all(|(_, len)| *len <= 1000), "{kept:?}");
        let seen = read_all(&mut Reader::open(dir.path()).unwrap().unwrap());
        // Each record is 100 bytes of output plus a header: 8 fit in 1000 bytes.
        let first = *seen.first().unwrap();
        assert_eq!(seen, (first..100).collect::<Vec<_>>(), "the newest records, in order, none missing");
        assert!((19..=27).contains(&seen.len()), "{} records kept", seen.len());
    }

    #[test]
    fn a_reader_follows_the_log_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path(), limits(1000, 3)).unwrap();
        write_lines(&mut w, 0, 5);
        let mut r = Reader::open(dir.path()).unwrap().unwrap();
        assert_eq!(read_all(&mut r), (0..5).collect::<Vec<_>>());
        // Less than the files kept between two reads: nothing is lost.
        let mut seen = Vec::new();
        for round in 0..10 {
            write_lines(&mut w, 5 + round * 7, 5 + (round + 1) * 7);
            seen.extend(read_all(&mut r));
        }
        assert_eq!(seen, (5..75).collect::<Vec<_>>());
        // Further behind than the files kept: it goes on with the oldest file left.
        write_lines(&mut w, 75, 200);
        let rest = read_all(&mut r);
        let oldest_kept = read_all(&mut Reader::open(dir.path()).unwrap().unwrap())[0];
        // What its file got before it was rotated away, then the oldest file left.
        let jump = rest.iter().position(|n| *n == oldest_kept).expect("the oldest record kept");
        assert_eq!(rest[..jump], (75..75 + jump).collect::<Vec<_>>());
        assert_eq!(rest[jump..], (oldest_kept..200).collect::<Vec<_>>());
    }

    #[test]
    fn a_record_larger_than_the_limit_gets_a_file_of_its_own_and_one_file_means_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path(), limits(500, 1)).unwrap();
        write_lines(&mut w, 0, 3);
        w.write(3, Stream::Stderr, &[b'x'; 2000]).unwrap();
        assert_eq!(files(dir.path()).len(), 1);
        let mut r = Reader::open(dir.path()).unwrap().unwrap();
        let record = r.next_record().unwrap().unwrap();
        assert_eq!((record.unix_nanos, record.data.len()), (3, 2000));
        write_lines(&mut w, 4, 6);
        assert_eq!(read_all(&mut r), [4, 5], "followed into the new file");
    }

    #[test]
    fn without_a_limit_nothing_rotates_and_reopening_removes_files_beyond_a_smaller_max() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path(), limits(0, 1)).unwrap();
        write_lines(&mut w, 0, 50);
        assert_eq!(files(dir.path()).len(), 1);
        let mut w = Writer::open(dir.path(), limits(1000, 4)).unwrap();
        write_lines(&mut w, 50, 100);
        assert_eq!(files(dir.path()).len(), 4);
        drop(Writer::open(dir.path(), limits(1000, 2)).unwrap());
        let names: Vec<String> = files(dir.path()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["container.log", "container.log.1"]);
        assert!(Reader::open(&dir.path().join("nothing")).unwrap().is_none());
    }
}
