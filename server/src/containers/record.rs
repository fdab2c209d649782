//! A container's persisted record and the pure rules that build it: command line, environment, names, ids,
//! signals.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::CreateSpec;
use super::Privileges;
use crate::cgroups::Limits;
use crate::image::manifest::RunConfig;
use crate::network::{PortConfig, driver};
pub use crate::runtime::bundle::IdMap;
use crate::runtime::bundle::{ExitInfo, MountSpec, NamespaceJoin};

pub const RECORD_FILE: &str = "container.json";
/// Written (durably) before a removal starts: a server that finds it finishes the removal.
pub const TOMBSTONE_FILE: &str = "removing";
/// A container directory being deleted is first renamed to this prefix + its id (atomic), so no later start
/// takes a half-deleted directory for a container.
pub const DELETING_PREFIX: &str = ".deleting-";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub config: Config,
    pub state: State,
}

/// What a container was created with (after image defaults and server defaults were applied).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    pub id: String,
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    pub image_id: String,
    /// The image's layer chain ids, bottom first: the snapshots the rootfs stacks.
    pub chain_ids: Vec<String>,
    /// The command line run (entrypoint + command).
    pub args: Vec<String>,
    /// The overrides as given, for Inspect.
    pub entrypoint: Option<Vec<String>>,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub hostname: String,
    pub tty: bool,
    pub stdin: bool,
    pub limits: Limits,
    pub network: Network,
    /// Address on the bridge network (bridge mode), given at create and kept until removal.
    #[serde(default)]
    pub address: Option<std::net::Ipv4Addr>,
    /// Ports to publish (bridge mode).
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    pub mounts: Vec<MountConfig>,
    pub auto_remove: bool,
    pub labels: Vec<(String, String)>,
    pub stop_signal: String,
    /// Capabilities, privileged mode, read-only root, user namespace.
    #[serde(default)]
    pub privileges: Privileges,
    /// With a user namespace: the host ids its container ids 0-65535 map onto, taken at create and given
    /// back with the container's record at removal.
    #[serde(default)]
    pub id_map: Option<IdMap>,
    pub created_unix_nanos: i64,
    /// --security-opt.
    #[serde(default)]
    pub security: Security,
    /// The pod-level settings below are set only for a pod's holder and its containers (the CRI).
    #[serde(default, flatten)]
    pub pod: PodSettings,
}

/// `--security-opt`: the seccomp profile and no_new_privs of the container's processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    pub seccomp: Seccomp,
    pub no_new_privileges: bool,
}

/// Which seccomp filter container processes get.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seccomp {
    /// Docker's default profile, for the container's capabilities.
    #[default]
    Default,
    /// None.
    Unconfined,
    /// A profile in docker's JSON format (the text).
    Profile(String),
}

/// The largest seccomp profile accepted (docker's default is about 10 KiB).
pub const MAX_SECCOMP_PROFILE: usize = 1 << 20;

impl Security {
    pub fn validate(&self) -> Result<(), String> {
        if let Seccomp::Profile(json) = &self.seccomp {
            if json.len() > MAX_SECCOMP_PROFILE {
                return Err(format!(
                    "security.seccomp_profile is {} bytes; the limit is {MAX_SECCOMP_PROFILE}",
                    json.len()
                ));
            }
            crate::runtime::seccomp::check(json)?;
        }
        Ok(())
    }

    /// The filters for a container with `capabilities` (none when unconfined).
    pub fn seccomp_filters(&self, capabilities: u64) -> Result<Vec<crate::runtime::seccomp::Program>, String> {
        use crate::runtime::seccomp::{DEFAULT_PROFILE, Target, compile};
        match &self.seccomp {
            Seccomp::Unconfined => Ok(Vec::new()),
            Seccomp::Default => compile(DEFAULT_PROFILE, &Target::running(capabilities)),
            Seccomp::Profile(json) => compile(json, &Target::running(capabilities)),
        }
    }
}

