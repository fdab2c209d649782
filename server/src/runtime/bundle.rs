//! The bundle: everything the monitor and the container init need, written by the server as
//! `bundle.json` in the container's directory before the monitor starts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Files in a container's directory.
pub const BUNDLE_FILE: &str = "bundle.json";
pub const SOCKET_FILE: &str = "monitor.sock";
pub const MONITOR_FILE: &str = "monitor.json";
pub const EXIT_FILE: &str = "exit.json";
pub const LOG_FILE: &str = "container.log";
pub const MONITOR_LOG_FILE: &str = "monitor.log";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    /// Container id.
    pub id: String,
    pub rootfs: Rootfs,
    pub process: Process,
    pub hostname: String,
    /// Share the host's network namespace instead of a new one.
    pub host_network: bool,
    /// The files the init and exec'd processes write "0" to, to join the container's cgroups before they
    /// run anything of the container (Cgroup::join_files).
    #[serde(alias = "cgroup_procs")]
    pub cgroup_join: Vec<PathBuf>,
    /// cgroup v2: the container's cgroup directory; the init and exec'd processes are cloned straight into
    /// it (CLONE_INTO_CGROUP) and join through `cgroup_join` only where the kernel cannot.
    #[serde(default)]
    pub cgroup_clone_into: Option<PathBuf>,
    /// The capability set of container processes (bit N = capability N).
    #[serde(default = "default_capabilities")]
    pub capabilities: u64,
    /// The cgroup layout, to mount the container's cgroup read-only inside.
    pub cgroup_v2: bool,
    /// Files bind-mounted over /etc/hosts, /etc/hostname, /etc/resolv.conf.
    pub etc_files: Vec<(PathBuf, String)>,
    /// Extra mounts.
    pub mounts: Vec<MountSpec>,
    /// Rotation of the container's output log.
    #[serde(default)]
    pub log: LogLimits,
    /// The seccomp filters container processes install before they exec, in order (empty: none); compiled
    /// by the server (see [`super::seccomp`]).
    #[serde(default)]
    pub seccomp: Vec<super::seccomp::Program>,
    /// Container processes set no_new_privs before they exec (--security-opt no-new-privileges).
    #[serde(default)]
    pub no_new_privileges: bool,
    /// Privileged: every host device, writable /sys and /proc/sys, no masked or read-only paths (the
    /// capabilities come in `capabilities`; seccomp checks this too).
    #[serde(default)]
    pub privileged: bool,
    /// The root filesystem is remounted read-only once everything is mounted on it.
    #[serde(default)]
    pub read_only_rootfs: bool,
    /// A user namespace mapping container ids 0..size onto these host ids (None: the host's).
    #[serde(default)]
    pub id_map: Option<IdMap>,
    /// Namespaces to join instead of making new ones (a pod's members join its sandbox's).
    #[serde(default)]
    pub join_namespaces: Vec<NamespaceJoin>,
    /// A pod's namespace holder: the init sets up its namespaces (hostname, loopback) and then only reaps
    /// children until it is killed; no root filesystem, no exec.
    #[serde(default)]
    pub holder: bool,
    /// Also write the output in the CRI log format to this file (the kubelet's log_path).
    #[serde(default)]
    pub cri_log: Option<PathBuf>,
}

/// Container uids and gids 0..size are host ids uid..uid+size and gid..gid+size.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdMap {
    pub uid: u32,
    pub gid: u32,
    pub size: u32,
}

impl IdMap {
    /// The host uid of container uid `id` (None when it is not mapped).
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        (id < self.size).then(|| self.uid + id)
    }

    pub fn host_gid(&self, id: u32) -> Option<u32> {
        (id < self.size).then(|| self.gid + id)
    }
}

/// A namespace joined by path: `kind` is "net", "ipc", "uts" or "pid"; `path` a namespace file (a bind mount
/// of one, or /proc/PID/ns/KIND).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NamespaceJoin {
    pub kind: String,
    pub path: PathBuf,
}

impl NamespaceJoin {
    /// The CLONE_NEW* flag of the namespace kind, None for a kind cm does not join.
    pub fn flag(&self) -> Option<i32> {
        match self.kind.as_str() {
            "net" => Some(nix::libc::CLONE_NEWNET),
            "ipc" => Some(nix::libc::CLONE_NEWIPC),
            "uts" => Some(nix::libc::CLONE_NEWUTS),
            "pid" => Some(nix::libc::CLONE_NEWPID),
            _ => None,
        }
    }
}

