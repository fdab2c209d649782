//! `user[:group]` resolved against the image's /etc/passwd and /etc/group, parsed as data (never NSS), as
//! runc does: names must exist; numbers need not.

/// Who the container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the groups of /etc/group that list the user.
    pub groups: Vec<u32>,
    /// Home directory (for HOME when the image sets none).
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter(|l| !l.starts_with('#')).filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(PasswdEntry { name: f[0], uid: f[2].parse().ok()?, gid: f[3].parse().ok()?, home: f[5] })
    })
}

fn group_entries(group: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    group.lines().filter(|l| !l.starts_with('#')).filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let members = f[3].split(',').map(str::trim).filter(|m| !m.is_empty()).collect();
        Some(GroupEntry { name: f[0], gid: f[2].parse().ok()?, members })
    })
}

/// Largest /etc/passwd or /etc/group read: a real one is a few KiB, a hostile one may be endless.
pub const MAX_DB_FILE: u64 = 4 << 20;

/// Reads the image's /etc/passwd or /etc/group (`path`) as data: "" when it is missing; an error naming the
/// file when it is not a regular file (a symlink to /dev/zero, a FIFO) or larger than [`MAX_DB_FILE`].
pub fn read_db(path: &str) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, so a FIFO cannot hang the open; its type is checked before anything is read.
    let file = match std::fs::File::options().read(true).custom_flags(nix::libc::O_NONBLOCK).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(format!("cannot open the image's {path}: {e}")),
    };
    let meta = file.metadata().map_err(|e| format!("cannot stat the image's {path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("the image's {path} is not a regular file"));
    }
    let mut data = Vec::new();
    file.take(MAX_DB_FILE + 1).read_to_end(&mut data).map_err(|e| format!("cannot read the image's {path}: {e}"))?;
    if data.len() as u64 > MAX_DB_FILE {
        return Err(format!("the image's {path} is larger than {MAX_DB_FILE} bytes"));
    }
    Ok(String::from_utf8_lossy(&data).into_owned())
}

/// The id that means "no change" to setresuid and setresgid (uint32 -1): a container asking for it would keep
/// running as root, so it is never a container's uid or gid.
pub const NO_ID: u32 = u32::MAX;

/// Refuses a `user[:group]` whose numeric uid or gid is out of range (4294967295 or more), before anything
/// is created. Names are resolved later, in the container.
pub fn check_spec(spec: &str) -> Result<(), String> {
    let (user, group) = spec.split_once(':').unwrap_or((spec, ""));
    for (what, part) in [("uid", user), ("gid", group)] {
        if let Ok(n) = part.parse::<u64>()
            && n >= u64::from(NO_ID)
        {
            return Err(format!("user {spec:?}: {what} {n} is out of range (ids are 0 to {})", NO_ID - 1));
        }
    }
    Ok(())
}

