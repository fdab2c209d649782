//! cgroup v1: one directory per controller hierarchy (/sys/fs/cgroup/memory/cm/<id>, .../cpu/cm/<id>, ...).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use super::fs::{ensure_dir, read_file};
use super::{Cgroup, Limits, missing_controller, retry_if_parent_vanished};

/// The v1 controllers a container gets a cgroup in, in the order processes are placed.
const CONTROLLERS: [&str; 8] = ["memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "devices", "freezer"];
/// CFS period: the quota is CPU time per 100 ms.
const CFS_PERIOD_US: u64 = 100_000;

/// The mounted hierarchies among [`CONTROLLERS`] under `root`: (controller names, mount point). Comounted
/// controllers (/sys/fs/cgroup/cpu -> cpu,cpuacct) are one hierarchy, named after its mount ("cpu,cpuacct").
pub(super) fn hierarchies(root: &Path) -> Vec<(String, PathBuf)> {
    // Every container's cgroup is opened through this (Stats of 50 containers: 50 times), and the mounts do
    // not change while a server runs: look once per root, and again only if a hierarchy went away.
    type Hierarchies = Vec<(String, PathBuf)>;
    static FOUND: std::sync::Mutex<Vec<(PathBuf, Hierarchies)>> = std::sync::Mutex::new(Vec::new());
    let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, hierarchies)) = found.iter().find(|(r, _)| r == root)
        && hierarchies.iter().all(|(_, mount)| mount.join("cgroup.procs").exists())
    {
        return hierarchies.clone();
    }
    let hierarchies = discover(root);
    found.retain(|(r, _)| r != root);
    found.push((root.to_path_buf(), hierarchies.clone()));
    hierarchies
}

fn discover(root: &Path) -> Vec<(String, PathBuf)> {
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    for controller in CONTROLLERS {
        let dir = root.join(controller);
        // A cgroupfs mount, not a leftover empty directory on the tmpfs above it.
        if !dir.join("cgroup.procs").exists() {
            continue;
        }
        let mount = std::fs::canonicalize(&dir).unwrap_or(dir);
        if seen.insert(mount.clone()) {
            let name = mount.file_name().map_or_else(|| controller.to_string(), |n| n.to_string_lossy().into_owned());
            found.push((name, mount));
        }
    }
    found
}

/// Makes the container's dir in every hierarchy (`cgroup`'s dirs, from [`Cgroup::open`]), then applies `limits`.
pub(super) fn create(cgroup: &Cgroup, root: &Path, limits: &Limits) -> io::Result<()> {
    for (controller, limit) in [("memory", limits.memory_bytes), ("cpu", limits.cpu_millis), ("pids", limits.pids)] {
        if limit.is_some() && cgroup.dir_of(controller).is_none() {
            return Err(missing_controller(controller, root));
        }
    }
    for (names, dir) in &cgroup.dirs {
        let cpuset = names.split(',').any(|n| n == "cpuset");
        let parent = dir.parent().expect("a container dir has a parent");
        for level in cgroup.upper_levels(dir) {
            ensure_dir(&*cgroup.fs, &level)?;
            if cpuset {
                inherit_cpuset(cgroup, &level)?;
            }
        }
        retry_if_parent_vanished(parent, || {
            ensure_dir(&*cgroup.fs, parent)?;
            if cpuset {
                inherit_cpuset(cgroup, parent)?;
            }
            ensure_dir(&*cgroup.fs, dir)?;
            if cpuset {
                inherit_cpuset(cgroup, dir)?;
            }
            Ok(())
        })?;
    }
    restrict_devices(cgroup)?;
    apply_limits(cgroup, limits)
}

/// The devices a container may use, docker's defaults: creating any node (mknod, `m`), and reading and
/// writing null, zero, full, random, urandom, tty, console, ptmx, the ptys and tun. Everything else, such as
/// the host's disks, is refused even to root with CAP_MKNOD.
pub const ALLOWED_DEVICES: [&str; 12] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

