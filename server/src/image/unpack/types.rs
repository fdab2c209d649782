//! What the unpacker is given and gives back: its limits, its statistics and its errors.

use std::io;

use rustix::io::Errno;

/// Bounds on what one layer may contain.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most tar entries (of any kind, after long-name and PAX records are merged) in the layer.
    pub max_entries: u64,
    /// Longest entry name or link target, in bytes, as stored in the archive.
    pub max_path_len: usize,
    /// Most bytes of regular-file data in the layer.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_entries: 1_000_000, max_path_len: 4096, max_bytes: 64 << 30 }
    }
}

/// What [`unpack_layer`] did.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Tar entries read.
    pub entries: u64,
    /// Regular-file bytes written.
    pub bytes: u64,
    /// Human-readable notes on entries skipped or clamped (at most 100).
    pub skipped: Vec<String>,
}

/// Why a layer could not be unpacked. Entry names are shown as stored in the archive.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot open unpack destination {path:?}: {source}")]
    Dest {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("layer entry name {path:?} is longer than the limit of {limit} bytes")]
    PathTooLong { path: String, limit: usize },
    #[error("link target of layer entry {path:?} is longer than the limit of {limit} bytes")]
    LinkTargetTooLong { path: String, limit: usize },
    #[error("regular files in the layer exceed the limit of {limit} bytes (at entry {path:?})")]
    TooLarge { limit: u64, path: String },
    /// A malformed or truncated archive, or a read error from the reader underneath (which may
    /// itself be a decompressor or a download).
    #[error("cannot read the layer as a tar stream: {0}")]
    Tar(#[source] io::Error),
    #[error("layer entry {path:?} is a hardlink to {target:?}, which cannot be linked: {source}")]
    Hardlink {
        path: String,
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot unpack layer entry {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl UnpackError {
    pub(super) fn io(path: &str, e: Errno) -> Self {
        UnpackError::Io { path: path.to_owned(), source: e.into() }
    }
}
