//! Container cgroups: limits (memory, CPU, pids), placing processes, usage statistics, OOM counts, killing and
//! removal, on cgroup v1 (one directory per controller hierarchy) and v2 (one directory in the unified tree).
//!
//! A container's cgroup is `<root>/<parent>/<id>` in every hierarchy, `parent` being cm's own directory ("cm").
//! The file I/O is ours rather than the cgroups-rs crate's: cgroups-rs 0.5 hard-codes /sys/fs/cgroup for v2 (so
//! its v2 logic cannot run against a fake tree), ignores failures to enable controllers and to copy cpusets, and
//! pulls in zbus and a second nix.

mod devices;
mod fs;
mod limits;
mod stats;
mod v1;
mod v2;

#[cfg(test)]
pub(crate) mod fake;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};

pub(crate) use self::fs::{CgroupFs, HostFs};
use self::fs::{read_counter, read_pids, remove_dir_retrying, write_file};
pub use self::limits::{Limits, online_cpus, parse_cpus, parse_memory};
pub use self::stats::Usage;

/// Where cgroup filesystems are mounted on every distribution we know.
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";
/// How long kill_all keeps killing and waiting for the cgroup to empty.
const KILL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long destroy retries removing a directory that is still busy.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Which cgroup layout this host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Controllers in separate v1 hierarchies under `root` (/sys/fs/cgroup/memory, .../cpu, ...). Hybrid hosts
    /// (v1 controllers plus an empty cgroup2 at /sys/fs/cgroup/unified) are V1.
    V1 { root: PathBuf },
    /// One cgroup2 tree mounted at `root`, with the controllers.
    V2 { root: PathBuf },
}

impl Layout {
    /// V2 when /sys/fs/cgroup is a cgroup2 mount; V1 when the v1 memory controller is mounted under it.
    pub fn detect() -> io::Result<Layout> {
        Self::detect_at(Path::new(CGROUP_MOUNT))
    }

    fn detect_at(root: &Path) -> io::Result<Layout> {
        let stat = statfs(root).map_err(|e| {
            let e = io::Error::from(e);
            io::Error::new(e.kind(), format!("statfs {}: {e}", root.display()))
        })?;
        if stat.filesystem_type() == CGROUP2_SUPER_MAGIC {
            return Ok(Layout::V2 { root: root.to_path_buf() });
        }
        if root.join("memory/cgroup.procs").exists() {
            return Ok(Layout::V1 { root: root.to_path_buf() });
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no usable cgroups: {root} is not a cgroup2 mount and the cgroup v1 memory controller is not mounted at \
                 {root}/memory; mount one of them (cgroup2 is the modern choice)",
                root = root.display()
            ),
        ))
    }

    /// "cgroup v2 (unified hierarchy at /sys/fs/cgroup)", for the server's log.
    pub fn describe(&self) -> String {
        match self {
            Layout::V1 { root } => format!("cgroup v1 (controller hierarchies under {})", root.display()),
            Layout::V2 { root } => format!("cgroup v2 (unified hierarchy at {})", root.display()),
        }
    }

    /// The directory the layout's cgroup filesystems are under.
    #[cfg(test)]
    pub fn root(&self) -> &Path {
        match self {
            Layout::V1 { root } | Layout::V2 { root } => root,
        }
    }
}

/// A container's cgroup (one dir per v1 controller, or one v2 dir).
pub struct Cgroup {
    v2: bool,
    /// How many directories the parent is ("cm": 1, "delegated/cm": 2).
    levels: usize,
    /// (controller names of the hierarchy, e.g. "memory" or "cpu,cpuacct", or "" on v2; the container's dir).
    dirs: Vec<(String, PathBuf)>,
    fs: Arc<dyn CgroupFs>,
}

impl fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cgroup").field("v2", &self.v2).field("dirs", &self.dirs).finish()
    }
}

impl Cgroup {
    #[cfg(test)]
    /// Creates cm's cgroup for container `id` under `parent` with `limits` applied. v1: in every mounted
    /// hierarchy among memory, cpu, cpuacct, pids, cpuset, blkio, devices and freezer, with cpuset.cpus and
    /// cpuset.mems copied from the parent. v2: enables memory, cpu, pids and io (those available) in
    /// cgroup.subtree_control from the root down to the parent, then creates parent/id. Nothing is left behind
    /// when it fails; errors name the file and the value written.
    pub fn create(layout: &Layout, parent: &str, id: &str, limits: &Limits) -> io::Result<Cgroup> {
        Self::create_with(Arc::new(HostFs), layout, parent, id, limits)
    }

    /// [`Cgroup::create`] in the cgroup filesystem `fs` (a fake one in tests).
    pub(crate) fn create_with(
        fs: Arc<dyn CgroupFs>,
        layout: &Layout,
        parent: &str,
        id: &str,
        limits: &Limits,
    ) -> io::Result<Cgroup> {
        limits.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        check_parent(parent)?;
        check_name("id", id)?;
        let cgroup = Self::open_with(fs, layout, parent, id);
        let made = match layout {
            Layout::V1 { root } => v1::create(&cgroup, root, limits),
            Layout::V2 { root } => v2::create(&cgroup, root, limits),
        };
        if let Err(e) = made {
            let _ = cgroup.destroy();
            return Err(e);
        }
        Ok(cgroup)
    }

