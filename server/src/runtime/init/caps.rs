//! Capabilities: container processes keep only the bundle's set (docker's default, see bundle).

use super::error::{InitError, setup_err};

/// Leaves container processes the capabilities `keep`: every other one leaves the bounding set (so no exec
/// can regain it), the effective and permitted sets become `keep`, and the inheritable and ambient sets are
/// empty (an inheritable set would let a file capability hand them back after exec: CVE-2022-29162). A
/// non-root user then loses them all at setuid, as with docker.
pub fn limit(keep: u64) -> Result<(), InitError> {
    let last: u32 =
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40);
    for cap in 0..=last.min(63) {
        if keep & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments.
            if unsafe { nix::libc::prctl(nix::libc::PR_CAPBSET_DROP, cap as nix::libc::c_ulong, 0, 0, 0) } < 0 {
                return Err(setup_err("drop a capability from the bounding set")(nix::Error::last()));
            }
        }
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header { version: 0x2008_0522, pid: 0 }; // _LINUX_CAPABILITY_VERSION_3: two 32-bit words
    let (low, high) = (keep as u32, (keep >> 32) as u32);
    let data = [
        Data { effective: low, permitted: low, inheritable: 0 },
        Data { effective: high, permitted: high, inheritable: 0 },
    ];
    // SAFETY: capset on ourselves with a v3 header and its two data words; prctl with integer arguments.
    unsafe {
        if nix::libc::syscall(nix::libc::SYS_capset, &header as *const Header, data.as_ptr()) < 0 {
            return Err(setup_err("set the capabilities")(nix::Error::last()));
        }
        nix::libc::prctl(nix::libc::PR_CAP_AMBIENT, nix::libc::PR_CAP_AMBIENT_CLEAR_ALL as nix::libc::c_ulong, 0, 0, 0);
    }
    Ok(())
}
