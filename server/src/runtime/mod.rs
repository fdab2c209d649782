//! Running containers. cm-server never forks container code from its multi-threaded process: it starts
//! `cm-monitor`, a small single-threaded program that owns one container. The monitor clones the
//! container's init into new namespaces, holds its stdio (pipes or a pty), writes its log, reaps its exit
//! status and outlives cm-server. The server talks to it over a unix socket in the container's directory.
//!
//! - [`bundle`]: what the server hands the monitor (rootfs layers, process, limits' cgroup files ...)
//! - [`protocol`]: the frames on the monitor's socket
//! - [`monitor`]: the monitor's event loop
//! - [`clone`]: fork-like clones into new namespaces and, on cgroup v2, straight into the container's cgroup
//! - [`sync`]: the go-ahead messages between the monitor and its init before the container runs
//! - [`init`]: the container side: rootfs, mounts, pivot_root, hostname, user, exec
//! - [`syscall`]: the init's privileged kernel calls behind a trait, faked in unit tests
//! - [`user`]: `user[:group]` resolved from the image's /etc/passwd and /etc/group, as data
//! - [`userns`]: user namespaces: id maps and the idmapped overlay root the monitor builds for the init
//! - [`logfile`]: the per-container output log
//! - [`seccomp`]: docker-format seccomp profiles compiled to BPF by the server, installed by the init
//! - [`client`]: the server's side of the socket

/// A diagnostic line on stderr (the monitor's is monitor.log) that never panics: with the disk full the write
/// fails, and a monitor must outlive that (`eprintln!` would panic and take the container with it).
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod bundle;
pub mod client;
pub mod clone;
pub mod init;
pub mod logfile;
pub mod monitor;
pub mod protocol;
pub mod seccomp;
pub mod sync;
pub mod syscall;
pub mod user;
pub mod userns;