/// Resolves `spec` ("", "name", "uid", "name:group", "uid:gid", ...) with the image's passwd and group
/// file contents (empty strings when the files are missing).
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ResolvedUser, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let numeric = user_part.parse::<u32>().ok();
    let found = passwd_entries(passwd).find(|e| Some(e.uid) == numeric || e.name == user_part);
    let (uid, mut gid, home, name) = match (found, numeric) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_string(), Some(e.name.to_string())),
        (None, Some(uid)) => (uid, 0, "/".to_string(), None),
        (None, None) => {
            return Err(format!("unable to find user {user_part}: no matching entries in the image's /etc/passwd"));
        }
    };
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        let numeric = g.parse::<u32>().ok();
        gid = match group_entries(group).find(|e| Some(e.gid) == numeric || e.name == g) {
            Some(e) => e.gid,
            None => numeric
                .ok_or_else(|| format!("unable to find group {g}: no matching entries in the image's /etc/group"))?,
        };
    }
    let mut groups: Vec<u32> = match &name {
        Some(n) => group_entries(group).filter(|e| e.members.contains(&n.as_str())).map(|e| e.gid).collect(),
        None => vec![],
    };
    groups.retain(|g| *g != gid);
    groups.dedup();
    if uid == NO_ID || gid == NO_ID || groups.contains(&NO_ID) {
        return Err(format!(
            "user {spec:?} resolves to id {NO_ID}, which is out of range (ids are 0 to {})",
            NO_ID - 1
        ));
    }
    Ok(ResolvedUser { uid, gid, groups, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nnobody:x:65534:65534:nobody:/home:/bin/false\n\
                          app:x:1000:1000::/home/app:/bin/sh\nbroken line\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\nnobody:x:65534:\napp:x:1000:\nstaff:x:50:app\n";

    #[test]
    fn empty_means_root_with_roots_home() {
        let u = resolve("", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert_eq!(u.groups, vec![10]);
    }

    #[test]
    fn names_resolve_with_primary_and_supplementary_groups() {
        let u = resolve("app", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.groups, vec![10, 50]);
        assert_eq!(resolve("nobody", PASSWD, GROUP).unwrap().uid, 65534);
    }

    #[test]
    fn numbers_need_not_exist_but_names_must() {
        let u = resolve("4242:4343", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 4343, "/"));
        assert!(resolve("ghost", PASSWD, GROUP).unwrap_err().contains("unable to find user ghost"));
        assert!(resolve("app:ghosts", PASSWD, GROUP).unwrap_err().contains("unable to find group ghosts"));
        assert_eq!(resolve("1000", PASSWD, GROUP).unwrap().gid, 1000, "a numeric uid in passwd gets its gid");
    }

    #[test]
    fn group_override_by_name_or_number() {
        assert_eq!(resolve("app:staff", PASSWD, GROUP).unwrap().gid, 50);
        assert_eq!(resolve("app:7", PASSWD, GROUP).unwrap().gid, 7);
        assert_eq!(resolve(":staff", PASSWD, GROUP).unwrap().uid, 0);
    }

    #[test]
    fn id_4294967295_is_refused_as_given_and_from_the_images_files() {
        for spec in ["4294967295", "65534:4294967295", "99999999999", "1:99999999999"] {
            assert!(check_spec(spec).unwrap_err().contains("out of range"), "{spec}");
        }
        for spec in ["", "0", "4294967294:4294967294", "app", "app:staff", "4294967295x"] {
            assert!(check_spec(spec).is_ok(), "{spec}");
        }
        assert!(resolve("4294967295", PASSWD, GROUP).unwrap_err().contains("out of range"));
        assert!(resolve("0:4294967295", PASSWD, GROUP).unwrap_err().contains("out of range"));
        let passwd = "evil:x:4294967295:0::/:/bin/sh\nlazy:x:1:4294967295::/:/bin/sh\n";
        let group = "bad:x:4294967295:lazy\n";
        assert!(resolve("evil", passwd, "").unwrap_err().contains("out of range"));
        assert!(resolve("lazy", passwd, "").unwrap_err().contains("out of range"));
        assert!(resolve("lazy:0", passwd, group).unwrap_err().contains("out of range"), "a supplementary group");
    }

    #[test]
    fn the_files_are_read_with_a_bound_and_only_when_regular() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        assert_eq!(read_db(&path("missing")).unwrap(), "");
        std::fs::write(path("passwd"), PASSWD).unwrap();
        assert_eq!(read_db(&path("passwd")).unwrap(), PASSWD);
        std::os::unix::fs::symlink("/dev/zero", path("zero")).unwrap();
        assert!(read_db(&path("zero")).unwrap_err().contains("is not a regular file"));
        nix::unistd::mkfifo(dir.path().join("fifo").as_path(), nix::sys::stat::Mode::from_bits_truncate(0o600))
            .unwrap();
        assert!(read_db(&path("fifo")).unwrap_err().contains("is not a regular file"));
        let big = std::fs::File::create(path("big")).unwrap();
        big.set_len(MAX_DB_FILE + 1).unwrap();
        assert!(read_db(&path("big")).unwrap_err().contains("larger than"));
    }

    #[test]
    fn missing_files_still_allow_numeric_users() {
        assert_eq!(resolve("", "", "").unwrap(), ResolvedUser { uid: 0, gid: 0, groups: vec![], home: "/".into() });
        assert!(resolve("root", "", "").is_err());
    }
}
