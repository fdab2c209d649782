//! The compiler against a small classic-BPF interpreter: what each syscall gets from the filters as the
//! kernel combines them (the strictest action wins; of equal ones, the most recently installed filter's).

use super::*;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

/// Runs one program on seccomp_data {nr, arch, ip, args}.
fn run(program: &Program, nr: i64, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = Vec::new();
    data.extend((nr as i32).to_ne_bytes());
    data.extend(arch.to_ne_bytes());
    data.extend(0u64.to_ne_bytes());
    for a in args {
        data.extend(a.to_ne_bytes());
    }
    let word = |off: u32| u32::from_ne_bytes(data[off as usize..off as usize + 4].try_into().unwrap());
    let (mut acc, mut pc) = (0u32, 0usize);
    loop {
        let w = program[pc];
        let (code, jt, jf, k) = ((w >> 48) as u16, (w >> 40) as u8 as usize, (w >> 32) as u8 as usize, w as u32);
        pc += 1;
        match code {
            0x20 => acc = word(k),                            // ld w abs
            0x54 => acc &= k,                                 // alu and k
            0x05 => pc += k as usize,                         // ja
            0x15 => pc += if acc == k { jt } else { jf },     // jeq k
            0x25 => pc += if acc > k { jt } else { jf },      // jgt k
            0x35 => pc += if acc >= k { jt } else { jf },     // jge k
            0x45 => pc += if acc & k != 0 { jt } else { jf }, // jset k
            0x06 => return k,                                 // ret k
            other => panic!("instruction {other:#x} not interpreted"),
        }
    }
}

/// What the kernel returns with all `programs` installed.
fn verdict(programs: &[Program], nr: &str, args: [u64; 6]) -> u32 {
    let nr = syscall_number(nr).unwrap_or_else(|| panic!("no syscall {nr}"));
    verdict_nr(programs, nr, AUDIT_ARCH_X86_64, args)
}

fn verdict_nr(programs: &[Program], nr: i64, arch: u32, args: [u64; 6]) -> u32 {
    let precedence = |r: u32| match r & 0xffff_0000 {
        RET_KILL_PROCESS => 0,
        0 => 1,           // kill thread
        0x0003_0000 => 2, // trap
        RET_ERRNO => 3,
        0x7ff0_0000 => 4, // trace
        0x7ffc_0000 => 5, // log
        _ => 6,           // allow
    };
    let mut result = RET_ALLOW;
    // The kernel walks from the newest filter and keeps the first of the strictest.
    for p in programs.iter().rev() {
        let r = run(p, nr, arch, args);
        if precedence(r) < precedence(result) {
            result = r;
        }
    }
    result
}

fn default_for(capabilities: u64) -> Vec<Program> {
    compile(DEFAULT_PROFILE, &Target { capabilities, kernel: (6, 1) }).unwrap()
}

const EPERM: u32 = RET_ERRNO | 1;
const ENOSYS: u32 = RET_ERRNO | 38;
const NONE: [u64; 6] = [0; 6];

#[test]
fn the_default_profile_refuses_what_docker_refuses_with_eperm() {
    let p = default_for(crate::runtime::bundle::DEFAULT_CAPABILITIES);
    for refused in [
        "keyctl",
        "add_key",
        "request_key",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "unshare",
        "mount",
        "setns",
        "bpf",
        "kexec_load",
        "init_module",
    ]
    .into_iter()
    .filter(|n| syscall_number(n).is_some())
    {
        assert_eq!(verdict(&p, refused, NONE), EPERM, "{refused}");
    }
    for allowed in ["read", "write", "execve", "openat", "exit_group", "capset", "setresuid", "seccomp", "chroot"] {
        assert_eq!(verdict(&p, allowed, NONE), RET_ALLOW, "{allowed}");
    }
    // ptrace needs kernel 4.8, which this target has.
    assert_eq!(verdict(&p, "ptrace", NONE), RET_ALLOW);
    let old = compile(DEFAULT_PROFILE, &Target { capabilities: 0, kernel: (4, 4) }).unwrap();
    assert_eq!(verdict(&old, "ptrace", NONE), EPERM);
}

#[test]
fn argument_rules_and_other_actions_of_the_default_profile() {
    let p = default_for(crate::runtime::bundle::DEFAULT_CAPABILITIES);
    assert_eq!(p.len(), 2, "the clone3 ENOSYS filter, then the allow-list");
    let (newuser, newns) = (nix::libc::CLONE_NEWUSER as u64, nix::libc::CLONE_NEWNS as u64);
    let sigchld = nix::libc::SIGCHLD as u64;
    assert_eq!(verdict(&p, "clone", [sigchld, 0, 0, 0, 0, 0]), RET_ALLOW);
    assert_eq!(verdict(&p, "clone", [sigchld | newuser, 0, 0, 0, 0, 0]), EPERM);
    assert_eq!(verdict(&p, "clone", [newns, 0, 0, 0, 0, 0]), EPERM);
    // The C libraries fall back to clone on ENOSYS.
    assert_eq!(verdict(&p, "clone3", NONE), ENOSYS);
    assert_eq!(verdict(&p, "personality", [0, 0, 0, 0, 0, 0]), RET_ALLOW);
    assert_eq!(verdict(&p, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]), RET_ALLOW);
    assert_eq!(verdict(&p, "personality", [0x0040_0000, 0, 0, 0, 0, 0]), EPERM);
    assert_eq!(verdict(&p, "socket", [2, 1, 0, 0, 0, 0]), RET_ALLOW);
    assert_eq!(verdict(&p, "socket", [40, 1, 0, 0, 0, 0]), EPERM, "AF_VSOCK");
    assert_eq!(verdict(&p, "arch_prctl", NONE), RET_ALLOW);
    // Another architecture's calls (i386) end the process; x32 numbers are refused.
    assert_eq!(verdict_nr(&p, 0, 0x4000_0003, NONE), RET_KILL_PROCESS);
    assert_eq!(verdict_nr(&p, 0x4000_0000, AUDIT_ARCH_X86_64, NONE), EPERM);
}

