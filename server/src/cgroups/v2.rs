//! cgroup v2: one directory in the unified tree (/sys/fs/cgroup/cm/<id>), with the controllers enabled from the
//! root down.

use std::io;
use std::path::Path;

use super::devices;
use super::fs::{controller_set, ensure_dir, read_file};
use super::{Cgroup, Limits, missing_controller, retry_if_parent_vanished};

/// The controllers a container's cgroup gets, those of them the host has.
const CONTROLLERS: [&str; 4] = ["memory", "cpu", "pids", "io"];
/// cpu.max period: the quota is CPU time per 100 ms.
const CPU_PERIOD_US: u64 = 100_000;

/// Enables the controllers in cgroup.subtree_control of the root and every level of the parent (making the
/// levels that are missing), makes the container's dir
/// (`cgroup`'s one dir, from [`Cgroup::open`]) and applies `limits`.
pub(super) fn create(cgroup: &Cgroup, root: &Path, limits: &Limits) -> io::Result<()> {
    let available = read_file(&root.join("cgroup.controllers"))?;
    let available = controller_set(&available);
    for (controller, limit) in [("memory", limits.memory_bytes), ("cpu", limits.cpu_millis), ("pids", limits.pids)] {
        if limit.is_some() && !available.contains(&controller) {
            return Err(missing_controller(controller, &root.join("cgroup.controllers")));
        }
    }
    let wanted: Vec<&str> = CONTROLLERS.into_iter().filter(|c| available.contains(c)).collect();
    let dir = &cgroup.dirs[0].1;
    let parent = dir.parent().expect("a container dir has a parent");
    enable_controllers(cgroup, root, &wanted)?;
    for level in cgroup.upper_levels(dir) {
        ensure_dir(&*cgroup.fs, &level)?;
        enable_controllers(cgroup, &level, &wanted)?;
    }
    retry_if_parent_vanished(parent, || {
        ensure_dir(&*cgroup.fs, parent)?;
        enable_controllers(cgroup, parent, &wanted)?;
        ensure_dir(&*cgroup.fs, dir)
    })?;
    // What the v1 devices cgroup does ([`super::v1::ALLOWED_DEVICES`]), before any process is in the cgroup.
    cgroup.fs.attach_device_filter(dir, &devices::default_program())?;
    apply_limits(cgroup, dir, limits)
}

/// Makes `wanted` available to the children of `dir`, writing only the ones not enabled yet (one write).
fn enable_controllers(cgroup: &Cgroup, dir: &Path, wanted: &[&str]) -> io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = read_file(&file)?;
    let enabled = controller_set(&enabled);
    let missing: Vec<String> = wanted.iter().filter(|c| !enabled.contains(c)).map(|c| format!("+{c}")).collect();
    if missing.is_empty() {
        return Ok(());
    }
    cgroup.write(&file, &missing.join(" ")).map_err(|e| {
        if e.kind() == io::ErrorKind::ResourceBusy {
            // The "no internal processes" rule: a non-root cgroup with processes cannot enable controllers.
            io::Error::new(e.kind(), format!("{e}; {} has processes of its own: move them out first", dir.display()))
        } else {
            e
        }
    })
}

pub(super) fn apply_limits(cgroup: &Cgroup, dir: &Path, limits: &Limits) -> io::Result<()> {
    if let Some(bytes) = limits.memory_bytes {
        cgroup.write(&dir.join("memory.max"), &bytes.to_string())?;
        // Present when swap accounting is on: no swap, so swap does not extend the limit.
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            cgroup.write(&swap, "0")?;
        }
    }
    if let Some(millis) = limits.cpu_millis {
        cgroup.write(&dir.join("cpu.max"), &format!("{} {CPU_PERIOD_US}", millis * CPU_PERIOD_US / 1000))?;
    }
    if let Some(pids) = limits.pids {
        cgroup.write(&dir.join("pids.max"), &pids.to_string())?;
    }
    Ok(())
}

