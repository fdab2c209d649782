//! The device allow-list on cgroup v2: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE, attached to the
//! container's cgroup, that the kernel runs at every open and mknod of a device node. It allows what the v1
//! devices cgroup allows ([`ALLOWED_DEVICES`], docker's defaults) and refuses everything else with EPERM.
//!
//! The program is assembled here from the rules (a handful of instruction kinds; no compiler, no object file):
//!
//! ```text
//!     r2 = ctx->access_type & 0xffff      device type: 1 block, 2 char
//!     r3 = ctx->access_type >> 16         access: 1 mknod, 2 read, 4 write
//!     r4 = ctx->major;  r5 = ctx->minor
//!   per rule:
//!     if r2 != TYPE goto next             (a rule for both types skips this)
//!     r1 = r3; r1 &= ~ACCESS
//!     if r1 != 0 goto next                the access asked for must be within the rule's
//!     if r4 != MAJOR goto next            (skipped for *)
//!     if r5 != MINOR goto next            (skipped for *)
//!     r0 = 1; exit                        allowed
//!   next:
//!   ...
//!     r0 = 0; exit                        no rule matched: EPERM
//! ```

use std::io;

use super::v1::ALLOWED_DEVICES;

/// One eBPF instruction (struct bpf_insn): opcode, destination and source registers (4 bits each), offset,
/// immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    /// dst in the low 4 bits, src in the high 4.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes (linux/bpf_common.h, linux/bpf.h): class | op | source.
/// r_dst = *(u32 *)(r_src + off)
pub const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
/// r_dst &= imm (32-bit: the upper half is cleared)
pub const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
/// r_dst >>= imm (32-bit)
pub const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
/// r_dst = r_src (32-bit)
pub const MOV32_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
/// r_dst = imm (32-bit)
pub const MOV32_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
/// if r_dst != imm: pc += off (32-bit compare)
pub const JNE32_K: u8 = 0x56; // BPF_JMP32 | BPF_JNE | BPF_K
/// return r0
pub const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// struct bpf_cgroup_dev_ctx: u32 access_type, major, minor.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;
/// BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR.
pub const DEV_BLOCK: u32 = 1;
pub const DEV_CHAR: u32 = 2;
/// BPF_DEVCG_ACC_MKNOD, _READ, _WRITE.
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;

/// One rule in the v1 devices cgroup's syntax ("c 1:3 rwm", "b *:* m", "a"): type (None: both), major and
/// minor (None: any), access bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub kind: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u32,
}

impl Rule {
    pub fn parse(text: &str) -> io::Result<Rule> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("device rule {text:?}: {why}"));
        let mut parts = text.split_whitespace();
        let kind = match parts.next() {
            Some("a") => return Ok(Rule { kind: None, major: None, minor: None, access: 7 }),
            Some("b") => Some(DEV_BLOCK),
            Some("c") => Some(DEV_CHAR),
            _ => return Err(bad("the type must be a, b or c")),
        };
        let (major, minor) = parts.next().and_then(|n| n.split_once(':')).ok_or_else(|| bad("no MAJOR:MINOR"))?;
        let number = |n: &str| match n {
            "*" => Ok(None),
            n => n.parse::<u32>().map(Some).map_err(|_| bad("a device number must be * or an integer")),
        };
        let mut access = 0;
        for c in parts.next().ok_or_else(|| bad("no access (r, w, m)"))?.chars() {
            access |= match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => return Err(bad("access is made of r, w and m")),
            };
        }
        if parts.next().is_some() {
            return Err(bad("too many fields"));
        }
        Ok(Rule { kind, major: number(major)?, minor: number(minor)?, access })
    }
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | (dst & 0x0f), off, imm }
}

