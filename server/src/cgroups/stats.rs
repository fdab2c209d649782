//! Resource usage of a container's cgroup, read straight from the interface files (no process is spawned):
//! CPU time and throttling, memory, pids and block I/O, from cgroup v1 (cpuacct, cpu, memory, pids, blkio,
//! cpuset hierarchies) or v2 (cpu.stat, memory.*, pids.*, io.stat).
//!
//! The parsers take file contents, so both layouts are unit-tested on literal text.

use std::io;
use std::path::Path;

use super::Cgroup;

/// A v1 limit at or above this means "unlimited": the kernel reports PAGE_COUNTER_MAX pages in bytes
/// (9223372036854771712 on 64-bit with 4 KiB pages).
const V1_UNLIMITED: u64 = 1 << 62;
/// cpuacct.stat counts USER_HZ ticks, 100 a second on every Linux ABI.
const NANOS_PER_TICK: u64 = 10_000_000;

/// Cumulative resource usage of one cgroup at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu: CpuUsage,
    pub memory: MemoryUsage,
    pub pids: PidsUsage,
    pub io: IoUsage,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuUsage {
    /// CPU time in ns, and its user and system parts.
    pub total_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    /// CFS periods in which the cgroup was throttled, and the time it was throttled.
    pub throttled_periods: u64,
    pub throttled_ns: u64,
    /// CPUs the cgroup may run on.
    pub online_cpus: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    pub usage_bytes: u64,
    /// Usage minus inactive file pages (what the kernel cannot simply drop), as docker and cAdvisor report.
    pub working_set_bytes: u64,
    /// 0 = unlimited.
    pub limit_bytes: u64,
    /// Anonymous memory.
    pub rss_bytes: u64,
    /// Page cache.
    pub cache_bytes: u64,
    pub swap_bytes: u64,
    pub oom_kills: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidsUsage {
    pub current: u64,
    /// 0 = unlimited.
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoUsage {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ops: u64,
    pub write_ops: u64,
}

impl Cgroup {
    /// The cgroup's current usage. Fails (naming the file) when the cgroup's CPU accounting file cannot be read,
    /// which means the cgroup is gone; other files that are missing (a controller this host lacks) read as 0.
    pub fn usage(&self) -> io::Result<Usage> {
        if self.v2 { self.usage_v2() } else { self.usage_v1() }
    }

    fn usage_v2(&self) -> io::Result<Usage> {
        let dir = &self.dirs[0].1;
        let cpu_stat = super::fs::read_file(&dir.join("cpu.stat"))?;
        let mut usage = Usage {
            cpu: v2_cpu(&cpu_stat),
            memory: v2_memory(
                &optional(dir, "memory.current"),
                &optional(dir, "memory.stat"),
                &optional(dir, "memory.max"),
                &optional(dir, "memory.swap.current"),
                &optional(dir, "memory.events"),
            ),
            pids: pids(&optional(dir, "pids.current"), &optional(dir, "pids.max")),
            io: v2_io(&optional(dir, "io.stat")),
        };
        usage.cpu.online_cpus = online_cpus(&optional(dir, "cpuset.cpus.effective"));
        Ok(usage)
    }

    fn usage_v1(&self) -> io::Result<Usage> {
        let missing =
            || super::missing_controller("cpuacct", &self.dirs.first().map(|d| d.1.clone()).unwrap_or_default());
        let cpuacct = self.dir_of("cpuacct").ok_or_else(missing)?;
        let total = super::fs::read_file(&cpuacct.join("cpuacct.usage"))?;
        let mut cpu = v1_cpu(
            &total,
            &optional(cpuacct, "cpuacct.usage_user"),
            &optional(cpuacct, "cpuacct.usage_sys"),
            &optional(cpuacct, "cpuacct.stat"),
        );
        if let Some(dir) = self.dir_of("cpu") {
            v1_throttling(&mut cpu, &optional(dir, "cpu.stat"));
        }
        cpu.online_cpus =
            online_cpus(&self.dir_of("cpuset").map(|d| optional(d, "cpuset.effective_cpus")).unwrap_or_default());
        let memory = self.dir_of("memory").map_or_else(MemoryUsage::default, |dir| {
            v1_memory(
                &optional(dir, "memory.usage_in_bytes"),
                &optional(dir, "memory.stat"),
                &optional(dir, "memory.limit_in_bytes"),
                &optional(dir, "memory.oom_control"),
            )
        });
        let pids = self
            .dir_of("pids")
            .map_or_else(PidsUsage::default, |dir| pids(&optional(dir, "pids.current"), &optional(dir, "pids.max")));
        let io = self.dir_of("blkio").map_or_else(IoUsage::default, |dir| {
            // The throttle layer sees every bio of every device; the BFQ files only devices BFQ schedules.
            let (bytes, ops) = match std::fs::read_to_string(dir.join("blkio.throttle.io_service_bytes_recursive")) {
                Ok(bytes) => (bytes, optional(dir, "blkio.throttle.io_serviced_recursive")),
                Err(_) => (
                    optional(dir, "blkio.bfq.io_service_bytes_recursive"),
                    optional(dir, "blkio.bfq.io_serviced_recursive"),
                ),
            };
            v1_io(&bytes, &ops)
        });
        Ok(Usage { cpu, memory, pids, io })
    }
}

/// A file's contents, or "" when it cannot be read.
fn optional(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

/// A flat-keyed file ("key value" lines) looked up by key; absent keys are 0.
struct Keyed<'a>(Vec<(&'a str, u64)>);

impl<'a> Keyed<'a> {
    fn parse(text: &'a str) -> Self {
        Keyed(
            text.lines()
                .filter_map(|line| {
                    let mut parts = line.split_whitespace();
                    Some((parts.next()?, parts.next()?.parse().ok()?))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> u64 {
        self.0.iter().find(|(k, _)| *k == key).map_or(0, |(_, v)| *v)
    }
}

/// A single number; "max" (v2's unlimited), "" and garbage are 0.
fn number(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

/// CPUs of a cpuset list ("0-3,6"); the host's online CPUs when the list is empty or unreadable.
fn online_cpus(list: &str) -> u32 {
    super::limits::count_cpu_list(list).unwrap_or_else(super::online_cpus) as u32
}

fn pids(current: &str, max: &str) -> PidsUsage {
    PidsUsage { current: number(current), limit: number(max) }
}

/// v2 cpu.stat: microseconds.
fn v2_cpu(cpu_stat: &str) -> CpuUsage {
    let stat = Keyed::parse(cpu_stat);
    CpuUsage {
        total_ns: stat.get("usage_usec") * 1000,
        user_ns: stat.get("user_usec") * 1000,
        system_ns: stat.get("system_usec") * 1000,
        throttled_periods: stat.get("nr_throttled"),
        throttled_ns: stat.get("throttled_usec") * 1000,
        online_cpus: 0,
    }
}

fn v2_memory(current: &str, stat: &str, max: &str, swap: &str, events: &str) -> MemoryUsage {
    let usage_bytes = number(current);
    let stat = Keyed::parse(stat);
    MemoryUsage {
        usage_bytes,
        working_set_bytes: usage_bytes.saturating_sub(stat.get("inactive_file")),
        limit_bytes: number(max),
        rss_bytes: stat.get("anon"),
        cache_bytes: stat.get("file"),
        swap_bytes: number(swap),
        oom_kills: Keyed::parse(events).get("oom_kill"),
    }
}

/// v2 io.stat: one line per device, "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0"; summed.
fn v2_io(io_stat: &str) -> IoUsage {
    let mut io = IoUsage::default();
    for field in io_stat.lines().flat_map(|line| line.split_whitespace().skip(1)) {
        let Some((key, value)) = field.split_once('=') else { continue };
        let value: u64 = value.parse().unwrap_or(0);
        match key {
            "rbytes" => io.read_bytes += value,
            "wbytes" => io.write_bytes += value,
            "rios" => io.read_ops += value,
            "wios" => io.write_ops += value,
            _ => {}
        }
    }
    io
}

/// v1 cpuacct: usage, usage_user and usage_sys in ns (kernel >= 4.7); older kernels only have cpuacct.stat
/// in USER_HZ ticks.
fn v1_cpu(usage: &str, usage_user: &str, usage_sys: &str, stat: &str) -> CpuUsage {
    let (user_ns, system_ns) = if usage_user.trim().is_empty() {
        let stat = Keyed::parse(stat);
        (stat.get("user") * NANOS_PER_TICK, stat.get("system") * NANOS_PER_TICK)
    } else {
        (number(usage_user), number(usage_sys))
    };
    CpuUsage { total_ns: number(usage), user_ns, system_ns, ..CpuUsage::default() }
}

/// v1 cpu.stat: throttled_time is in ns.
fn v1_throttling(cpu: &mut CpuUsage, cpu_stat: &str) {
    let stat = Keyed::parse(cpu_stat);
    cpu.throttled_periods = stat.get("nr_throttled");
    cpu.throttled_ns = stat.get("throttled_time");
}

/// v1 memory: the total_* lines of memory.stat include child cgroups (a container's cgroup has none, but they
/// are what docker reads).
fn v1_memory(usage: &str, stat: &str, limit: &str, oom_control: &str) -> MemoryUsage {
    let usage_bytes = number(usage);
    let stat = Keyed::parse(stat);
    let limit = number(limit);
    MemoryUsage {
        usage_bytes,
        working_set_bytes: usage_bytes.saturating_sub(stat.get("total_inactive_file")),
        limit_bytes: if limit >= V1_UNLIMITED { 0 } else { limit },
        rss_bytes: stat.get("total_rss"),
        cache_bytes: stat.get("total_cache"),
        swap_bytes: stat.get("total_swap"),
        oom_kills: Keyed::parse(oom_control).get("oom_kill"),
    }
}

/// v1 blkio: "8:0 Read 4096" lines per device and operation, then "Total N"; Read and Write summed.
fn v1_io(service_bytes: &str, serviced: &str) -> IoUsage {
    let sum = |text: &str, op: &str| -> u64 {
        text.lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let (_device, kind, value) = (parts.next()?, parts.next()?, parts.next()?);
                (kind == op).then(|| value.parse::<u64>().ok()).flatten()
            })
            .sum()
    };
    IoUsage {
        read_bytes: sum(service_bytes, "Read"),
        write_bytes: sum(service_bytes, "Write"),
        read_ops: sum(serviced, "Read"),
        write_ops: sum(serviced, "Write"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::fake::FakeCgroup2;
    use super::super::fs::HostFs;
    use super::super::{Cgroup, Layout, Limits};
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn v2_usage_is_read_from_cpu_stat_memory_pids_and_io_files() {
        let fake = FakeCgroup2::new("cpu io memory pids");
        let limits = Limits { memory_bytes: Some(64 * MIB), cpu_millis: Some(500), pids: Some(100) };
        let cgroup = Cgroup::create_with(fake.clone(), &fake.layout(), "cm", "c1", &limits).unwrap();
        fake.set(
            "cm/c1/cpu.stat",
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 50\nnr_throttled 7\n\
             throttled_usec 350000\nnr_bursts 0\nburst_usec 0\n",
        );
        fake.set("cm/c1/memory.current", "20971520\n");
        fake.set(
            "cm/c1/memory.stat",
            "anon 10485760\nfile 8388608\nkernel 1048576\nshmem 0\nactive_file 6291456\ninactive_file 2097152\n",
        );
        fake.set("cm/c1/memory.swap.current", "4096\n");
        fake.set("cm/c1/memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n");
        fake.set("cm/c1/pids.current", "4\n");
        fake.set(
            "cm/c1/io.stat",
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
             8:16 rbytes=1000 wbytes=0 rios=3 wios=0 dbytes=0 dios=0\n",
        );
        fake.set("cm/c1/cpuset.cpus.effective", "0-2\n");
        let usage = cgroup.usage().unwrap();
        assert_eq!(
            usage,
            Usage {
                cpu: CpuUsage {
                    total_ns: 2_500_000_000,
                    user_ns: 2_000_000_000,
                    system_ns: 500_000_000,
                    throttled_periods: 7,
                    throttled_ns: 350_000_000,
                    online_cpus: 3,
                },
                memory: MemoryUsage {
                    usage_bytes: 20 * MIB,
                    working_set_bytes: 18 * MIB,
                    limit_bytes: 64 * MIB,
                    rss_bytes: 10 * MIB,
                    cache_bytes: 8 * MIB,
                    swap_bytes: 4096,
                    oom_kills: 1,
                },
                pids: PidsUsage { current: 4, limit: 100 },
                io: IoUsage { read_bytes: 5096, write_bytes: 8192, read_ops: 4, write_ops: 2 },
            }
        );
    }

    #[test]
    fn v2_unlimited_memory_and_pids_read_as_zero_and_missing_files_as_nothing() {
        let fake = FakeCgroup2::new("cpu memory pids");
        let cgroup = Cgroup::create_with(fake.clone(), &fake.layout(), "cm", "c1", &Limits::default()).unwrap();
        fake.set("cm/c1/cpu.stat", "usage_usec 10\nuser_usec 6\nsystem_usec 4\n");
        let usage = cgroup.usage().unwrap();
        assert_eq!(usage.memory.limit_bytes, 0, "memory.max says max");
        assert_eq!(usage.pids.limit, 0, "pids.max says max");
        assert_eq!(usage.io, IoUsage::default(), "no io controller: no io.stat");
        assert_eq!(usage.cpu.total_ns, 10_000);
        assert_eq!(usage.cpu.online_cpus as u64, super::super::online_cpus(), "no cpuset: the host's CPUs");
    }

    #[test]
    fn usage_of_a_removed_cgroup_fails_naming_the_file() {
        let fake = FakeCgroup2::new("cpu memory pids");
        let cgroup = Cgroup::open_with(fake.clone(), &fake.layout(), "cm", "gone");
        let err = cgroup.usage().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("cm/gone/cpu.stat"), "{err}");
    }

    /// A v1 tree as a hybrid host mounts it (cpu and cpuacct apart, as here), files written by hand.
    fn fake_v1() -> (tempfile::TempDir, Cgroup) {
        let root = tempfile::tempdir().unwrap();
        for controller in ["memory", "cpu", "cpuacct", "pids", "cpuset", "blkio"] {
            std::fs::create_dir_all(root.path().join(controller).join("cm/c1")).unwrap();
            std::fs::write(root.path().join(controller).join("cgroup.procs"), "1\n").unwrap();
        }
        let layout = Layout::V1 { root: root.path().to_path_buf() };
        let cgroup = Cgroup::open_with(Arc::new(HostFs), &layout, "cm", "c1");
        (root, cgroup)
    }

    fn set(root: &tempfile::TempDir, file: &str, content: &str) {
        std::fs::write(root.path().join(file), content).unwrap();
    }

    #[test]
    fn v1_usage_is_read_from_each_controllers_hierarchy() {
        let (root, cgroup) = fake_v1();
        set(&root, "cpuacct/cm/c1/cpuacct.usage", "3000000000\n");
        set(&root, "cpuacct/cm/c1/cpuacct.usage_user", "2000000000\n");
        set(&root, "cpuacct/cm/c1/cpuacct.usage_sys", "1000000000\n");
        set(&root, "cpu/cm/c1/cpu.stat", "nr_periods 30\nnr_throttled 12\nthrottled_time 456000000\n");
        set(&root, "cpuset/cm/c1/cpuset.effective_cpus", "0-1\n");
        set(&root, "memory/cm/c1/memory.usage_in_bytes", "31457280\n");
        set(
            &root,
            "memory/cm/c1/memory.stat",
            "cache 1\nrss 2\ninactive_file 3\ntotal_cache 8388608\ntotal_rss 20971520\ntotal_swap 8192\n\
             total_inactive_file 4194304\ntotal_active_file 4194304\n",
        );
        set(&root, "memory/cm/c1/memory.limit_in_bytes", "67108864\n");
        set(&root, "memory/cm/c1/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
        set(&root, "pids/cm/c1/pids.current", "5\n");
        set(&root, "pids/cm/c1/pids.max", "max\n");
        set(
            &root,
            "blkio/cm/c1/blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 4096\n8:0 Write 12288\n8:0 Sync 0\n8:0 Async 16384\n8:0 Discard 0\n8:0 Total 16384\n\
             8:16 Read 100\n8:16 Write 0\nTotal 16484\n",
        );
        set(
            &root,
            "blkio/cm/c1/blkio.throttle.io_serviced_recursive",
            "8:0 Read 1\n8:0 Write 3\n8:0 Total 4\n8:16 Read 1\nTotal 5\n",
        );
        let usage = cgroup.usage().unwrap();
        assert_eq!(
            usage,
            Usage {
                cpu: CpuUsage {
                    total_ns: 3_000_000_000,
                    user_ns: 2_000_000_000,
                    system_ns: 1_000_000_000,
                    throttled_periods: 12,
                    throttled_ns: 456_000_000,
                    online_cpus: 2,
                },
                memory: MemoryUsage {
                    usage_bytes: 30 * MIB,
                    working_set_bytes: 26 * MIB,
                    limit_bytes: 64 * MIB,
                    rss_bytes: 20 * MIB,
                    cache_bytes: 8 * MIB,
                    swap_bytes: 8192,
                    oom_kills: 2,
                },
                pids: PidsUsage { current: 5, limit: 0 },
                io: IoUsage { read_bytes: 4196, write_bytes: 12288, read_ops: 2, write_ops: 3 },
            }
        );
    }

    #[test]
    fn v1_unlimited_memory_reads_as_zero_and_old_kernels_give_cpu_ticks() {
        let (root, cgroup) = fake_v1();
        set(&root, "cpuacct/cm/c1/cpuacct.usage", "5000000000\n");
        set(&root, "cpuacct/cm/c1/cpuacct.stat", "user 300\nsystem 150\n");
        set(&root, "memory/cm/c1/memory.limit_in_bytes", "9223372036854771712\n");
        let usage = cgroup.usage().unwrap();
        assert_eq!(usage.memory.limit_bytes, 0);
        assert_eq!((usage.cpu.user_ns, usage.cpu.system_ns), (3_000_000_000, 1_500_000_000));
    }

    #[test]
    fn v1_block_io_falls_back_to_bfq_without_the_throttle_files() {
        let (root, cgroup) = fake_v1();
        set(&root, "cpuacct/cm/c1/cpuacct.usage", "1\n");
        set(&root, "blkio/cm/c1/blkio.bfq.io_service_bytes_recursive", "8:0 Read 512\n8:0 Write 1024\nTotal 1536\n");
        set(&root, "blkio/cm/c1/blkio.bfq.io_serviced_recursive", "8:0 Read 1\n8:0 Write 2\nTotal 3\n");
        let io = cgroup.usage().unwrap().io;
        assert_eq!(io, IoUsage { read_bytes: 512, write_bytes: 1024, read_ops: 1, write_ops: 2 });
    }

    #[test]
    fn v1_usage_of_a_removed_cgroup_fails_naming_the_file() {
        let (root, cgroup) = fake_v1();
        std::fs::remove_dir_all(root.path().join("cpuacct/cm/c1")).unwrap();
        let err = cgroup.usage().unwrap_err();
        assert!(err.to_string().contains("cpuacct.usage"), "{err}");
    }

    /// On a v1 host: a real cgroup with this test process's child in it reports its CPU time and pids.
    #[test]
    fn usage_of_a_real_cgroup_counts_its_process() {
        let Ok(layout) = Layout::detect() else {
            println!("note: skipping: no cgroups here");
            return;
        };
        if nix::unistd::geteuid().as_raw() != 0 {
            println!("note: skipping: needs root to make a cgroup");
            return;
        }
        let parent = format!("cm-test-{}-usage", std::process::id());
        let limits = Limits { memory_bytes: Some(64 * MIB), cpu_millis: None, pids: Some(10) };
        let cgroup = Cgroup::create(&layout, &parent, "c1", &limits).unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done")
            .spawn()
            .unwrap();
        let added = cgroup.add_process(child.id() as i32);
        let usage = cgroup.usage();
        let _ = child.wait();
        let after = cgroup.usage();
        let _ = cgroup.kill_all();
        let _ = cgroup.destroy();
        added.unwrap();
        let (usage, after) = (usage.unwrap(), after.unwrap());
        assert_eq!(usage.pids.current, 1, "{usage:?}");
        assert_eq!(usage.pids.limit, 10);
        assert_eq!(usage.memory.limit_bytes, 64 * MIB);
        assert!(after.cpu.total_ns > usage.cpu.total_ns, "{usage:?} then {after:?}");
        assert!(after.cpu.online_cpus >= 1);
    }
}