    /// Applies new limits to an existing cgroup (UpdateContainerResources). Only the limits given change.
    pub fn update(&self, limits: &Limits) -> io::Result<()> {
        limits.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if self.v2 {
            let dir = self.dirs[0].1.clone();
            v2::apply_limits(self, &dir, limits)
        } else {
            v1::apply_limits(self, limits)
        }
    }

    #[cfg(test)]
    /// Re-opens an existing container cgroup (after a server restart) without changing it.
    pub fn open(layout: &Layout, parent: &str, id: &str) -> Cgroup {
        Self::open_with(Arc::new(HostFs), layout, parent, id)
    }

    /// [`Cgroup::open`] in the cgroup filesystem `fs`.
    pub(crate) fn open_with(fs: Arc<dyn CgroupFs>, layout: &Layout, parent: &str, id: &str) -> Cgroup {
        let levels = parent.split('/').count();
        match layout {
            Layout::V1 { root } => Cgroup {
                v2: false,
                levels,
                dirs: v1::hierarchies(root)
                    .into_iter()
                    .map(|(name, mount)| (name, mount.join(parent).join(id)))
                    .collect(),
                fs,
            },
            Layout::V2 { root } => {
                Cgroup { v2: true, levels, dirs: vec![(String::new(), root.join(parent).join(id))], fs }
            }
        }
    }

    /// The cgroup.procs files (v1: one per hierarchy; v2: one); writing a pid into each places that process.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, dir)| dir.join("cgroup.procs")).collect()
    }

    /// The files a process writes "0" to, to join this cgroup itself: on v1 each hierarchy's `tasks`, on v2
    /// `cgroup.procs`. On v1 moving the calling thread (a single-threaded process: all of it) through `tasks`
    /// skips the kernel's threadgroup lock, whose write side waits for an RCU grace period (7-20 ms) when no
    /// other migration happened in the last few ms; `cgroup.procs`, and any other pid than 0, take it. v2
    /// has no thread migration across domains, so its processes go through cgroup.procs.
    pub fn join_files(&self) -> Vec<PathBuf> {
        let file = if self.v2 { "cgroup.procs" } else { "tasks" };
        self.dirs.iter().map(|(_, dir)| dir.join(file)).collect()
    }

    /// A privileged container's: every device usable (v1's devices cgroup allows `a`; v2 has no device
    /// rules without a BPF program, which cm does not load).
    pub fn allow_all_devices(&self) -> io::Result<()> {
        if self.v2 {
            return Ok(());
        }
        v1::allow_all_devices(self)
    }

    /// On v2, the container's cgroup directory, for clone3's CLONE_INTO_CGROUP; None on v1.
    pub fn v2_dir(&self) -> Option<PathBuf> {
        self.v2.then(|| self.dirs[0].1.clone())
    }

    #[cfg(test)]
    /// Places a process (writes its pid to every procs file).
    pub fn add_process(&self, pid: i32) -> io::Result<()> {
        self.procs_files().iter().try_for_each(|file| write_file(&*self.fs, file, &pid.to_string()))
    }

    /// Number of OOM kills in this cgroup (v1 memory.oom_control, kernel >= 4.13; v2 memory.events); 0 if
    /// unknown.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            self.dirs[0].1.join("memory.events")
        } else {
            match self.dir_of("memory") {
                Some(dir) => dir.join("memory.oom_control"),
                None => return 0,
            }
        };
        std::fs::read_to_string(file).ok().and_then(|text| read_counter(&text, "oom_kill")).unwrap_or(0)
    }

    /// Pids currently in the cgroup (all hierarchies, deduplicated, sorted).
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.procs_files().iter().flat_map(|file| read_pids(file)).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process in the cgroup, again and again (to catch processes forked meanwhile) until it is
    /// empty or about 2 s have passed. v2 uses cgroup.kill (kernel >= 5.14) when present; a frozen v1 cgroup is
    /// thawed so the signals take effect.
    pub fn kill_all(&self) -> io::Result<()> {
        let deadline = Instant::now() + KILL_TIMEOUT;
        if self.v2 {
            let kill_file = self.dirs[0].1.join("cgroup.kill");
            if kill_file.exists() {
                write_file(&*self.fs, &kill_file, "1")?;
            }
        }
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "processes {pids:?} are still in cgroup {} {KILL_TIMEOUT:?} after SIGKILL",
                        self.dirs[0].1.display()
                    ),
                ));
            }
            for pid in pids {
                self.fs.kill(pid)?;
            }
            self.thaw_v1()?;
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A process frozen by the v1 freezer does not die of SIGKILL until it is thawed.
    fn thaw_v1(&self) -> io::Result<()> {
        let Some(dir) = self.dir_of("freezer").filter(|_| !self.v2) else { return Ok(()) };
        let state = dir.join("freezer.state");
        match std::fs::read_to_string(&state) {
            Ok(text) if text.trim() != "THAWED" => write_file(&*self.fs, &state, "THAWED"),
            _ => Ok(()),
        }
    }

    /// Removes the cgroup dirs (retrying briefly while a dying process is still in one; missing dirs are fine),
    /// then the parent dir if it is empty.
    pub fn destroy(&self) -> io::Result<()> {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        let mut first_error = None;
        for (_, dir) in &self.dirs {
            if let Err(e) = remove_dir_retrying(&*self.fs, dir, deadline) {
                first_error.get_or_insert(e);
            }
        }
        for (_, dir) in &self.dirs {
            if let Some(parent) = dir.parent() {
                // Busy or not empty: other containers still use it. Gone: fine.
                let _ = self.fs.remove_dir(parent);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    #[cfg(test)]
    /// Paths of the container's cgroup dirs: (controller names of the v1 hierarchy, or "" on v2; dir).
    pub fn paths(&self) -> Vec<(String, PathBuf)> {
        self.dirs.clone()
    }

    /// The levels of a nested parent above its last one, outermost first ("a/b/cm": a, a/b), under `dir` (one
    /// of the container's dirs). Created when missing, never removed: they are the subtree delegated to cm.
    fn upper_levels(&self, dir: &Path) -> Vec<PathBuf> {
        let mut upper: Vec<PathBuf> = dir.ancestors().skip(2).take(self.levels - 1).map(Path::to_path_buf).collect();
        upper.reverse();
        upper
    }

    /// The container's dir in the v1 hierarchy that has `controller` (on v2: the one dir).
    fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(names, _)| self.v2 || names.split(',').any(|n| n == controller))
            .map(|(_, d)| d.as_path())
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        write_file(&*self.fs, path, value)
    }
}

