//! The readers a layer's bytes go through on the blocking side of a pull: the chunks from the network,
//! a tee into the blob file that hashes the compressed bytes, the decompressor chosen by magic bytes, and
//! a hashing reader for the diff id; and the check of what arrived against its descriptor.

use std::io::{self, BufRead, Read, Write};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::image::error::ImageError;

/// Checks what arrived against its descriptor.
pub(super) fn verify(want_digest: &str, want_size: i64, digest: &str, size: i64, what: &str) -> Result<(), ImageError> {
    if size != want_size {
        return Err(ImageError::DataLoss(format!(
            "{what} {want_digest}: registry sent {size} bytes, the manifest says {want_size}"
        )));
    }
    if digest != want_digest {
        return Err(ImageError::DataLoss(format!(
            "{what} {want_digest} does not match its digest: the content received hashes to {digest}; \
             nothing was stored"
        )));
    }
    Ok(())
}

/// Picks the decompressor by the stream's magic bytes (media types lie more often than bytes do).
pub(super) fn decompressor<'a, R: BufRead + 'a>(input: &'a mut R) -> io::Result<Box<dyn Read + 'a>> {
    let head = input.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(input)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(input)?))
    } else {
        Ok(Box::new(input))
    }
}

/// Reads the chunks the network task sends.
pub(super) struct ChunkReader {
    pub(super) rx: mpsc::Receiver<Bytes>,
    pub(super) current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// Passes the compressed bytes through while writing them to the blob file and hashing them.
pub(super) struct Tee {
    pub(super) chunks: ChunkReader,
    pub(super) file: io::BufWriter<std::fs::File>,
    pub(super) hasher: Sha256,
    pub(super) count: i64,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.chunks.read(buf)?;
        self.file.write_all(&buf[..n])?;
        self.hasher.update(&buf[..n]);
        self.count += n as i64;
        Ok(n)
    }
}

impl Tee {
    /// Drains what is left (bytes after the compressed stream's end still belong to the blob and its
    /// digest), flushes the file; returns the digest and size of everything that came.
    pub(super) fn finish(mut self) -> io::Result<(String, i64)> {
        io::copy(&mut self, &mut io::sink())?;
        self.file.flush()?;
        Ok((format!("sha256:{}", hex::encode(self.hasher.finalize())), self.count))
    }
}

/// Hashes what passes through (the uncompressed tar, for the diff id).
pub(super) struct HashingReader<R> {
    pub(super) inner: R,
    pub(super) hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;

    #[test]
    fn decompressor_is_chosen_by_magic_bytes() {
        let tar = b"plain tar bytes".to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        for input in [tar.clone(), gz, zst] {
            let mut r = BufReader::new(&input[..]);
            let mut out = Vec::new();
            decompressor(&mut r).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, tar);
        }
    }

    #[test]
    fn verify_names_size_and_digest_mismatches() {
        let e = verify("sha256:a", 3, "sha256:a", 4, "layer").unwrap_err();
        assert!(matches!(e, ImageError::DataLoss(ref m) if m.contains("4 bytes")));
        let e = verify("sha256:a", 3, "sha256:b", 3, "layer").unwrap_err();
        assert!(matches!(e, ImageError::DataLoss(ref m) if m.contains("does not match")));
        assert!(verify("sha256:a", 3, "sha256:a", 3, "layer").is_ok());
    }
}
