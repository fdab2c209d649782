//! seccomp: profiles in docker's JSON format (its default one is [`DEFAULT_PROFILE`], an allow-list that
//! answers EPERM to everything else), compiled by the server into classic BPF with the seccompiler crate for
//! the container's capability set, and installed by the init and exec'd processes just before they exec.
//!
//! A profile becomes one filter per action: the first allows every syscall any rule names (under the rule's
//! argument conditions) and gives the default action to the rest; each further one gives its action (ENOSYS
//! for clone3 in the default profile, ...) to the syscalls of its rules and allows the rest. The kernel takes
//! the strictest answer of all installed filters, so each syscall gets the action of the rule it matches, or
//! the default. Group conditions (`includes`/`excludes` of `caps`, `arches`, `minKernel`) are decided at
//! compile time. System calls of another architecture (i386 through int 0x80) end the process.

#[cfg(target_arch = "x86_64")]
mod x86_64;

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};
use serde::Deserialize;

/// Docker's default profile (moby's profiles/seccomp/default.json, written out in its format).
pub const DEFAULT_PROFILE: &str = include_str!("default.json");

/// A compiled filter: BPF instructions packed as `code << 48 | jt << 40 | jf << 32 | k`, for the bundle.
pub type Program = Vec<u64>;

/// A profile as docker writes it. Unknown fields (archMap, flags, ...) are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    syscalls: Vec<Group>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    #[serde(default)]
    names: Vec<String>,
    /// The older format's single name.
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Arg>>,
    #[serde(default)]
    includes: Conditions,
    #[serde(default)]
    excludes: Conditions,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conditions {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// What a profile is compiled for: the container's capability set (bit N = capability N) and the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub capabilities: u64,
    /// (major, minor) of the running kernel.
    pub kernel: (u32, u32),
}

impl Target {
    pub fn running(capabilities: u64) -> Target {
        let release =
            nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
        Target { capabilities, kernel: parse_kernel(&release).unwrap_or((0, 0)) }
    }
}

/// "6.18.44-foo" -> (6, 18).
fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next().unwrap_or("0").parse().ok()?))
}

/// Docker's architecture names for this machine (a group's `arches`).
fn native_arches() -> &'static [&'static str] {
    match std::env::consts::ARCH {
        "x86_64" => &["amd64"],
        "aarch64" => &["arm64"],
        "riscv64" => &["riscv64"],
        _ => &[],
    }
}

fn syscall_number(name: &str) -> Option<i64> {
    #[cfg(target_arch = "x86_64")]
    {
        x86_64::SYSCALLS.binary_search_by(|(n, _)| n.cmp(&name)).ok().map(|i| x86_64::SYSCALLS[i].1)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        None
    }
}

const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// "CAP_SYS_ADMIN" (or "SYS_ADMIN", any case) -> its bit.
fn capability_bit(name: &str) -> Option<u64> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITIES.iter().position(|c| *c == bare).map(|i| 1 << i)
}

/// An action as the filter returns it; `errno` is the group's errnoRet (or the default's).
fn action(name: &str, errno: Option<u32>) -> Result<SeccompAction, String> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(errno.unwrap_or(nix::libc::EPERM as u32)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_LOG" => SeccompAction::Log,
        "SCMP_ACT_TRACE" => SeccompAction::Trace(errno.unwrap_or(nix::libc::EPERM as u32)),
        other => return Err(format!("seccomp profile: action {other:?} is not supported")),
    })
}

fn condition(arg: &Arg) -> Result<SeccompCondition, String> {
    let op = match arg.op.as_str() {
        "SCMP_CMP_NE" => SeccompCmpOp::Ne,
        "SCMP_CMP_LT" => SeccompCmpOp::Lt,
        "SCMP_CMP_LE" => SeccompCmpOp::Le,
        "SCMP_CMP_EQ" => SeccompCmpOp::Eq,
        "SCMP_CMP_GE" => SeccompCmpOp::Ge,
        "SCMP_CMP_GT" => SeccompCmpOp::Gt,
        // libseccomp's masked equality: (arg & value) == valueTwo.
        "SCMP_CMP_MASKED_EQ" => SeccompCmpOp::MaskedEq(arg.value),
        other => return Err(format!("seccomp profile: argument operator {other:?} is not supported")),
    };
    if arg.index > 5 {
        return Err(format!("seccomp profile: argument index {} is out of range (0-5)", arg.index));
    }
    let value = if arg.op == "SCMP_CMP_MASKED_EQ" { arg.value_two } else { arg.value };
    SeccompCondition::new(arg.index as u8, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| format!("seccomp profile: argument {}: {e}", arg.index))
}

