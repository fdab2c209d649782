//! The root filesystem's mount sequence, pinned with the recording [`Recorder`]: no root needed, the
//! directories are made in a temporary directory standing for the container's root.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use super::*;
use crate::runtime::bundle::{Bundle, MountSpec};
use crate::runtime::syscall::HostDevice;
use crate::runtime::syscall::fake::{Call, Recorder};

const NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC).union(MsFlags::MS_NODEV);

fn m(source: Option<&str>, target: &str, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> Call {
    Call::Mount {
        source: source.map(str::to_string),
        target: target.to_string(),
        fstype: fstype.map(str::to_string),
        flags,
        data: data.map(str::to_string),
    }
}

/// A kernel filesystem mounted on a directory inside the root.
fn kernel(source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Call {
    m(Some(source), target, Some(fstype), flags, data)
}

struct Setup {
    dir: tempfile::TempDir,
    bundle: Bundle,
    sys: Recorder,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let merged = dir.path().join("merged");
        std::fs::create_dir(&merged).unwrap();
        let bundle = Bundle::for_tests(dir.path(), &merged);
        let mut sys = Recorder::new(&merged);
        sys.dirs = vec!["/proc/acpi", "/proc/asound", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"];
        Setup { dir, bundle, sys }
    }

    fn run(&self) -> Result<Vec<Call>, InitError> {
        prepare(&self.sys, &self.bundle, None, |_| {
            self.sys.step("console");
            Ok(())
        })?;
        Ok(self.sys.calls())
    }

    fn merged(&self) -> std::path::PathBuf {
        self.dir.path().join("merged")
    }
}

/// Everything from the overlay to the console step, as for a default bundle on cgroup v2.
fn root_and_devices(snapshots: &Path) -> Vec<Call> {
    let mut calls = vec![
        Call::Chdir(snapshots.display().to_string()),
        m(Some("overlay"), "/", Some("overlay"), MsFlags::empty(), Some("lowerdir=1,upperdir=/u,workdir=/w")),
        kernel("proc", "/proc", "proc", NODEV_NOEXEC, None),
        kernel("tmpfs", "/dev", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME, Some("mode=755,size=65536k")),
        kernel(
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
        kernel("shm", "/dev/shm", "tmpfs", NODEV_NOEXEC, Some("mode=1777,size=65536k")),
        kernel("mqueue", "/dev/mqueue", "mqueue", NODEV_NOEXEC, None),
        kernel("sysfs", "/sys", "sysfs", NODEV_NOEXEC | MsFlags::MS_RDONLY, None),
        kernel("cgroup2", "/sys/fs/cgroup", "cgroup2", NODEV_NOEXEC | MsFlags::MS_RDONLY, None),
    ];
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        calls.push(Call::Mknod { name: format!("/dev/{name}"), mode: 0o666, major, minor });
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        calls.push(Call::Symlink { target: target.into(), name: format!("/dev/{name}") });
    }
    calls.push(Call::Step("console"));
    calls
}

/// pivot_root and the masked and read-only paths, after the user's mounts.
fn switch_and_mask() -> Vec<Call> {
    let mut calls = vec![
        Call::Chdir("/".into()),
        Call::PivotRoot { new_root: ".".into(), put_old: ".".into() },
        Call::Umount2 { target: ".".into(), flags: MntFlags::MNT_DETACH },
        Call::Chdir("/".into()),
    ];
    for dir in ["/proc/acpi", "/proc/asound"] {
        calls.push(m(Some("tmpfs"), dir, Some("tmpfs"), MsFlags::MS_RDONLY, None));
    }
    for file in ["/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/sched_debug"] {
        calls.push(m(Some("/dev/null"), file, None, MsFlags::MS_BIND, None));
    }
    calls.push(m(Some("tmpfs"), "/proc/scsi", Some("tmpfs"), MsFlags::MS_RDONLY, None));
    for file in ["/proc/timer_list", "/proc/timer_stats"] {
        calls.push(m(Some("/dev/null"), file, None, MsFlags::MS_BIND, None));
    }
    for dir in ["/sys/firmware", "/sys/devices/virtual/powercap"] {
        calls.push(m(Some("tmpfs"), dir, Some("tmpfs"), MsFlags::MS_RDONLY, None));
    }
    for path in ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"] {
        calls.push(m(Some(path), path, None, MsFlags::MS_BIND | MsFlags::MS_REC, None));
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC;
        calls.push(m(None, path, None, ro, None));
    }
    calls
}

fn private_root() -> Call {
    m(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)
}

#[test]
fn a_default_bundle_mounts_in_runcs_order() {
    let s = Setup::new();
    let mut expected = vec![private_root(), Call::LoopbackUp];
    expected.extend(root_and_devices(s.dir.path()));
    expected.extend(switch_and_mask());
    assert_eq!(s.run().unwrap(), expected);
    // The mount points were made inside the root, not on the host.
    for dir in ["proc", "dev/pts", "dev/shm", "dev/mqueue", "sys/fs/cgroup"] {
        assert!(s.merged().join(dir).is_dir(), "{dir}");
    }
}

#[test]
fn the_host_network_leaves_lo_alone() {
    let mut s = Setup::new();
    s.bundle.host_network = true;
    let mut expected = vec![private_root()];
    expected.extend(root_and_devices(s.dir.path()));
    expected.extend(switch_and_mask());
    assert_eq!(s.run().unwrap(), expected);
}

#[test]
fn the_console_comes_after_the_devices_and_before_the_etc_files() {
    let mut s = Setup::new();
    let hosts = s.dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    s.bundle.etc_files = vec![(hosts.clone(), "/etc/hosts".into())];
    // The image's /etc/hosts is a symlink: it is replaced by an empty file to bind onto.
    std::fs::create_dir(s.merged().join("etc")).unwrap();
    std::os::unix::fs::symlink("/elsewhere", s.merged().join("etc/hosts")).unwrap();
    let calls = s.run().unwrap();
    let console = calls.iter().position(|c| *c == Call::Step("console")).unwrap();
    assert!(matches!(calls[console - 1], Call::Symlink { ref name, .. } if name == "/dev/core"));
    let bind = m(Some(hosts.to_str().unwrap()), "/etc/hosts", None, MsFlags::MS_BIND, None);
    assert_eq!(calls[console + 1], bind);
    assert_eq!(calls[console + 2], Call::Chdir("/".into()));
    assert!(s.merged().join("etc/hosts").symlink_metadata().unwrap().is_file());
}

#[test]
fn user_mounts_come_after_the_etc_files_with_their_flags() {
    let mut s = Setup::new();
    let vol = s.dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let file = s.dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let spec = |kind: &str, source: &Path, target: &str, read_only| MountSpec {
        kind: kind.into(),
        source: source.into(),
        target: target.into(),
        read_only,
    };
    s.bundle.mounts = vec![
        spec("bind", &vol, "/data", false),
        spec("bind", &vol, "/srv/ro", true),
        spec("tmpfs", Path::new(""), "/scratch", true),
        spec("bind", &file, "/etc/app.conf", false),
    ];
    let calls = s.run().unwrap();
    let console = calls.iter().position(|c| *c == Call::Step("console")).unwrap();
    let vol = vol.to_str().unwrap();
    let expected = [
        m(Some(vol), "/data", None, MsFlags::MS_BIND | MsFlags::MS_REC, None),
        m(Some(vol), "/srv/ro", None, MsFlags::MS_BIND | MsFlags::MS_REC, None),
        m(None, "/srv/ro", None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None),
        kernel(
            "tmpfs",
            "/scratch",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
            Some("mode=1777"),
        ),
        m(Some(file.to_str().unwrap()), "/etc/app.conf", None, MsFlags::MS_BIND, None),
    ];
    assert_eq!(calls[console + 1..console + 6], expected[..]);
    assert_eq!(calls[console + 6..], switch_and_mask()[..]);
}

#[test]
fn cgroup_v1_mounts_each_host_hierarchy_under_a_read_only_tmpfs() {
    let mut s = Setup::new();
    s.bundle.cgroup_v2 = false;
    s.sys.mountinfo = "\
32 31 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
"
    .into();
    let calls = s.run().unwrap();
    let ro = NODEV_NOEXEC | MsFlags::MS_RDONLY;
    let expected = [
        kernel("tmpfs", "/sys/fs/cgroup", "tmpfs", NODEV_NOEXEC, Some("mode=755")),
        kernel("cgroup", "/sys/fs/cgroup/memory", "cgroup", ro, Some("memory")),
        kernel("cgroup", "/sys/fs/cgroup/cpu,cpuacct", "cgroup", ro, Some("cpu,cpuacct")),
        m(None, "/sys/fs/cgroup", None, MsFlags::MS_REMOUNT | ro, Some("mode=755")),
    ];
    let sysfs = calls.iter().position(|c| matches!(c, Call::Mount { target, .. } if target == "/sys")).unwrap();
    assert_eq!(calls[sysfs + 1..sysfs + 5], expected[..]);
    assert!(matches!(calls[sysfs + 5], Call::Mknod { .. }));
}

#[test]
fn a_symlink_where_a_kernel_filesystem_goes_is_refused() {
    let s = Setup::new();
    std::os::unix::fs::symlink("/", s.merged().join("proc")).unwrap();
    let err = s.run().err().unwrap();
    assert_eq!(err.code, 125);
    assert!(err.message.contains("/proc is not a directory"), "{}", err.message);
    // Nothing was mounted over the host's /proc.
    assert!(!s.sys.calls().iter().any(|c| matches!(c, Call::Mount { target, .. } if target == "/proc")));
}

#[test]
fn v1_hierarchies_come_from_cgroup_mounts_only() {
    let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    assert_eq!(
        v1_hierarchies(mountinfo),
        vec![
            ("cpu".into(), "cpu".into()),
            ("memory".into(), "memory".into()),
            ("cpu,cpuacct".into(), "cpu,cpuacct".into()),
            ("systemd".into(), "name=systemd".into()),
        ]
    );
}

#[test]
fn a_privileged_bundle_gets_host_devices_a_writable_sys_and_nothing_masked() {
    let mut s = Setup::new();
    s.bundle.privileged = true;
    s.sys.host_devices = vec![
        HostDevice { path: "null".into(), block: false, mode: 0o666, major: 1, minor: 3 },
        HostDevice { path: "vda".into(), block: true, mode: 0o660, major: 254, minor: 0 },
        HostDevice { path: "net/tun".into(), block: false, mode: 0o666, major: 10, minor: 200 },
    ];
    let calls = s.run().unwrap();
    let mut expected = vec![private_root(), Call::LoopbackUp];
    let mut devices = root_and_devices(s.dir.path());
    for call in &mut devices {
        if let Call::Mount { target, flags, .. } = call
            && (target == "/sys" || target == "/sys/fs/cgroup")
        {
            flags.remove(MsFlags::MS_RDONLY);
        }
    }
    let console = devices.pop().unwrap();
    for (name, mode, major, minor) in [("null", 0o666, 1, 3), ("vda", 0o660, 254, 0), ("net/tun", 0o666, 10, 200)] {
        devices.push(Call::Mknod { name: format!("/dev/{name}"), mode, major, minor });
    }
    devices.push(console);
    expected.extend(devices);
    // pivot_root, and then no masked or read-only paths.
    expected.extend(switch_and_mask().into_iter().take(4));
    assert_eq!(calls, expected);
    assert!(s.merged().join("dev/net").is_dir());
}

#[test]
fn a_read_only_root_is_remounted_after_pivot_root_with_its_etc_files_and_workdir_made_first() {
    let mut s = Setup::new();
    s.bundle.read_only_rootfs = true;
    s.bundle.process.cwd = "/work/dir".into();
    let hosts = s.dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    s.bundle.etc_files = vec![(hosts.clone(), "/etc/hosts".into())];
    let calls = s.run().unwrap();
    let console = calls.iter().position(|c| *c == Call::Step("console")).unwrap();
    let ro_bind = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    assert_eq!(calls[console + 1], m(Some(hosts.to_str().unwrap()), "/etc/hosts", None, MsFlags::MS_BIND, None));
    assert_eq!(calls[console + 2], m(None, "/etc/hosts", None, ro_bind, None));
    let pivot = calls.iter().position(|c| matches!(c, Call::PivotRoot { .. })).unwrap();
    assert_eq!(calls[pivot + 3], m(None, "/", None, ro_bind, None));
    // Then the masked paths, as for any container.
    assert_eq!(calls[pivot + 4..], switch_and_mask()[4..]);
    assert!(s.merged().join("work/dir").is_dir());
}

#[test]
fn in_a_user_namespace_the_premounted_root_is_attached_and_host_devices_are_bound() {
    let mut s = Setup::new();
    s.bundle.id_map = Some(crate::runtime::bundle::IdMap { uid: 100000, gid: 100000, size: 65536 });
    let mount = std::fs::File::open(s.dir.path()).unwrap();
    let calls = prepare(&s.sys, &s.bundle, Some(std::os::fd::AsFd::as_fd(&mount)), |_| Ok(())).map(|()| s.sys.calls());
    let calls = calls.unwrap();
    // No overlay mounted here: the monitor's idmapped one is moved onto the root.
    assert_eq!(calls[2], Call::MoveMount("/".into()));
    assert!(!calls.iter().any(|c| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "overlay")));
    // No device node can be made in a user namespace: the host's are bound over empty files.
    assert!(!calls.iter().any(|c| matches!(c, Call::Mknod { .. })));
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = format!("/dev/{name}");
        assert!(calls.contains(&m(Some(&host), &host, None, MsFlags::MS_BIND, None)), "{name}");
        assert!(s.merged().join("dev").join(name).is_file(), "{name}");
    }
}
