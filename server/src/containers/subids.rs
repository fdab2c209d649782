//! Host id ranges for containers with their own user namespace (`--userns auto`): each gets 65536 uids and
//! gids no other container has, from the subordinate ids /etc/subuid and /etc/subgid give the server's id
//! user (`--subid-user`, default `cm`). The ranges in use are those in the containers' records, so a range
//! is free again once its container is removed, also across restarts. The files are read at each create,
//! so ranges added while the server runs are used.

use super::IdMap;

/// Ids per container: container ids 0-65535 (nobody and nogroup included).
pub const RANGE_SIZE: u32 = 65536;

/// `name:start:count` lines of a subuid/subgid file for `user` (by name or numeric uid): (start, count).
pub fn ranges(text: &str, user: &str, uid: Option<u32>) -> Vec<(u32, u32)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let (owner, start, count) = (fields.next()?, fields.next()?, fields.next()?);
            let matches = owner == user || uid.is_some_and(|u| owner == u.to_string());
            matches.then_some(())?;
            Some((start.parse().ok()?, count.parse().ok()?))
        })
        .collect()
}

/// The first start of `size` ids inside `ranges` that overlaps none of the ranges of that size starting at
/// `used`; None when all are taken.
pub fn allocate(ranges: &[(u32, u32)], used: &[u32], size: u32) -> Option<u32> {
    for &(start, count) in ranges {
        let end = u64::from(start) + u64::from(count);
        let mut candidate = u64::from(start);
        while candidate + u64::from(size) <= end {
            let overlapping = used
                .iter()
                .map(|&u| u64::from(u))
                .find(|&u| u < candidate + u64::from(size) && candidate < u + u64::from(size));
            match overlapping {
                // Skip past the range in the way.
                Some(u) => candidate = u + u64::from(size),
                None => return u32::try_from(candidate).ok(),
            }
        }
    }
    None
}

/// The uid of `user` from /etc/passwd, if it has one there.
fn uid_of(user: &str) -> Option<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user)).then(|| f.get(2)?.parse().ok()).flatten()
    })
}

/// A map for a new container from `user`'s subordinate ids, avoiding `used` (the maps of the other
/// containers); an error that says what to do when there are none, or none left.
pub fn allocate_map(user: &str, used: &[IdMap]) -> Result<IdMap, String> {
    let uid = uid_of(user);
    let read = |file: &str| std::fs::read_to_string(file).unwrap_or_default();
    let (uids, gids) = (ranges(&read("/etc/subuid"), user, uid), ranges(&read("/etc/subgid"), user, uid));
    if uids.is_empty() || gids.is_empty() {
        return Err(format!(
            "--userns auto needs subordinate ids for user {user:?} in /etc/subuid and /etc/subgid (e.g. a line \
             \"{user}:1000000:6553600\" in each; the server's --subid-user names the user)"
        ));
    }
    let used_uids: Vec<u32> = used.iter().map(|m| m.uid).collect();
    let used_gids: Vec<u32> = used.iter().map(|m| m.gid).collect();
    match (allocate(&uids, &used_uids, RANGE_SIZE), allocate(&gids, &used_gids, RANGE_SIZE)) {
        (Some(uid), Some(gid)) => Ok(IdMap { uid, gid, size: RANGE_SIZE }),
        _ => Err(format!(
            "no free range of {RANGE_SIZE} subordinate ids of user {user:?} is left for --userns auto (every one \
             is a container's; add ids in /etc/subuid and /etc/subgid or remove containers)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_the_users_lines_by_name_or_uid() {
        let text = "cm:100000:131072\nother:500000:65536\n1234:900000:65536\nbad line\ncm:x:1\n";
        assert_eq!(ranges(text, "cm", None), vec![(100000, 131072)]);
        assert_eq!(ranges(text, "cm", Some(1234)), vec![(100000, 131072), (900000, 65536)]);
        assert!(ranges(text, "nobody", None).is_empty());
    }

    #[test]
    fn ranges_are_given_once_and_freed_ones_are_reused() {
        let ranges = [(100000, 3 * 65536)];
        assert_eq!(allocate(&ranges, &[], 65536), Some(100000));
        assert_eq!(allocate(&ranges, &[100000], 65536), Some(165536));
        assert_eq!(allocate(&ranges, &[100000, 165536], 65536), Some(231072));
        assert_eq!(allocate(&ranges, &[100000, 165536, 231072], 65536), None);
        // The first container was removed: its range is free again.
        assert_eq!(allocate(&ranges, &[165536, 231072], 65536), Some(100000));
        // A used range that does not start on our grid (another size) is stepped over.
        assert_eq!(allocate(&ranges, &[110000], 65536), Some(175536));
        // Too small a range gives nothing; a later one is used.
        assert_eq!(allocate(&[(0, 1000), (200000, 65536)], &[], 65536), Some(200000));
        // No overflow at the top of the id space.
        assert_eq!(allocate(&[(u32::MAX - 10, 100)], &[], 65536), None);
    }
}