impl Bundle {
    /// The namespace file the bundle joins for `kind`, if any.
    pub fn joined(&self, kind: &str) -> Option<&Path> {
        self.join_namespaces.iter().find(|j| j.kind == kind).map(|j| j.path.as_path())
    }
}

/// Size-based rotation of the container's output log (see [`super::logfile`]).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogLimits {
    /// Rotate before a file would grow past this many bytes; 0 = never rotate.
    pub max_size: u64,
    /// Files kept, the current one included (at least 1).
    pub max_files: u32,
}

/// Overlay root filesystem: image layer snapshots (top first), the container's upper and work dirs, and the
/// mount point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rootfs {
    /// Directory that holds the snapshots; lowerdirs are given relative to it to keep the mount options
    /// short.
    pub snapshots_dir: PathBuf,
    /// Snapshot directory names, top layer first.
    pub lower: Vec<String>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Process {
    /// Entrypoint + command.
    pub args: Vec<String>,
    /// KEY=VALUE.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    /// `user[:group]`, resolved inside the container; empty is root.
    pub user: String,
    pub tty: bool,
    /// Keep a stdin pipe the server can write to (otherwise stdin is /dev/null).
    pub stdin: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountSpec {
    /// "bind" or "tmpfs".
    pub kind: String,
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

impl Bundle {
    pub fn load(dir: &Path) -> std::io::Result<Bundle> {
        crate::store::read_json(&dir.join(BUNDLE_FILE))?.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("no {BUNDLE_FILE} in {}", dir.display()))
        })
    }

    /// A bundle for unit tests: root `merged`, snapshots in `snapshots`, one lower layer, own network,
    /// cgroup v2, no tty, nothing extra mounted.
    #[cfg(test)]
    pub fn for_tests(snapshots: &Path, merged: &Path) -> Bundle {
        Bundle {
            id: "x".into(),
            rootfs: Rootfs {
                snapshots_dir: snapshots.into(),
                lower: vec!["1".into()],
                upper: "/u".into(),
                work: "/w".into(),
                merged: merged.into(),
            },
            process: Process::default(),
            hostname: "abc".into(),
            host_network: false,
            cgroup_join: vec![],
            cgroup_clone_into: None,
            capabilities: DEFAULT_CAPABILITIES,
            cgroup_v2: true,
            etc_files: vec![],
            mounts: vec![],
            log: Default::default(),
            seccomp: vec![],
            no_new_privileges: false,
            privileged: false,
            read_only_rootfs: false,
            id_map: None,
            join_namespaces: vec![],
            holder: false,
            cri_log: None,
        }
    }
}

/// What the monitor records about its processes, for a restarted server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorInfo {
    pub monitor_pid: i32,
    pub init_pid: i32,
    /// cgroup v2: the init was born in the container's cgroup (clone3 with CLONE_INTO_CGROUP) rather than
    /// joining it through cgroup.procs. For tests and diagnosis.
    #[serde(default)]
    pub cloned_into_cgroup: bool,
}

/// How the container's main process ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, or 128 + signal number.
    pub code: i32,
    /// Signal number that killed it, 0 if none.
    pub signal: i32,
    /// Why the process could not start (executable not found ...), empty otherwise.
    pub error: String,
    /// Unix time in nanoseconds.
    pub finished_unix_nanos: i64,
}

/// A process to run inside a running container (Exec). Its process's empty cwd and user mean the
/// container's, and its env is added to the container's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecSpec {
    pub exec_id: String,
    pub process: Process,
    /// Initial terminal size (0 = 24x80).
    pub rows: u16,
    pub cols: u16,
    /// Kill the process when the connection that started it is gone (its session ended, or the server
    /// died), instead of letting it run on with no one attached.
    #[serde(default)]
    pub kill_on_disconnect: bool,
}

/// Docker's default capability set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
/// NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP (bits 0 1 3 4 5 6 7 8 10 13 18 27 29 31).
/// MKNOD is harmless because the devices cgroup (v1) or the device filter program (v2) refuses the nodes it
/// could make but docker's allow-list does not name.
pub const DEFAULT_CAPABILITIES: u64 = 0xa804_25fb;

fn default_capabilities() -> u64 {
    DEFAULT_CAPABILITIES
}
