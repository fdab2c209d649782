//! File operations on cgroupfs. Reads are plain file reads; the operations whose effect differs from an ordinary
//! directory tree (mkdir fills a cgroup with interface files, rmdir removes them, writes are commands, killing
//! signals real processes) go through [`CgroupFs`], so tests can run the v2 logic against a fake tree.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::devices::Insn;

/// The kernel side of cgroupfs.
pub(crate) trait CgroupFs: Send + Sync {
    /// mkdir: the kernel fills the new cgroup with its interface files.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// rmdir: removes a cgroup with its interface files; EBUSY while processes are in it.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// One write(2) of `value` to an existing interface file (never creates a file).
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    /// Sends SIGKILL to `pid`; a process that is already gone is not an error.
    fn kill(&self, pid: i32) -> io::Result<()>;
    /// v2: loads the device filter `program` and attaches it to the cgroup `dir` (see [`super::devices`]).
    fn attach_device_filter(&self, dir: &Path, program: &[Insn]) -> io::Result<()>;
}

/// The real cgroupfs of this host.
pub(crate) struct HostFs;

impl CgroupFs for HostFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        OpenOptions::new().write(true).open(path)?.write_all(value.as_bytes())
    }

    fn kill(&self, pid: i32) -> io::Result<()> {
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn attach_device_filter(&self, dir: &Path, program: &[Insn]) -> io::Result<()> {
        super::devices::attach(dir, program)
    }
}

/// Writes `value` to `path`; the error names both.
pub(crate) fn write_file(fs: &dyn CgroupFs, path: &Path, value: &str) -> io::Result<()> {
    fs.write(path, value).map_err(|e| io::Error::new(e.kind(), format!("writing {value:?} to {}: {e}", path.display())))
}

/// Reads a whole file; the error names it.
pub(crate) fn read_file(path: &Path) -> io::Result<String> {
    fs::read_to_string(path).map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))
}

/// Creates the cgroup directory `path` unless it exists.
pub(crate) fn ensure_dir(fs: &dyn CgroupFs, path: &Path) -> io::Result<()> {
    match fs.create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(io::Error::new(e.kind(), format!("creating cgroup {}: {e}", path.display())))
        }
        _ => Ok(()),
    }
}

/// Removes the cgroup directory `path`, retrying while it is busy (a killed process may take a moment to
/// leave) until `deadline`. A directory that is already gone is fine.
pub(crate) fn remove_dir_retrying(fs: &dyn CgroupFs, path: &Path, deadline: Instant) -> io::Result<()> {
    loop {
        match fs.remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => {
                let procs = read_pids(&path.join("cgroup.procs"));
                let hint =
                    if procs.is_empty() { String::new() } else { format!(" (processes still in it: {procs:?})") };
                return Err(io::Error::new(e.kind(), format!("removing cgroup {}: {e}{hint}", path.display())));
            }
        }
    }
}

/// The pids listed in a cgroup.procs file; none when it cannot be read.
pub(crate) fn read_pids(procs_file: &Path) -> Vec<i32> {
    fs::read_to_string(procs_file).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// The value of `key` in a flat-keyed file such as memory.events ("oom_kill 3").
pub(crate) fn read_counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(char::is_whitespace)?;
        if k == key { v.trim().parse().ok() } else { None }
    })
}

/// The controller names in a cgroup.controllers or cgroup.subtree_control file ("cpu memory" or, as written,
/// "+cpu +memory").
pub(crate) fn controller_set(text: &str) -> Vec<&str> {
    text.split_whitespace().map(|c| c.trim_start_matches('+')).collect()
}