/// A parent is one or more plain path components ("cm", or "delegated/cm" under a delegated subtree), so the
/// cgroup cannot land outside the hierarchy.
fn check_parent(parent: &str) -> io::Result<()> {
    parent.split('/').try_for_each(|level| check_name("parent", level)).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "invalid cgroup parent {parent:?}: it must be a relative path of plain components (such as cm or \
                 delegated/cm), without . or .."
            ),
        )
    })
}

/// An id (or one level of a parent) must be one plain path component, so the cgroup cannot land outside cm's
/// directory.
fn check_name(what: &str, name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid cgroup {what} {name:?}: it must be a single non-empty path component"),
        ));
    }
    Ok(())
}

/// The error for a limit that needs a controller this host does not offer.
fn missing_controller(controller: &str, place: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "cannot apply the {controller} limit: the {controller} cgroup controller is not available in {}",
            place.display()
        ),
    )
}

/// Runs `make` (make the shared `parent` dir, then the container's dir in it) again when another container's
/// destroy removed the parent in between: NotFound, or any error (ENODEV reading a file of a dir the kernel is
/// removing) after which the parent is gone. At most 5 times.
fn retry_if_parent_vanished(parent: &Path, mut make: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    for _ in 1..5 {
        match make() {
            Err(e) if e.kind() == io::ErrorKind::NotFound || !parent.exists() => continue,
            result => return result,
        }
    }
    make()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_finds_this_hosts_layout() {
        match Layout::detect() {
            Ok(layout) => println!("cgroup layout here: {layout:?}"),
            Err(e) => println!("note: no cgroups here: {e}"),
        }
    }

    #[test]
    fn detect_says_v1_when_the_memory_controller_is_mounted_and_explains_when_nothing_is() {
        let dir = tempfile::tempdir().unwrap();
        let err = Layout::detect_at(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
        std::fs::create_dir(dir.path().join("memory")).unwrap();
        std::fs::write(dir.path().join("memory/cgroup.procs"), "").unwrap();
        assert_eq!(Layout::detect_at(dir.path()).unwrap(), Layout::V1 { root: dir.path().to_path_buf() });
    }

    #[test]
    fn oom_kill_counts_are_read_from_v2_memory_events_and_v1_oom_control() {
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(read_counter(events, "oom_kill"), Some(2));
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";
        assert_eq!(read_counter(oom_control, "oom_kill"), Some(7));
        assert_eq!(read_counter("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"), None);
    }

    #[test]
    fn names_that_are_not_one_path_component_are_refused() {
        for bad in ["", ".", "..", "a/b", "/abs", "../x"] {
            let err = check_name("id", bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(check_name("id", "0123abcd").is_ok());
        for bad in ["", "/cm", "cm/", "a//cm", "a/../cm", "./cm", "a/.."] {
            let err = check_parent(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(check_parent("cm").is_ok() && check_parent("system.slice/cm.service/cm").is_ok());
        let layout = Layout::V2 { root: PathBuf::from("/nonexistent") };
        assert!(Cgroup::create(&layout, "cm", "../x", &Limits::default()).is_err());
    }
}