/// The v2 logic against a fake cgroup2 tree in a tempdir (see [`super::fake`]).
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::fake::FakeCgroup2;
    use super::super::fs::CgroupFs;
    use super::super::{Cgroup, Limits};

    const MIB: u64 = 1024 * 1024;

    fn limits() -> Limits {
        Limits { memory_bytes: Some(64 * MIB), cpu_millis: Some(500), pids: Some(100) }
    }

    fn create(fake: &Arc<FakeCgroup2>, id: &str, limits: &Limits) -> std::io::Result<Cgroup> {
        Cgroup::create_with(fake.clone(), &fake.layout(), "cm", id, limits)
    }

    #[test]
    fn create_enables_memory_cpu_pids_from_the_root_down_to_the_parent() {
        let fake = FakeCgroup2::new("cpuset cpu memory hugetlb pids rdma misc");
        create(&fake, "c1", &limits()).unwrap();
        assert_eq!(fake.writes_to("cgroup.subtree_control"), vec!["+memory +cpu +pids"]);
        assert_eq!(fake.writes_to("cm/cgroup.subtree_control"), vec!["+memory +cpu +pids"]);
        assert_eq!(fake.read("cm/cgroup.subtree_control"), "cpu memory pids");
        assert_eq!(fake.read("cm/c1/cgroup.controllers"), "cpu memory pids");
        // Controllers are never enabled in the container's own dir: it holds processes.
        assert!(fake.writes_to("cm/c1/cgroup.subtree_control").is_empty());
    }

    #[test]
    fn create_enables_io_too_where_available() {
        let fake = FakeCgroup2::new("cpuset cpu io memory pids");
        create(&fake, "c1", &limits()).unwrap();
        assert_eq!(fake.writes_to("cgroup.subtree_control"), vec!["+memory +cpu +pids +io"]);
        assert_eq!(fake.read("cm/c1/cgroup.controllers"), "cpu io memory pids");
    }

    #[test]
    fn create_attaches_the_device_filter_to_the_containers_cgroup_only() {
        let fake = FakeCgroup2::new("cpu memory pids");
        create(&fake, "c1", &limits()).unwrap();
        assert_eq!(fake.filters_of("cm/c1"), vec![crate::cgroups::devices::default_program()]);
        assert!(fake.filters_of("cm").is_empty() && fake.filters_of("").is_empty());
    }

    #[test]
    fn a_nested_parent_gets_the_controllers_at_every_level_and_only_its_last_level_is_removed() {
        let fake = FakeCgroup2::new("cpu memory pids");
        // An administrator's delegated subtree, with the controllers already enabled in it.
        fake.write(&fake.path("cgroup.subtree_control"), "+cpu +memory +pids").unwrap();
        fake.create_dir(&fake.path("delegated")).unwrap();
        fake.write(&fake.path("delegated/cgroup.subtree_control"), "+cpu +memory +pids").unwrap();
        let cgroup = Cgroup::create_with(fake.clone(), &fake.layout(), "delegated/x/cm", "c1", &limits()).unwrap();
        assert_eq!(cgroup.paths(), vec![(String::new(), fake.path("delegated/x/cm/c1"))]);
        assert_eq!(fake.writes_to("delegated/cgroup.subtree_control").len(), 1, "already enabled there");
        for level in
            ["cgroup.subtree_control", "delegated/x/cgroup.subtree_control", "delegated/x/cm/cgroup.subtree_control"]
        {
            assert_eq!(fake.read(level), "cpu memory pids", "{level}");
        }
        assert_eq!(fake.read("delegated/x/cm/c1/memory.max"), (64 * MIB).to_string());
        cgroup.destroy().unwrap();
        assert!(!fake.path("delegated/x/cm").exists());
        assert!(fake.path("delegated/x").is_dir(), "the levels above cm's own are not cm's to remove");
    }

    #[test]
    fn create_writes_only_controllers_not_yet_enabled() {
        let fake = FakeCgroup2::new("cpu io memory pids");
        fake.set("cgroup.subtree_control", "cpu io memory pids");
        create(&fake, "c1", &limits()).unwrap();
        assert!(fake.writes_to("cgroup.subtree_control").is_empty());
        create(&fake, "c2", &limits()).unwrap();
        // The second container finds everything enabled.
        assert_eq!(fake.writes_to("cm/cgroup.subtree_control"), vec!["+memory +cpu +pids +io"]);
        fake.set("cgroup.subtree_control", "cpu memory");
        create(&fake, "c3", &limits()).unwrap();
        assert_eq!(fake.writes_to("cgroup.subtree_control"), vec!["+pids +io"]);
    }

    #[test]
    fn create_writes_memory_max_without_swap_cpu_max_and_pids_max() {
        let fake = FakeCgroup2::new("cpu memory pids");
        create(&fake, "c1", &limits()).unwrap();
        assert_eq!(fake.read("cm/c1/memory.max"), (64 * MIB).to_string());
        assert_eq!(fake.read("cm/c1/memory.swap.max"), "0");
        assert_eq!(fake.read("cm/c1/cpu.max"), "50000 100000");
        assert_eq!(fake.read("cm/c1/pids.max"), "100");
        let two_and_a_quarter = Limits { cpu_millis: Some(2250), ..Limits::default() };
        if crate::cgroups::online_cpus() >= 3 {
            create(&fake, "c2", &two_and_a_quarter).unwrap();
            assert_eq!(fake.read("cm/c2/cpu.max"), "225000 100000");
        }
    }

    #[test]
    fn create_skips_swap_when_swap_accounting_is_off() {
        let fake = FakeCgroup2::new("cpu memory pids");
        fake.without_file("memory.swap.max");
        create(&fake, "c1", &limits()).unwrap();
        assert_eq!(fake.read("cm/c1/memory.max"), (64 * MIB).to_string());
        assert!(!fake.path("cm/c1/memory.swap.max").exists());
    }

    #[test]
    fn create_without_limits_leaves_the_defaults() {
        let fake = FakeCgroup2::new("cpu memory pids");
        create(&fake, "c1", &Limits::default()).unwrap();
        assert_eq!(fake.read("cm/c1/memory.max"), "max");
        assert_eq!(fake.read("cm/c1/memory.swap.max"), "max");
        assert_eq!(fake.read("cm/c1/cpu.max"), "max 100000");
        assert_eq!(fake.read("cm/c1/pids.max"), "max");
    }

    #[test]
    fn create_refuses_a_limit_whose_controller_is_missing_and_leaves_nothing() {
        let fake = FakeCgroup2::new("cpu pids");
        let err = create(&fake, "c1", &limits()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Unsupported);
        assert!(err.to_string().contains("memory") && err.to_string().contains("cgroup.controllers"), "{err}");
        assert!(!fake.path("cm").exists());
        // Without a memory limit the same host is fine.
        create(&fake, "c1", &Limits { memory_bytes: None, ..limits() }).unwrap();
        assert_eq!(fake.read("cm/c1/cpu.max"), "50000 100000");
    }

    #[test]
    fn create_failure_names_file_and_value_and_removes_what_it_made() {
        let fake = FakeCgroup2::new("cpu memory pids");
        fake.refuse_writes_to("pids.max");
        let err = create(&fake, "c1", &limits()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("cm/c1/pids.max") && message.contains("\"100\""), "{message}");
        assert!(!fake.path("cm").exists(), "the container dir and the empty parent are removed");
    }

    #[test]
    fn create_starts_again_when_another_containers_destroy_removed_the_parent_meanwhile() {
        let fake = FakeCgroup2::new("cpu memory pids");
        fake.parent_vanishes_before("cm/c1");
        create(&fake, "c1", &limits()).unwrap();
        assert_eq!(fake.writes_to("cm/cgroup.subtree_control"), vec!["+memory +cpu +pids"; 2]);
        assert_eq!(fake.read("cm/c1/memory.max"), (64 * MIB).to_string());
    }

    #[test]
    fn create_refuses_invalid_limits_before_touching_anything() {
        let fake = FakeCgroup2::new("cpu memory pids");
        let err = create(&fake, "c1", &Limits { pids: Some(0), ..Limits::default() }).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(fake.all_writes().is_empty() && !fake.path("cm").exists());
    }

    #[test]
    fn procs_file_places_processes_and_pids_lists_them() {
        let fake = FakeCgroup2::new("cpu memory pids");
        let cgroup = create(&fake, "c1", &limits()).unwrap();
        assert_eq!(cgroup.procs_files(), vec![fake.path("cm/c1/cgroup.procs")]);
        assert_eq!(cgroup.join_files(), cgroup.procs_files(), "v2 has no thread migration across domains");
        assert_eq!(cgroup.paths(), vec![(String::new(), fake.path("cm/c1"))]);
        cgroup.add_process(42).unwrap();
        cgroup.add_process(7).unwrap();
        assert_eq!(fake.writes_to("cm/c1/cgroup.procs"), vec!["42", "7"]);
        assert_eq!(cgroup.pids(), vec![7, 42]);
    }

    #[test]
    fn open_finds_the_same_cgroup_without_writing() {
        let fake = FakeCgroup2::new("cpu memory pids");
        let created = create(&fake, "c1", &limits()).unwrap();
        let writes = fake.all_writes().len();
        let opened = Cgroup::open_with(fake.clone(), &fake.layout(), "cm", "c1");
        assert_eq!(opened.paths(), created.paths());
        assert_eq!(opened.procs_files(), created.procs_files());
        assert_eq!(fake.all_writes().len(), writes);
        assert!(fake.path("cm/c1").is_dir());
    }

    #[test]
    fn oom_kills_reads_memory_events() {
        let fake = FakeCgroup2::new("cpu memory pids");
        let cgroup = create(&fake, "c1", &limits()).unwrap();
        assert_eq!(cgroup.oom_kills(), 0);
        fake.set("cm/c1/memory.events", "low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\noom_group_kill 0\n");
        assert_eq!(cgroup.oom_kills(), 2);
        std::fs::remove_file(fake.path("cm/c1/memory.events")).unwrap();
        assert_eq!(cgroup.oom_kills(), 0, "unknown is 0");
    }

    #[test]
    fn kill_all_uses_cgroup_kill_when_present() {
        let fake = FakeCgroup2::new("cpu memory pids");
        let cgroup = create(&fake, "c1", &limits()).unwrap();
        cgroup.add_process(42).unwrap();
        cgroup.kill_all().unwrap();
        assert_eq!(fake.writes_to("cm/c1/cgroup.kill"), vec!["1"]);
        assert!(cgroup.pids().is_empty());
        assert!(fake.killed().is_empty(), "no signal needed: {:?}", fake.killed());
    }

    #[test]
    fn kill_all_signals_each_process_without_cgroup_kill() {
        let fake = FakeCgroup2::new("cpu memory pids");
        fake.without_file("cgroup.kill");
        let cgroup = create(&fake, "c1", &limits()).unwrap();
        cgroup.add_process(42).unwrap();
        cgroup.add_process(43).unwrap();
        cgroup.kill_all().unwrap();
        assert_eq!(fake.killed(), vec![42, 43]);
        assert!(cgroup.pids().is_empty());
    }

    #[test]
    fn kill_all_gives_up_after_a_bounded_time_naming_the_survivors() {
        let fake = FakeCgroup2::new("cpu memory pids");
        fake.without_file("cgroup.kill");
        fake.make_unkillable();
        let cgroup = create(&fake, "c1", &limits()).unwrap();
        cgroup.add_process(42).unwrap();
        let start = std::time::Instant::now();
        let err = cgroup.kill_all().unwrap_err();
        assert!(start.elapsed() < std::time::Duration::from_secs(4));
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("42"), "{err}");
    }

    #[test]
    fn destroy_removes_the_dir_and_the_parent_once_empty() {
        let fake = FakeCgroup2::new("cpu memory pids");
        let c1 = create(&fake, "c1", &limits()).unwrap();
        let c2 = create(&fake, "c2", &limits()).unwrap();
        c1.destroy().unwrap();
        assert!(!fake.path("cm/c1").exists());
        assert!(fake.path("cm/c2").is_dir(), "the parent stays while another container uses it");
        c2.destroy().unwrap();
        assert!(!fake.path("cm").exists());
        c2.destroy().unwrap();
    }

    #[test]
    fn destroy_of_a_busy_cgroup_fails_after_retrying_naming_the_dir_and_processes() {
        let fake = FakeCgroup2::new("cpu memory pids");
        let cgroup = create(&fake, "c1", &limits()).unwrap();
        cgroup.add_process(42).unwrap();
        let err = cgroup.destroy().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ResourceBusy);
        assert!(err.to_string().contains("cm/c1") && err.to_string().contains("42"), "{err}");
        assert!(fake.path("cm/c1").is_dir());
    }
}