/// What makes a container part of a pod: the sandbox's namespaces it joins, the pod's cgroup, its /etc files
/// and the kubelet's log, or being the sandbox's holder itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodSettings {
    /// The pod (sandbox) id, empty for a plain container.
    #[serde(default)]
    pub pod_id: String,
    /// This is the pod's namespace holder (no image, no command).
    #[serde(default)]
    pub holder: bool,
    /// Namespaces joined instead of made.
    #[serde(default)]
    pub join_namespaces: Vec<NamespaceJoin>,
    /// The cgroup directory (one path component) the container's cgroup is made in instead of the server's.
    #[serde(default)]
    pub cgroup_parent: Option<String>,
    /// A directory holding `hosts`, `hostname` and `resolv.conf` to bind over /etc (the pod's) instead of the
    /// container's own.
    #[serde(default)]
    pub etc_dir: Option<PathBuf>,
    /// The output also goes to this file in the CRI log format.
    #[serde(default)]
    pub cri_log: Option<PathBuf>,
    /// The capability set instead of docker's default (bit N = capability N).
    #[serde(default)]
    pub capabilities: Option<u64>,
    /// The name and attempt the API gave the container within its pod (the CRI's metadata).
    #[serde(default)]
    pub member_name: String,
    #[serde(default)]
    pub attempt: u32,
    /// Free-form data kept for the API that made the container (the CRI's annotations).
    #[serde(default)]
    pub annotations: Vec<(String, String)>,
}

/// Network mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// The server's bridge: its own namespace with eth0 on the bridge, NAT and published ports.
    #[default]
    Bridge,
    None,
    Host,
}

impl Network {
    /// The name of the network's driver (see [`crate::network::Networks`]).
    pub fn name(self) -> &'static str {
        match self {
            Network::Bridge => driver::BRIDGE,
            Network::None => driver::NONE,
            Network::Host => driver::HOST,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountConfig {
    /// "bind" or "tmpfs".
    pub kind: String,
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

impl MountConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !self.target.starts_with('/') || self.target == "/" {
            return Err(format!("mount target {:?} must be an absolute path other than /", self.target));
        }
        match self.kind.as_str() {
            "tmpfs" => Ok(()),
            "bind" if !self.source.is_absolute() => {
                Err(format!("bind mount source {:?} must be an absolute host path", self.source))
            }
            "bind" if !self.source.exists() => {
                Err(format!("bind mount source {} does not exist on the host", self.source.display()))
            }
            "bind" => Ok(()),
            other => Err(format!("mount type {other:?} is not supported (bind or tmpfs)")),
        }
    }

    pub fn to_bundle(&self) -> MountSpec {
        MountSpec {
            kind: self.kind.clone(),
            source: self.source.clone(),
            target: self.target.clone(),
            read_only: self.read_only,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerStatus {
    #[default]
    Created,
    Running,
    Stopped,
    /// Its record could not be read (`State::damage` says why): never saved, never torn down implicitly.
    Damaged,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub status: ContainerStatus,
    /// Host pid of the main process while running.
    pub pid: i32,
    pub started_unix_nanos: i64,
    pub exit: Option<ExitRecord>,
    /// Published ports as bound while running (host port 0 replaced by the one picked).
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    /// Why the record is Damaged; empty otherwise (never on disk: a damaged record is not rewritten).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub damage: String,
}

/// How the main process ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitRecord {
    pub code: i32,
    /// Signal name ("SIGKILL"), empty if it exited.
    pub signal: String,
    pub oom_killed: bool,
    pub error: String,
    pub finished_unix_nanos: i64,
}

impl Record {
    /// The record of a container whose container.json could not be read (`why`): listed as Damaged, under
    /// the id its directory is named by, until a forced Remove takes it away.
    pub fn damaged(id: &str, why: String) -> Record {
        Record {
            config: Config { id: id.to_string(), ..Config::default() },
            state: State { status: ContainerStatus::Damaged, damage: why, ..State::default() },
        }
    }
}

impl ExitRecord {
    pub fn from_info(info: &ExitInfo, oom_killed: bool) -> Self {
        let signal = if info.signal > 0 { signal_name(info.signal) } else { String::new() };
        ExitRecord {
            code: info.code,
            signal,
            oom_killed,
            error: info.error.clone(),
            finished_unix_nanos: info.finished_unix_nanos,
        }
    }
}

/// 64 random hex digits.
pub fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Refuses a container id that is not 64 hex digits (as [`new_id`] makes them): records are read from disk,
/// and everything after trusts an id's form (the short id is its first 12 digits).
pub fn check_id(id: &str) -> Result<(), String> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("container id {id:?} is not 64 hex digits"))
    }
}

/// Docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, and never 64 hex digits (that would read as an id).
/// A hostname as RFC 1123 has them: dot-separated labels of letters, digits and `-` (not first or last), each
/// 1-63 characters, at most 64 in all (the kernel's limit). It goes into /etc/hosts and /etc/hostname.
pub fn validate_hostname(name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 64 || !name.split('.').all(label_ok) {
        return Err(format!(
            "invalid hostname {:?}: at most 64 characters, labels of [A-Za-z0-9-] separated by dots (RFC 1123)",
            name.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

pub fn validate_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !first_ok || !rest_ok || name.len() < 2 || name.len() > 128 {
        return Err(format!(
            "invalid container name {name:?}: 2-128 characters, [a-zA-Z0-9][a-zA-Z0-9_.-]* (as docker)"
        ));
    }
    if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("invalid container name {name:?}: it looks like a container id"));
    }
    Ok(())
}

/// Docker's rule for the command line: an --entrypoint override drops the image's Cmd unless a command is
/// given; a command replaces Cmd.
pub fn command_line(spec: &CreateSpec, image: &RunConfig) -> Vec<String> {
    let entrypoint = match &spec.entrypoint {
        Some(e) => e.clone(),
        None => image.entrypoint.clone().unwrap_or_default(),
    };
    let command = if !spec.command.is_empty() {
        spec.command.clone()
    } else if spec.entrypoint.is_some() {
        vec![]
    } else {
        image.cmd.clone().unwrap_or_default()
    };
    entrypoint.into_iter().chain(command).collect()
}

/// The image's environment with the user's on top (same key: the user's wins; order kept).
pub fn merge_env(image: &[String], user: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut out: Vec<String> = image.to_vec();
    for e in user {
        let k = key(e);
        match out.iter_mut().find(|x| key(x) == k) {
            Some(slot) => *slot = e.clone(),
            None => out.push(e.clone()),
        }
    }
    out
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// "SIGTERM", "TERM", "term" or "15" to a signal number.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return if (1..=64).contains(&n) { Ok(n) } else { Err(format!("signal {s:?} is out of range (1-64)")) };
    }
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("unknown signal {s:?}: use a name like SIGTERM or a number like 15"))
}

/// 9 -> "SIGKILL".
pub fn signal_name(n: i32) -> String {
    SIGNALS.iter().find(|(_, v)| *v == n).map_or_else(|| format!("SIG{n}"), |(name, _)| format!("SIG{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> RunConfig {
        RunConfig {
            entrypoint: entrypoint.map(|e| e.iter().map(|s| s.to_string()).collect()),
            cmd: cmd.map(|e| e.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    fn spec(entrypoint: Option<&[&str]>, command: &[&str]) -> CreateSpec {
        CreateSpec {
            entrypoint: entrypoint.map(|e| e.iter().map(|s| s.to_string()).collect()),
            command: command.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn command_line_follows_docker_rules() {
        let img = image(Some(&["/entry"]), Some(&["default"]));
        assert_eq!(command_line(&spec(None, &[]), &img), vec!["/entry", "default"]);
        assert_eq!(command_line(&spec(None, &["x"]), &img), vec!["/entry", "x"]);
        assert_eq!(command_line(&spec(Some(&["/other"]), &[]), &img), vec!["/other"]);
        assert_eq!(command_line(&spec(Some(&[]), &["sh"]), &img), vec!["sh"]);
        assert_eq!(command_line(&spec(None, &[]), &image(None, Some(&["sh"]))), vec!["sh"]);
    }

    #[test]
    fn user_env_overrides_image_env_by_key() {
        let merged = merge_env(&["PATH=/bin".into(), "A=1".into()], &["A=2".into(), "B=3".into()]);
        assert_eq!(merged, vec!["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn signals_parse_by_name_or_number() {
        assert_eq!(parse_signal("SIGTERM"), Ok(15));
        assert_eq!(parse_signal("term"), Ok(15));
        assert_eq!(parse_signal("9"), Ok(9));
        assert!(parse_signal("SIGNOPE").unwrap_err().contains("unknown signal"));
        assert!(parse_signal("0").is_err());
        assert_eq!(signal_name(9), "SIGKILL");
    }

    #[test]
    fn ids_are_64_hex_digits() {
        assert!(check_id(&new_id().unwrap()).is_ok());
        assert!(check_id("abc").unwrap_err().contains("not 64 hex digits"));
        assert!(check_id(&"g".repeat(64)).is_err());
        assert!(check_id(&"é".repeat(32)).is_err());
    }

    #[test]
    fn names_follow_docker_rules() {
        assert!(validate_name("web-1.a_b").is_ok());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name(&"a".repeat(64)).is_err());
    }
}
