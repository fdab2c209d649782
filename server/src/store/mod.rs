//! Persistent state: crash-safe writes of small files (JSON records). A reader sees the old file or the new
//! one, never a torn mix, even if the server is killed in the middle of a write.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename over, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_replacing(path, bytes, true, None)
}

/// Like [`write_atomic`] without the fsyncs, for files rewritten before every use (a container's bundle and
/// /etc files): readers still never see a torn file, and after a power loss the next start writes them again.
pub fn write_replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_replacing(path, bytes, false, None)
}

/// [`write_replace`] of a file that everyone may read (mode 0644; the others are 0600).
pub fn write_replace_readable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_replacing(path, bytes, false, Some(0o644))
}

fn write_replacing(path: &Path, bytes: &[u8], durable: bool, mode: Option<u32>) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads a JSON file, or returns None when it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_json(&p, &vec![1, 2, 3]).unwrap();
        write_json(&p, &vec![4]).unwrap();
        let back: Option<Vec<i32>> = read_json(&p).unwrap();
        assert_eq!(back, Some(vec![4]));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(read_json::<Vec<i32>>(&dir.path().join("missing")).unwrap(), None);
    }
}