#[test]
fn capability_groups_follow_the_container_capabilities() {
    let sys_admin = capability_bit("CAP_SYS_ADMIN").unwrap();
    let p = default_for(crate::runtime::bundle::DEFAULT_CAPABILITIES | sys_admin);
    assert_eq!(p.len(), 1, "no clone3 filter with CAP_SYS_ADMIN");
    for allowed in ["unshare", "mount", "setns", "clone3", "perf_event_open", "bpf"] {
        assert_eq!(verdict(&p, allowed, NONE), RET_ALLOW, "{allowed}");
    }
    assert_eq!(verdict(&p, "clone", [nix::libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]), RET_ALLOW);
    assert_eq!(verdict(&p, "keyctl", NONE), EPERM, "keyctl is refused whatever the capabilities");
    let p = default_for(crate::runtime::bundle::DEFAULT_CAPABILITIES & !capability_bit("SYS_CHROOT").unwrap());
    assert_eq!(verdict(&p, "chroot", NONE), EPERM);
    let ptrace = default_for(capability_bit("sys_ptrace").unwrap());
    assert_eq!(verdict(&ptrace, "kcmp", NONE), RET_ALLOW);
}

#[test]
fn a_custom_profile_denying_mkdir() {
    let json = r#"{"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                     {"name": "rmdir", "action": "SCMP_ACT_KILL_PROCESS"}]}"#;
    let p = compile(json, &Target { capabilities: 0, kernel: (6, 1) }).unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(verdict(&p, "mkdir", NONE), RET_ERRNO | 13);
    assert_eq!(verdict(&p, "mkdirat", NONE), RET_ERRNO | 13);
    assert_eq!(verdict(&p, "rmdir", NONE), RET_KILL_PROCESS);
    assert_eq!(verdict(&p, "keyctl", NONE), RET_ALLOW);
    // Allow everything: no filter at all.
    assert!(compile(r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#, &Target::running(0)).unwrap().is_empty());
    // A group with the default's own action changes nothing; unknown names are skipped, as libseccomp does.
    let json = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read", "no_such_call"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["write"], "action": "SCMP_ACT_ERRNO"}]}"#;
    let p = compile(json, &Target::running(0)).unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(verdict(&p, "read", NONE), RET_ALLOW);
    assert_eq!(verdict(&p, "write", NONE), EPERM);
}

#[test]
fn bad_profiles_are_refused_saying_what_is_wrong() {
    let err = |json: &str| check(json).unwrap_err();
    assert!(err("{").contains("not docker's profile JSON"), "{}", err("{"));
    assert!(err(r#"{"syscalls": []}"#).contains("defaultAction"));
    assert!(err(r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#).contains(r#"action "SCMP_ACT_NOTIFY" is not supported"#));
    let op = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}]}]}"#;
    assert!(err(op).contains(r#"operator "SCMP_CMP_ALMOST""#), "{}", err(op));
    let index = op.replace("SCMP_CMP_ALMOST", "SCMP_CMP_EQ").replace(r#""index": 0"#, r#""index": 6"#);
    assert!(err(&index).contains("argument index 6 is out of range"), "{}", err(&index));
    let cap = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
        "includes": {"caps": ["CAP_FLY"]}}]}"#;
    assert!(err(cap).contains(r#"unknown capability "CAP_FLY""#), "{}", err(cap));
    assert!(check(DEFAULT_PROFILE).is_ok());
}

#[test]
fn the_syscall_table_and_kernel_versions() {
    assert!(x86_64::SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0), "sorted for binary search");
    assert_eq!(syscall_number("read"), Some(0));
    assert_eq!(syscall_number("keyctl"), Some(250));
    assert_eq!(syscall_number("io_uring_setup"), Some(425));
    assert_eq!(syscall_number("chown32"), None);
    assert_eq!(parse_kernel("6.18.44-fc-v1045"), Some((6, 18)));
    assert_eq!(parse_kernel("4.8"), Some((4, 8)));
    assert_eq!(parse_kernel("x"), None);
    let profile: Profile = serde_json::from_str(DEFAULT_PROFILE).unwrap();
    let known = profile.syscalls[0].names.iter().filter(|n| syscall_number(n).is_some()).count();
    assert!(known > 280, "{known} of the allow-list resolve");
}
