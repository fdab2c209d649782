//! Capabilities: container processes keep only the bundle's set (docker's default, see bundle, changed by
//! --cap-add, --cap-drop and --privileged), of those the server itself holds.

use super::error::{InitError, setup_err};

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// _LINUX_CAPABILITY_VERSION_3: two 32-bit words.
const VERSION_3: u32 = 0x2008_0522;

/// The capabilities this process holds (its permitted set).
fn permitted() -> Result<u64, InitError> {
    let mut header = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget on ourselves with a v3 header and room for its two data words.
    if unsafe { nix::libc::syscall(nix::libc::SYS_capget, &mut header as *mut Header, data.as_mut_ptr()) } < 0 {
        return Err(setup_err("read the capabilities")(nix::Error::last()));
    }
    Ok(u64::from(data[0].permitted) | u64::from(data[1].permitted) << 32)
}

/// The first half, before the process changes its ids: every capability not in `keep` leaves the bounding
/// set, so no exec can regain it. The effective set is untouched until [`set`] (setgroups and setuid still
/// need CAP_SETGID and CAP_SETUID). Returns the set to give [`set`]: `keep` cut to what the kernel knows and
/// this process holds.
pub fn limit_bounding(keep: u64) -> Result<u64, InitError> {
    let last: u32 =
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40);
    let keep = keep & (u64::MAX >> (63 - last.min(63))) & permitted()?;
    for cap in 0..=last.min(63) {
        if keep & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments.
            if unsafe { nix::libc::prctl(nix::libc::PR_CAPBSET_DROP, cap as nix::libc::c_ulong, 0, 0, 0) } < 0 {
                return Err(setup_err("drop a capability from the bounding set")(nix::Error::last()));
            }
        }
    }
    Ok(keep)
}

/// The second half, after the process became its user: the effective and permitted sets become `keep` for
/// root (a non-root user lost them all at setuid, as with docker), and the inheritable and ambient sets are
/// empty (an inheritable set would let a file capability hand them back after exec: CVE-2022-29162).
pub fn set(keep: u64, root: bool) -> Result<(), InitError> {
    let keep = if root { keep } else { 0 };
    let header = Header { version: VERSION_3, pid: 0 };
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