/// The program allowing exactly `rules` (an allow-list: everything else is refused).
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, CTX_ACCESS_TYPE, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, CTX_ACCESS_TYPE, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, CTX_MAJOR, 0),
        insn(LDX_W, 5, 1, CTX_MINOR, 0),
    ];
    for rule in rules {
        // The rule's tests, each jumping to the next rule when it fails: placeholders, patched below.
        let mut block = Vec::new();
        if let Some(kind) = rule.kind {
            block.push(insn(JNE32_K, 2, 0, 0, kind as i32));
        }
        block.push(insn(MOV32_X, 1, 3, 0, 0));
        block.push(insn(AND32_K, 1, 0, 0, !rule.access as i32));
        block.push(insn(JNE32_K, 1, 0, 0, 0));
        if let Some(major) = rule.major {
            block.push(insn(JNE32_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor {
            block.push(insn(JNE32_K, 5, 0, 0, minor as i32));
        }
        block.push(insn(MOV32_K, 0, 0, 0, 1));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE32_K {
                // Relative to the next instruction: past the rest of this block.
                ins.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.push(insn(MOV32_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// The program for docker's default rules ([`ALLOWED_DEVICES`]).
pub fn default_program() -> Vec<Insn> {
    let rules: Vec<Rule> =
        ALLOWED_DEVICES.iter().map(|r| Rule::parse(r).expect("ALLOWED_DEVICES are valid rules")).collect();
    program(&rules)
}

/// Loads `program` as a BPF_PROG_TYPE_CGROUP_DEVICE program and attaches it to the cgroup directory `dir`
/// (BPF_F_ALLOW_MULTI, so programs of the parents still apply too). The attachment lives as long as the cgroup:
/// no file descriptor has to be kept.
pub fn attach(dir: &std::path::Path, program: &[Insn]) -> io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    let cgroup = std::fs::File::open(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("opening cgroup {}: {e}", dir.display())))?;
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..ProgLoadAttr::default()
    };
    attr.prog_name[..7].copy_from_slice(b"cm_devs");
    // SAFETY: bpf(2) with an attribute block that outlives the call; the kernel reads `program` and writes at
    // most log_size bytes to `log`.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &attr as *const ProgLoadAttr as *const u8, size_of::<ProgLoadAttr>()) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let verifier = String::from_utf8_lossy(&log[..end]);
        let hint = match e.raw_os_error() {
            Some(nix::libc::EPERM) => " (loading BPF programs needs CAP_SYS_ADMIN or CAP_BPF)",
            _ => "",
        };
        return Err(io::Error::new(
            e.kind(),
            format!(
                "loading the device filter (BPF_PROG_TYPE_CGROUP_DEVICE): {e}{hint}; verifier: {}",
                verifier.trim()
            ),
        ));
    }
    // SAFETY: bpf returned a new file descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: as above.
    let rc = unsafe { bpf(BPF_PROG_ATTACH, &attr as *const ProgAttachAttr as *const u8, size_of::<ProgAttachAttr>()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("attaching the device filter to cgroup {}: {e}", dir.display())));
    }
    Ok(())
}

const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_ATTACH: i64 = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The BPF_PROG_LOAD part of union bpf_attr (linux/bpf.h), up to expected_attach_type.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The BPF_PROG_ATTACH part of union bpf_attr.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// bpf(2).
unsafe fn bpf(cmd: i64, attr: *const u8, size: usize) -> i64 {
    // SAFETY: the caller passes a valid attribute block of `size` bytes.
    unsafe { nix::libc::syscall(nix::libc::SYS_bpf, cmd, attr, size) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `program` on one device access, executing the instruction kinds [`program`] emits (and refusing
    /// any other, any jump out of the program and a fall off its end) as the kernel would.
    fn run(program: &[Insn], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = program.get(pc).unwrap_or_else(|| panic!("fell off the program at {pc}"));
            let (dst, src) = ((i.regs & 0x0f) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => {
                    assert_eq!(src, 1, "loads are from the context");
                    r[dst] = ctx[(i.off / 4) as usize] as u64;
                }
                AND32_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                RSH32_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                MOV32_X => r[dst] = r[src] as u32 as u64,
                MOV32_K => r[dst] = i.imm as u32 as u64,
                JNE32_K => {
                    if r[dst] as u32 != i.imm as u32 {
                        pc += i.off as usize;
                        assert!(pc < program.len(), "a jump out of the program");
                    }
                }
                EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn allows(kind: u32, access: u32, major: u32, minor: u32) -> bool {
        run(&default_program(), kind, access, major, minor) == 1
    }

    #[test]
    fn rules_parse_as_the_v1_devices_cgroup_writes_them() {
        assert_eq!(
            Rule::parse("c 1:3 rwm").unwrap(),
            Rule { kind: Some(DEV_CHAR), major: Some(1), minor: Some(3), access: 7 }
        );
        assert_eq!(
            Rule::parse("b *:* m").unwrap(),
            Rule { kind: Some(DEV_BLOCK), major: None, minor: None, access: 1 }
        );
        assert_eq!(Rule::parse("c 136:* rw").unwrap().minor, None);
        assert_eq!(Rule::parse("a").unwrap(), Rule { kind: None, major: None, minor: None, access: 7 });
        for bad in ["", "x 1:3 rwm", "c 1 rwm", "c 1:3", "c 1:3 rwx", "c a:3 r", "c 1:3 r extra"] {
            let err = Rule::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn the_default_program_allows_dockers_devices_and_mknod_of_anything() {
        let rw = ACC_READ | ACC_WRITE;
        for (major, minor) in
            [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, 0), (136, 7), (10, 200)]
        {
            assert!(allows(DEV_CHAR, rw, major, minor), "c {major}:{minor} rw");
            assert!(allows(DEV_CHAR, ACC_READ, major, minor), "c {major}:{minor} r");
            assert!(allows(DEV_CHAR, ACC_MKNOD, major, minor), "c {major}:{minor} m");
        }
        // Any node may be made, of either type.
        assert!(allows(DEV_BLOCK, ACC_MKNOD, 8, 0));
        assert!(allows(DEV_CHAR, ACC_MKNOD, 4, 1));
    }

    #[test]
    fn the_default_program_refuses_disks_and_other_devices() {
        for access in [ACC_READ, ACC_WRITE, ACC_READ | ACC_WRITE] {
            assert!(!allows(DEV_BLOCK, access, 8, 0), "sda");
            assert!(!allows(DEV_BLOCK, access, 254, 0), "vda");
            assert!(!allows(DEV_BLOCK, access, 1, 3), "a block device with /dev/null's numbers");
            assert!(!allows(DEV_CHAR, access, 1, 1), "/dev/mem");
            assert!(!allows(DEV_CHAR, access, 4, 1), "tty1");
            assert!(!allows(DEV_CHAR, access, 10, 232), "/dev/kvm");
        }
        // mknod together with a read is more than "m" allows.
        assert!(!allows(DEV_BLOCK, ACC_MKNOD | ACC_READ, 8, 0));
    }

    #[test]
    fn a_rule_matches_only_its_type_numbers_and_access() {
        let p = program(&[Rule::parse("c 7:* r").unwrap()]);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 7, 42), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 7, 42), 0);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 8, 42), 0);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 7, 42), 0);
        let all = program(&[Rule::parse("a").unwrap()]);
        assert_eq!(run(&all, DEV_BLOCK, ACC_READ | ACC_WRITE | ACC_MKNOD, 8, 0), 1);
        assert_eq!(run(&program(&[]), DEV_CHAR, ACC_READ, 1, 3), 0, "no rules: nothing allowed");
    }

    #[test]
    fn instructions_are_encoded_as_struct_bpf_insn() {
        assert_eq!(size_of::<Insn>(), 8);
        let p = program(&[Rule::parse("c 1:3 r").unwrap()]);
        // The prologue (6), then: jne32 r2, 2, +7; mov32 r1, r3; and32 r1, ~2; jne32 r1, 0, +4; jne32 r4, 1, +3;
        // jne32 r5, 3, +2; mov32 r0, 1; exit; then mov32 r0, 0; exit (the jumps' target).
        assert_eq!(p[0], Insn { code: 0x61, regs: 0x12, off: 0, imm: 0 });
        assert_eq!(p[3], Insn { code: 0x74, regs: 0x03, off: 0, imm: 16 });
        assert_eq!(p[5], Insn { code: 0x61, regs: 0x15, off: 8, imm: 0 });
        assert_eq!(p[6], Insn { code: 0x56, regs: 0x02, off: 7, imm: 2 });
        assert_eq!(p[7], Insn { code: 0xbc, regs: 0x31, off: 0, imm: 0 });
        assert_eq!(p[8], Insn { code: 0x54, regs: 0x01, off: 0, imm: !2 });
        assert_eq!(p[9], Insn { code: 0x56, regs: 0x01, off: 4, imm: 0 });
        assert_eq!(p[13], Insn { code: 0x95, regs: 0, off: 0, imm: 0 });
        assert_eq!(p.len(), 16);
    }
}