/// Denies every device in the container's devices hierarchy, then allows [`ALLOWED_DEVICES`].
fn restrict_devices(cgroup: &Cgroup) -> io::Result<()> {
    let Some(dir) = cgroup.dir_of("devices") else { return Ok(()) };
    cgroup.write(&dir.join("devices.deny"), "a")?;
    for rule in ALLOWED_DEVICES {
        cgroup.write(&dir.join("devices.allow"), rule)?;
    }
    Ok(())
}

/// Opens the devices cgroup to every device (privileged containers, as docker).
pub(super) fn allow_all_devices(cgroup: &Cgroup) -> io::Result<()> {
    match cgroup.dir_of("devices") {
        Some(dir) => cgroup.write(&dir.join("devices.allow"), "a"),
        None => Ok(()),
    }
}

/// A new v1 cpuset cgroup has no CPUs and no memory nodes, and takes no process until it has: copy the
/// parent's.
fn inherit_cpuset(cgroup: &Cgroup, dir: &Path) -> io::Result<()> {
    let parent = dir.parent().expect("a cgroup dir below the root has a parent");
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if read_file(&dir.join(file))?.trim().is_empty() {
            cgroup.write(&dir.join(file), read_file(&parent.join(file))?.trim())?;
        }
    }
    Ok(())
}

pub(super) fn apply_limits(cgroup: &Cgroup, limits: &Limits) -> io::Result<()> {
    let dir = |controller| cgroup.dir_of(controller).expect("checked by create");
    if let Some(bytes) = limits.memory_bytes {
        let memory = dir("memory");
        cgroup.write(&memory.join("memory.limit_in_bytes"), &bytes.to_string())?;
        // memory+swap, present when swap accounting is on: the same value, so swap does not extend the limit.
        let memsw = memory.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            cgroup.write(&memsw, &bytes.to_string())?;
        }
    }
    if let Some(millis) = limits.cpu_millis {
        let cpu = dir("cpu");
        cgroup.write(&cpu.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
        cgroup.write(&cpu.join("cpu.cfs_quota_us"), &(millis * CFS_PERIOD_US / 1000).to_string())?;
    }
    if let Some(pids) = limits.pids {
        cgroup.write(&dir("pids").join("pids.max"), &pids.to_string())?;
    }
    Ok(())
}

