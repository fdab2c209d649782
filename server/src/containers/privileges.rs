//! What a container may do beyond docker's defaults, as plain domain data any API fills in (cm.v1's
//! `cap_add`... fields, the CRI's security context): capabilities added and dropped by name, privileged mode,
//! a read-only root filesystem and a user namespace. The capability names and docker's rules for combining
//! them live here; the runtime gets the resulting bit set.

use serde::{Deserialize, Serialize};

/// Capability names by number (linux/capability.h), without the `CAP_` prefix.
pub const CAPABILITY_NAMES: [&str; 41] = [
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

/// Every capability cm knows (bits 0 to 40); the init keeps those the kernel has.
pub const ALL_CAPABILITIES: u64 = (1 << CAPABILITY_NAMES.len()) - 1;

/// Whether the container gets its own user namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserNamespace {
    /// The host's: container root is host root (docker's default).
    #[default]
    Host,
    /// Its own, mapping container ids 0-65535 onto a range of host ids no other container has, taken from
    /// the subordinate ids (/etc/subuid, /etc/subgid) of the server's id user.
    Auto,
}

/// The privilege settings of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Privileges {
    /// Capabilities added to the default set: names with or without `CAP_`, any case, or `ALL`.
    pub cap_add: Vec<String>,
    /// Capabilities removed from it (`ALL` removes every one; then only `cap_add` is kept).
    pub cap_drop: Vec<String>,
    /// Every capability, every host device, writable /sys and /proc/sys, no masked paths (and no seccomp).
    pub privileged: bool,
    /// Mount the container's root filesystem read-only (its /dev, /proc, /sys, mounts stay as they are).
    pub read_only_rootfs: bool,
    pub user_namespace: UserNamespace,
}

/// The number of capability `name` (`NET_ADMIN`, `cap_net_admin`, ...), or an error naming it.
pub fn capability(name: &str) -> Result<u32, String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITY_NAMES
        .iter()
        .position(|c| *c == bare)
        .map(|n| n as u32)
        .ok_or_else(|| format!("unknown capability {name:?} (names like NET_ADMIN or CAP_NET_ADMIN, or ALL)"))
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The bits of `names` (ALL excluded), refusing an unknown name.
fn bits(names: &[String]) -> Result<u64, String> {
    names.iter().filter(|n| !is_all(n)).try_fold(0u64, |set, name| Ok(set | 1 << capability(name)?))
}

impl Privileges {
    /// Refuses unknown capability names and combinations that cannot work, naming what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        bits(&self.cap_add).map_err(|e| format!("cap_add: {e}"))?;
        bits(&self.cap_drop).map_err(|e| format!("cap_drop: {e}"))?;
        if self.privileged && self.user_namespace == UserNamespace::Auto {
            // As docker: a privileged container is the host's root; a user namespace would take that away.
            return Err("a privileged container cannot have its own user namespace (--userns auto)".into());
        }
        Ok(())
    }

    /// The capability set of the container's processes from the server's default `base`, by docker's rules:
    /// privileged gets all; ALL in cap_add gives all but cap_drop; ALL in cap_drop keeps only cap_add;
    /// otherwise base minus cap_drop plus cap_add. Unknown names are refused (see [`Self::validate`]).
    pub fn capabilities(&self, base: u64) -> Result<u64, String> {
        let (add, drop) = (bits(&self.cap_add)?, bits(&self.cap_drop)?);
        Ok(if self.privileged {
            ALL_CAPABILITIES
        } else if self.cap_add.iter().any(|n| is_all(n)) {
            ALL_CAPABILITIES & !drop
        } else if self.cap_drop.iter().any(|n| is_all(n)) {
            add
        } else {
            (base & !drop) | add
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bundle::DEFAULT_CAPABILITIES;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn caps(add: &[&str], drop: &[&str]) -> Result<u64, String> {
        Privileges { cap_add: names(add), cap_drop: names(drop), ..Default::default() }
            .capabilities(DEFAULT_CAPABILITIES)
    }

    #[test]
    fn capability_names_are_docker_s() {
        assert_eq!(capability("CHOWN"), Ok(0));
        assert_eq!(capability("NET_ADMIN"), Ok(12));
        assert_eq!(capability("cap_net_admin"), Ok(12));
        assert_eq!(capability("Sys_Admin"), Ok(21));
        assert_eq!(capability("CHECKPOINT_RESTORE"), Ok(40));
        for bad in ["NET_ADMINS", "", "CAP_", "ALL", "12", "net admin"] {
            let e = capability(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        // The default set is the fourteen docker names.
        let default: Vec<&str> =
            (0..64).filter(|b| DEFAULT_CAPABILITIES & (1 << b) != 0).map(|b| CAPABILITY_NAMES[b]).collect();
        assert_eq!(default.len(), 14);
        assert!(default.contains(&"NET_RAW") && default.contains(&"SETFCAP") && !default.contains(&"NET_ADMIN"));
    }

    #[test]
    fn add_and_drop_follow_docker_s_rules() {
        assert_eq!(caps(&[], &[]), Ok(DEFAULT_CAPABILITIES));
        assert_eq!(caps(&["NET_ADMIN"], &[]), Ok(DEFAULT_CAPABILITIES | 1 << 12));
        assert_eq!(caps(&[], &["CHOWN"]), Ok(DEFAULT_CAPABILITIES & !1));
        assert_eq!(caps(&[], &["ALL"]), Ok(0));
        assert_eq!(caps(&["NET_RAW", "cap_kill"], &["all"]), Ok(1 << 13 | 1 << 5));
        assert_eq!(caps(&["ALL"], &[]), Ok(ALL_CAPABILITIES));
        assert_eq!(caps(&["ALL"], &["SYS_ADMIN"]), Ok(ALL_CAPABILITIES & !(1 << 21)));
        // Dropped then added: kept, as docker does.
        assert_eq!(caps(&["CHOWN"], &["CHOWN"]), Ok(DEFAULT_CAPABILITIES));
        let privileged = Privileges { privileged: true, cap_drop: names(&["ALL"]), ..Default::default() };
        assert_eq!(privileged.capabilities(DEFAULT_CAPABILITIES), Ok(ALL_CAPABILITIES));
    }

    #[test]
    fn bad_names_and_combinations_are_refused_naming_them() {
        let p = Privileges { cap_add: names(&["NET_ADMIN", "FLY"]), ..Default::default() };
        assert_eq!(
            p.validate().unwrap_err(),
            "cap_add: unknown capability \"FLY\" (names like NET_ADMIN or CAP_NET_ADMIN, or ALL)"
        );
        let p = Privileges { cap_drop: names(&["CAP_NOPE"]), ..Default::default() };
        assert!(p.validate().unwrap_err().starts_with("cap_drop: unknown capability \"CAP_NOPE\""));
        let p = Privileges { privileged: true, user_namespace: UserNamespace::Auto, ..Default::default() };
        assert!(p.validate().unwrap_err().contains("privileged"));
        assert!(Privileges { cap_add: names(&["all"]), ..Default::default() }.validate().is_ok());
    }
}