/// Whether a group applies to this target.
fn applies(group: &Group, target: &Target) -> Result<bool, String> {
    let arches = native_arches();
    let has_cap = |name: &String| {
        capability_bit(name)
            .map(|bit| target.capabilities & bit != 0)
            .ok_or_else(|| format!("seccomp profile: unknown capability {name:?}"))
    };
    let inc = &group.includes;
    for cap in &inc.caps {
        if !has_cap(cap)? {
            return Ok(false);
        }
    }
    if !inc.arches.is_empty() && !inc.arches.iter().any(|a| arches.contains(&a.as_str())) {
        return Ok(false);
    }
    if let Some(min) = &inc.min_kernel {
        let min = parse_kernel(min).ok_or_else(|| format!("seccomp profile: minKernel {min:?} is not a version"))?;
        if target.kernel < min {
            return Ok(false);
        }
    }
    let exc = &group.excludes;
    for cap in &exc.caps {
        if has_cap(cap)? {
            return Ok(false);
        }
    }
    if exc.arches.iter().any(|a| arches.contains(&a.as_str())) {
        return Ok(false);
    }
    if let Some(min) = &exc.min_kernel {
        let min = parse_kernel(min).ok_or_else(|| format!("seccomp profile: minKernel {min:?} is not a version"))?;
        if target.kernel >= min {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The rules of one syscall: `always` (a rule without conditions) or any of `rules`.
#[derive(Default)]
struct Chain {
    always: bool,
    rules: Vec<SeccompRule>,
}

impl Chain {
    fn add(&mut self, rule: Option<SeccompRule>) {
        match rule {
            None => self.always = true,
            Some(r) => self.rules.push(r),
        }
    }

    fn into_rules(self) -> Vec<SeccompRule> {
        // seccompiler: an empty chain matches the syscall unconditionally.
        if self.always { Vec::new() } else { self.rules }
    }
}

/// Checks a profile (the JSON text) without compiling it for a target: what Create refuses.
pub fn check(json: &str) -> Result<(), String> {
    compile(json, &Target { capabilities: u64::MAX, kernel: (u32::MAX, 0) }).map(drop)
}

/// Compiles a profile for `target` into the filters to install, in order (empty: no filter at all).
pub fn compile(json: &str, target: &Target) -> Result<Vec<Program>, String> {
    let profile: Profile =
        serde_json::from_str(json).map_err(|e| format!("seccomp profile: not docker's profile JSON: {e}"))?;
    let default = action(&profile.default_action, profile.default_errno_ret)?;
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| format!("seccomp profiles are not supported on {}", std::env::consts::ARCH))?;
    if cfg!(not(target_arch = "x86_64")) {
        return Err(format!("seccomp profiles are not supported on {} yet", std::env::consts::ARCH));
    }
    // Rules by action, each an ordered map of syscall number -> chain. Actions are kept in first-seen order.
    let mut by_action: Vec<(SeccompAction, BTreeMap<i64, Chain>)> = Vec::new();
    let mut every_rule: BTreeMap<i64, Chain> = BTreeMap::new();
    for group in &profile.syscalls {
        let act = action(&group.action, group.errno_ret)?;
        let rule = match group.args.as_deref() {
            None | Some([]) => None,
            Some(args) => Some(
                SeccompRule::new(args.iter().map(condition).collect::<Result<_, _>>()?)
                    .map_err(|e| format!("seccomp profile: {e}"))?,
            ),
        };
        if !applies(group, target)? || act == default {
            continue;
        }
        let names = group.names.iter().chain(group.name.iter());
        // Names this architecture does not have are skipped, as libseccomp does.
        let numbers: Vec<i64> = names.filter_map(|n| syscall_number(n)).collect();
        let slot = match by_action.iter().position(|(a, _)| *a == act) {
            Some(i) => i,
            None => {
                by_action.push((act, BTreeMap::new()));
                by_action.len() - 1
            }
        };
        for nr in numbers {
            by_action[slot].1.entry(nr).or_default().add(rule.clone());
            every_rule.entry(nr).or_default().add(rule.clone());
        }
    }
    let build = |rules: BTreeMap<i64, Chain>, mismatch: SeccompAction, matched: SeccompAction| {
        let rules = rules.into_iter().map(|(nr, chain)| (nr, chain.into_rules())).collect();
        let filter = SeccompFilter::new(rules, mismatch, matched, arch).map_err(|e| format!("seccomp profile: {e}"))?;
        let program: BpfProgram = filter.try_into().map_err(|e| format!("seccomp profile: {e}"))?;
        Ok::<Program, String>(program.iter().map(pack).collect())
    };
    let mut programs = Vec::new();
    // The filters of the other actions first: the allow-list may not allow seccomp(2) itself.
    for (act, rules) in by_action {
        if act != SeccompAction::Allow {
            programs.push(build(rules, SeccompAction::Allow, act)?);
        }
    }
    if default != SeccompAction::Allow {
        programs.push(build(every_rule, default, SeccompAction::Allow)?);
    }
    Ok(programs)
}

fn pack(i: &seccompiler::sock_filter) -> u64 {
    (i.code as u64) << 48 | (i.jt as u64) << 40 | (i.jf as u64) << 32 | i.k as u64
}

/// Installs the filters on the calling process, in order. Without no_new_privs this needs CAP_SYS_ADMIN.
pub fn install(programs: &[Program]) -> std::io::Result<()> {
    for program in programs {
        let instructions: Vec<nix::libc::sock_filter> = program
            .iter()
            .map(|w| nix::libc::sock_filter {
                code: (w >> 48) as u16,
                jt: (w >> 40) as u8,
                jf: (w >> 32) as u8,
                k: *w as u32,
            })
            .collect();
        let len = u16::try_from(instructions.len()).map_err(|_| std::io::Error::other("seccomp filter too long"))?;
        let prog = nix::libc::sock_fprog { len, filter: instructions.as_ptr() as *mut nix::libc::sock_filter };
        // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) with a valid program that outlives the call.
        let rc = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_seccomp,
                nix::libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const nix::libc::sock_fprog,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