/// Real cgroup v1 tests: they run where [`Layout::detect`] says V1 (as on the development machines) and print
/// a note elsewhere.
#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use std::sync::Arc;

    use super::super::Layout;
    use super::super::fs::{CgroupFs, HostFs, write_file};
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn v1_layout(test: &str) -> Option<Layout> {
        match Layout::detect() {
            Ok(layout @ Layout::V1 { .. }) => Some(layout),
            other => {
                println!("note: skipping {test}: this host has no cgroup v1 layout ({other:?})");
                None
            }
        }
    }

    /// Kills the child and destroys the cgroup even when the test fails halfway.
    struct Guard {
        cgroup: Cgroup,
        child: Option<Child>,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(child) = &mut self.child {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = self.cgroup.kill_all();
            let _ = self.cgroup.destroy();
        }
    }

    fn parent_name(test: &str) -> String {
        format!("cm-test-{}-{test}", std::process::id())
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
    }

    /// Spawns `sh -c script` that waits for a line on stdin before running `script`, so it can be placed in a
    /// cgroup first (and runs nothing if the test dies before).
    fn spawn_gated(script: &str) -> Child {
        Command::new("sh")
            .args(["-c", &format!("read go && {{ {script}; }}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn release(child: &mut Child) {
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }

    fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "child {} still running after {timeout:?}", child.id());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn hierarchies_are_the_mounted_controllers_with_comounted_ones_once() {
        let root = tempfile::tempdir().unwrap();
        for mount in ["memory", "cpu,cpuacct", "freezer"] {
            std::fs::create_dir(root.path().join(mount)).unwrap();
            std::fs::write(root.path().join(mount).join("cgroup.procs"), "").unwrap();
        }
        std::os::unix::fs::symlink("cpu,cpuacct", root.path().join("cpu")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", root.path().join("cpuacct")).unwrap();
        // An empty directory on the tmpfs is not a mounted controller.
        std::fs::create_dir(root.path().join("pids")).unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        let found = hierarchies(&root);
        let names: Vec<&str> = found.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["memory", "cpu,cpuacct", "freezer"]);
        assert_eq!(found[1].1, root.join("cpu,cpuacct"));
        let cgroup = Cgroup::open(&Layout::V1 { root: root.clone() }, "cm", "c1");
        assert_eq!(cgroup.dir_of("cpuacct"), Some(root.join("cpu,cpuacct/cm/c1").as_path()));
        assert_eq!(cgroup.dir_of("pids"), None);
        let err = Cgroup::create(
            &Layout::V1 { root: root.clone() },
            "cm",
            "c1",
            &Limits { pids: Some(5), ..Limits::default() },
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        assert!(err.to_string().contains("pids"), "{err}");
        // Found once and remembered; looked for again when a hierarchy went away.
        assert_eq!(hierarchies(&root), found);
        std::fs::remove_file(root.join("freezer/cgroup.procs")).unwrap();
        let names: Vec<String> = hierarchies(&root).into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["memory", "cpu,cpuacct"]);
    }

    #[test]
    fn v1_cgroup_gets_limits_holds_a_process_and_is_killed_and_removed() {
        let Some(layout) = v1_layout("v1_cgroup_gets_limits_holds_a_process_and_is_killed_and_removed") else {
            return;
        };
        let root = layout.root().to_path_buf();
        let parent = parent_name("lifecycle");
        let limits = Limits { memory_bytes: Some(64 * MIB), cpu_millis: Some(500), pids: Some(50) };
        let cgroup = Cgroup::create(&layout, &parent, "c1", &limits).unwrap();
        let mut guard = Guard { cgroup, child: None };
        let cgroup = &guard.cgroup;

        let dirs = cgroup.paths();
        assert!(dirs.iter().any(|(name, _)| name == "memory"), "{dirs:?}");
        for (name, dir) in &dirs {
            assert!(dir.is_dir(), "{name}: {} missing", dir.display());
            assert!(dir.starts_with(&root) && dir.ends_with(format!("{parent}/c1")), "{}", dir.display());
        }
        let memory = cgroup.dir_of("memory").unwrap();
        assert_eq!(read(&memory.join("memory.limit_in_bytes")), (64 * MIB).to_string());
        if memory.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(read(&memory.join("memory.memsw.limit_in_bytes")), (64 * MIB).to_string());
        }
        let cpu = cgroup.dir_of("cpu").unwrap();
        assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(&cgroup.dir_of("pids").unwrap().join("pids.max")), "50");
        if let Some(devices) = cgroup.dir_of("devices") {
            let mut listed: Vec<String> = read(&devices.join("devices.list")).lines().map(String::from).collect();
            let mut allowed: Vec<String> = ALLOWED_DEVICES.iter().map(|r| r.to_string()).collect();
            listed.sort();
            allowed.sort();
            assert_eq!(listed, allowed, "the container's device allow list");
        }
        if let Some(cpuset) = cgroup.dir_of("cpuset") {
            assert_eq!(read(&cpuset.join("cpuset.cpus")), read(&root.join("cpuset/cpuset.cpus")));
            assert_eq!(read(&cpuset.join("cpuset.mems")), read(&root.join("cpuset/cpuset.mems")));
        }

        // Re-opening finds the same dirs and changes nothing.
        let reopened = Cgroup::open(&layout, &parent, "c1");
        assert_eq!(reopened.paths(), dirs);
        assert_eq!(reopened.procs_files(), cgroup.procs_files());
        assert_eq!(cgroup.procs_files().len(), dirs.len());

        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        guard.child = Some(child);
        let cgroup = &guard.cgroup;
        cgroup.add_process(pid).unwrap();
        assert_eq!(cgroup.pids(), vec![pid]);
        for file in cgroup.procs_files() {
            assert_eq!(read(&file), pid.to_string(), "{}", file.display());
        }
        assert_eq!(cgroup.oom_kills(), 0);

        cgroup.kill_all().unwrap();
        assert!(cgroup.pids().is_empty());
        let status = guard.child.take().unwrap().wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));

        // A process joins by itself through the join files (each hierarchy's tasks file, "0").
        assert!(cgroup.join_files().iter().all(|f| f.ends_with("tasks") && f.exists()), "{:?}", cgroup.join_files());
        let joiner = Command::new("sh")
            .args(["-c", "for f in \"$@\"; do echo 0 > \"$f\" || exit 1; done; exec sleep 30", "sh"])
            .args(cgroup.join_files())
            .spawn()
            .unwrap();
        let pid = joiner.id() as i32;
        guard.child = Some(joiner);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while guard.cgroup.pids() != vec![pid] && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(guard.cgroup.pids(), vec![pid]);
        for file in guard.cgroup.procs_files() {
            assert_eq!(read(&file), pid.to_string(), "{}", file.display());
        }
        guard.cgroup.kill_all().unwrap();
        let _ = guard.child.take().unwrap().wait();

        guard.cgroup.destroy().unwrap();
        for (name, dir) in &dirs {
            assert!(!dir.exists(), "{name}: {} left behind", dir.display());
            assert!(!dir.parent().unwrap().exists(), "{name}: parent {} left behind", dir.display());
        }
        // Destroying again is fine: the dirs are already gone.
        guard.cgroup.destroy().unwrap();
    }

    #[test]
    fn v1_memory_limit_ooms_a_process_that_allocates_more() {
        let Some(layout) = v1_layout("v1_memory_limit_ooms_a_process_that_allocates_more") else { return };
        let limits = Limits { memory_bytes: Some(16 * MIB), ..Limits::default() };
        let cgroup = Cgroup::create(&layout, &parent_name("oom"), "c1", &limits).unwrap();
        // The shell keeps 100 MB of output in a variable: far above 16 MiB.
        let child = spawn_gated(r#"x=$(head -c 100000000 /dev/zero | tr "\0" a)"#);
        let mut guard = Guard { cgroup, child: Some(child) };
        let child = guard.child.as_mut().unwrap();
        guard.cgroup.add_process(child.id() as i32).unwrap();
        release(child);
        let status = wait_with_timeout(child, Duration::from_secs(30));
        assert!(!status.success(), "the allocation should have been OOM-killed: {status:?}");
        assert!(guard.cgroup.oom_kills() >= 1, "oom_kills() = {}", guard.cgroup.oom_kills());
        guard.cgroup.kill_all().unwrap();
        guard.cgroup.destroy().unwrap();
        assert!(guard.cgroup.paths().iter().all(|(_, dir)| !dir.exists()));
    }

    #[test]
    fn v1_kill_all_kills_processes_forked_inside_the_cgroup() {
        let Some(layout) = v1_layout("v1_kill_all_kills_processes_forked_inside_the_cgroup") else { return };
        let cgroup = Cgroup::create(&layout, &parent_name("forks"), "c1", &Limits::default()).unwrap();
        let child = spawn_gated("sleep 30 & sleep 30 & sleep 30 & wait");
        let mut guard = Guard { cgroup, child: Some(child) };
        let child = guard.child.as_mut().unwrap();
        guard.cgroup.add_process(child.id() as i32).unwrap();
        release(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while guard.cgroup.pids().len() < 4 {
            assert!(Instant::now() < deadline, "children did not start: {:?}", guard.cgroup.pids());
            std::thread::sleep(Duration::from_millis(10));
        }
        guard.cgroup.kill_all().unwrap();
        assert!(guard.cgroup.pids().is_empty());
        guard.cgroup.destroy().unwrap();
        assert!(guard.cgroup.paths().iter().all(|(_, dir)| !dir.exists()));
    }

    #[test]
    fn v1_nested_parent_is_made_at_every_level_cpusets_included_and_only_its_last_level_removed() {
        let Some(layout) = v1_layout("v1_nested_parent") else { return };
        let upper = parent_name("nested");
        let limits = Limits { pids: Some(32), ..Limits::default() };
        let cgroup = Cgroup::create(&layout, &format!("{upper}/cm"), "c1", &limits).unwrap();
        let guard = Guard { cgroup, child: None };
        let pids = guard.cgroup.dir_of("pids").unwrap().to_path_buf();
        assert!(pids.ends_with(format!("{upper}/cm/c1")), "{}", pids.display());
        assert_eq!(read(&pids.join("pids.max")), "32");
        if let Some(cpuset) = guard.cgroup.dir_of("cpuset") {
            assert!(!read(&cpuset.join("cpuset.cpus")).is_empty(), "every level got the parent's cpus");
        }
        let dirs = guard.cgroup.paths();
        drop(guard);
        for (_, dir) in dirs {
            assert!(!dir.exists() && !dir.parent().unwrap().exists(), "{} or its parent left", dir.display());
            let upper = dir.parent().unwrap().parent().unwrap();
            assert!(upper.is_dir(), "the upper level is not cm's to remove");
            std::fs::remove_dir(upper).unwrap();
        }
    }

    #[test]
    fn v1_create_without_limits_leaves_the_defaults() {
        let Some(layout) = v1_layout("v1_create_without_limits_leaves_the_defaults") else { return };
        let cgroup = Cgroup::create(&layout, &parent_name("defaults"), "c1", &Limits::default()).unwrap();
        let guard = Guard { cgroup, child: None };
        assert_eq!(read(&guard.cgroup.dir_of("pids").unwrap().join("pids.max")), "max");
        assert_eq!(read(&guard.cgroup.dir_of("cpu").unwrap().join("cpu.cfs_quota_us")), "-1");
        let root_limit = read(&layout.root().join("memory/memory.limit_in_bytes"));
        assert_eq!(read(&guard.cgroup.dir_of("memory").unwrap().join("memory.limit_in_bytes")), root_limit);
    }

    /// The host's cgroupfs, except that writes to one file fail as the kernel fails them.
    struct RefusingWrites(&'static str);

    impl CgroupFs for RefusingWrites {
        fn create_dir(&self, path: &Path) -> io::Result<()> {
            HostFs.create_dir(path)
        }
        fn remove_dir(&self, path: &Path) -> io::Result<()> {
            HostFs.remove_dir(path)
        }
        fn write(&self, path: &Path, value: &str) -> io::Result<()> {
            if path.ends_with(self.0) { Err(io::Error::from_raw_os_error(22)) } else { HostFs.write(path, value) }
        }
        fn kill(&self, pid: i32) -> io::Result<()> {
            HostFs.kill(pid)
        }
        fn attach_device_filter(&self, dir: &Path, program: &[super::super::devices::Insn]) -> io::Result<()> {
            HostFs.attach_device_filter(dir, program)
        }
    }

    #[test]
    fn v1_failed_create_names_the_file_and_value_and_leaves_nothing_behind() {
        let Some(layout) = v1_layout("v1_failed_create_names_the_file_and_value_and_leaves_nothing_behind") else {
            return;
        };
        let limits = Limits { pids: Some(64), ..Limits::default() };
        let fs = Arc::new(RefusingWrites("pids.max"));
        let err = Cgroup::create_with(fs, &layout, &parent_name("failed"), "c1", &limits).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("pids.max") && message.contains("\"64\""), "{message}");
        let cgroup = Cgroup::open(&layout, &parent_name("failed"), "c1");
        for (name, dir) in cgroup.paths() {
            assert!(!dir.parent().unwrap().exists(), "{name}: {} left behind", dir.display());
        }
    }

    #[test]
    fn v1_write_errors_name_the_file_and_the_value() {
        let Some(layout) = v1_layout("v1_write_errors_name_the_file_and_the_value") else { return };
        let procs = layout.root().join("pids/cgroup.procs");
        let err = write_file(&HostFs, &procs, "not-a-pid").unwrap_err();
        assert!(err.to_string().contains(&procs.display().to_string()) && err.to_string().contains("not-a-pid"));
    }
}
