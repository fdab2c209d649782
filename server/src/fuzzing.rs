//! Entry points for the fuzz targets (fuzz/): the parsers that take input from clients and images, each as
//! one call that must return, never panic. Built only with the `fuzzing` feature.

use std::path::Path;

/// An image reference (PullImage, Create).
pub fn reference(input: &str) {
    let _ = crate::image::Reference::parse(input).map(|r| r.to_string());
}

/// A signal name or number (Kill, stop signals, signal frames).
pub fn signal(input: &str) {
    if let Ok(n) = crate::containers::parse_signal(input) {
        let _ = crate::containers::signal_name(n);
    }
}

/// Bytes from a monitor connection, fed in `chunks`, decoded both ways (server and monitor side).
pub fn monitor_frames(input: &[u8], chunk: usize) {
    use crate::runtime::protocol::Decoder;
    for monitor_side in [true, false] {
        let mut decoder = Decoder::default();
        for piece in input.chunks(chunk.max(1)) {
            decoder.push(piece);
            loop {
                let more = if monitor_side {
                    decoder.next_to_monitor().map(|f| f.map(|f| f.encode().map(|_| ())))
                } else {
                    decoder.next_from_monitor().map(|f| f.map(|f| f.encode().map(|_| ())))
                };
                match more {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}

/// A layer (an uncompressed tar stream) unpacked into `dest`, an empty directory, with small limits.
pub fn unpack(input: &[u8], dest: &Path) {
    let limits = crate::image::unpack::Limits { max_entries: 1000, max_path_len: 4096, max_bytes: 1 << 20 };
    let _ = crate::image::unpack::unpack_layer(input, dest, &limits);
}
