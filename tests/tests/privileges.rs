//! End to end (#11): what a container may do, through cm-client: --cap-add and --cap-drop (CapEff and CapBnd in
//! /proc/self/status), bad capability names, --privileged (host devices, writable /proc/sys, every
//! capability), --read-only (writes to / refused, /dev and mounts still writable) and --userns auto (a
//! non-identity uid_map, container root's files owned by the mapped host ids, ranges given back at removal).
//! One registry, one busybox image and one shared server; the suite checks that nothing is left.

use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use cm_e2e::harness::*;
use cm_e2e::trials;
use libtest_mimic::Arguments;

struct World {
    _registry: cm_e2e::Registry,
    server: TestServer,
    image: String,
}

fn setup() -> Result<World> {
    let (registry, server, image) = busybox_registry_and_server(&[])?;
    Ok(World { _registry: registry, server, image })
}

fn main() {
    let mut args = Arguments::from_args();
    args.test_threads = args.test_threads.or(Some(2));
    let world = Arc::new(setup().expect("setting up the registry, the image and the server"));
    let trials = trials![world;
        cap_add_and_cap_drop_change_the_effective_and_bounding_sets,
        unknown_capability_names_are_refused_naming_them,
        privileged_containers_get_host_devices_every_capability_and_a_writable_proc_sys,
        a_read_only_root_refuses_writes_but_dev_and_mounts_stay_writable,
        userns_auto_maps_container_root_to_its_own_unprivileged_host_range,
    ];
    run_suite(&args, trials, world, |w| &w.server);
}

/// Docker's default capability set (see server/src/runtime/bundle.rs), less MKNOD where cgroup v2 is used.
fn default_caps() -> u64 {
    let caps = 0xa804_25fb_u64;
    if cgroup_v2() { caps & !(1 << 27) } else { caps }
}

/// The (CapEff, CapBnd) lines a container started with `flags` shows for its main process.
fn caps_of(w: &World, flags: &[&str]) -> Result<(u64, u64)> {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[w.image.as_str(), "grep", "-E", "^Cap(Eff|Bnd)", "/proc/self/status"]);
    let out = w.server.cli_ok(&args)?;
    let field = |name: &str| -> Result<u64> {
        let line = out.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in {out:?}"))?;
        Ok(u64::from_str_radix(line.split_whitespace().nth(1).unwrap_or(""), 16)?)
    };
    Ok((field("CapEff:")?, field("CapBnd:")?))
}

fn cap_add_and_cap_drop_change_the_effective_and_bounding_sets(w: &World) -> Result<()> {
    let net_admin = 1 << 12;
    let both = |caps: u64| (caps, caps);
    ensure!(caps_of(w, &[])? == both(default_caps()), "default set: {:x?}", caps_of(w, &[])?);
    let added = caps_of(w, &["--cap-add", "NET_ADMIN"])?;
    ensure!(added == both(default_caps() | net_admin), "--cap-add NET_ADMIN: {added:x?}");
    // NET_ADMIN really works: the container may add an address to its own loopback.
    w.server.cli_ok(&[
        "run",
        "--rm",
        "--cap-add",
        "cap_net_admin",
        &w.image,
        "ip",
        "addr",
        "add",
        "10.1.2.3/32",
        "dev",
        "lo",
    ])?;
    let refused = w.server.cli(&["run", "--rm", &w.image, "ip", "addr", "add", "10.1.2.3/32", "dev", "lo"])?;
    ensure!(!refused.status.success(), "without NET_ADMIN ip addr add worked: {}", summary(&refused));
    let none = caps_of(w, &["--cap-drop", "ALL"])?;
    ensure!(none == (0, 0), "--cap-drop ALL: {none:x?}");
    let chown = caps_of(w, &["--cap-drop", "CHOWN"])?;
    ensure!(chown == both(default_caps() & !1), "--cap-drop CHOWN: {chown:x?}");
    let out = w.server.cli(&["run", "--rm", "--cap-drop", "CHOWN", &w.image, "chown", "1:1", "/tmp"])?;
    ensure!(!out.status.success(), "chown worked without CAP_CHOWN: {}", summary(&out));
    let only = caps_of(w, &["--cap-drop", "all", "--cap-add", "KILL"])?;
    ensure!(only == both(1 << 5), "--cap-drop ALL --cap-add KILL: {only:x?}");
    Ok(())
}

fn unknown_capability_names_are_refused_naming_them(w: &World) -> Result<()> {
    for flag in ["--cap-add", "--cap-drop"] {
        let out = w.server.cli(&["run", "--rm", flag, "NET_ADMIN", flag, "CAP_FLY", &w.image, "true"])?;
        ensure!(out.status.code() == Some(125), "{flag} CAP_FLY: {}", summary(&out));
        let err = stderr(&out);
        ensure!(err.contains("unknown capability \"CAP_FLY\"") && err.contains(&flag[2..].replace('-', "_")), "{err}");
    }
    let name = unique("refused");
    let out = w.server.cli(&["run", "--rm", "--name", &name, "--privileged", "--userns", "auto", &w.image, "true"])?;
    ensure!(out.status.code() == Some(125) && stderr(&out).contains("privileged"), "{}", summary(&out));
    let inspect = w.server.cli(&["inspect", &name])?;
    ensure!(!inspect.status.success(), "a refused container was created: {}", summary(&inspect));
    Ok(())
}

/// A device node of the host's /dev that containers do not get by default.
fn a_host_device() -> Result<String> {
    use std::os::unix::fs::FileTypeExt;
    let defaults = ["null", "zero", "full", "random", "urandom", "tty", "console", "ptmx"];
    for entry in std::fs::read_dir("/dev")?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type()?;
        if (kind.is_char_device() || kind.is_block_device()) && !defaults.contains(&name.as_str()) {
            return Ok(name);
        }
    }
    anyhow::bail!("the host has no device node but the defaults")
}

fn privileged_containers_get_host_devices_every_capability_and_a_writable_proc_sys(w: &World) -> Result<()> {
    let device = format!("/dev/{}", a_host_device()?);
    let seen = w.server.cli(&["run", "--rm", &w.image, "test", "-e", &device])?;
    ensure!(seen.status.code() == Some(1), "an unprivileged container has {device}: {}", summary(&seen));
    w.server.cli_ok(&["run", "--rm", "--privileged", &w.image, "test", "-e", &device])?;
    // /proc/sys is writable (the UTS namespace's own hostname, so the host is untouched) and not masked.
    let script = "echo renamed > /proc/sys/kernel/hostname && hostname && cat /proc/keys > /dev/null && echo keys";
    let out = w.server.cli_ok(&["run", "--rm", "--privileged", &w.image, "sh", "-c", script])?;
    ensure!(out == "renamed\nkeys\n", "privileged: {out:?}");
    let out = w.server.cli(&["run", "--rm", &w.image, "sh", "-c", "echo renamed > /proc/sys/kernel/hostname"])?;
    ensure!(!out.status.success() && stderr(&out).contains("Read-only"), "unprivileged: {}", summary(&out));
    // Every capability the server holds (this machine's test runs lack CAP_SYS_RESOURCE): ours.
    let status = std::fs::read_to_string("/proc/self/status")?;
    let ours = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).context("no CapBnd")?;
    let all = u64::from_str_radix(ours.trim(), 16)?;
    let caps = caps_of(w, &["--privileged"])?;
    ensure!(caps == (all, all), "privileged caps {caps:x?}, want {all:x}");
    // /sys is writable too (a mount's read-only flag shows in /proc/mounts).
    let mounts = w.server.cli_ok(&["run", "--rm", "--privileged", &w.image, "grep", " /sys sysfs ", "/proc/mounts"])?;
    ensure!(mounts.contains(" rw,"), "privileged /sys: {mounts}");
    Ok(())
}

fn a_read_only_root_refuses_writes_but_dev_and_mounts_stay_writable(w: &World) -> Result<()> {
    let ro = |script: &str, extra: &[&str]| {
        let mut args = vec!["run", "--rm", "--read-only"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[w.image.as_str(), "sh", "-c", script]);
        w.server.cli(&args)
    };
    for path in ["/x", "/tmp/x", "/etc/x", "/etc/hosts"] {
        let out = ro(&format!("echo x >> {path}"), &[])?;
        ensure!(!out.status.success() && stderr(&out).contains("Read-only"), "{path}: {}", summary(&out));
    }
    // As docker: /dev, /dev/shm and the user's mounts keep their own modes; a tmpfs /tmp only when asked.
    let out = ro("touch /dev/x /dev/shm/x /tmp/x && echo ok > /dev/null && echo ok", &["--tmpfs", "/tmp"])?;
    ensure!(out.status.success() && stdout(&out) == "ok\n", "{}", summary(&out));
    // The working directory is made before the root turns read-only.
    let out = ro("pwd", &["-w", "/new/dir"])?;
    ensure!(out.status.success() && stdout(&out) == "/new/dir\n", "{}", summary(&out));
    let out = w.server.cli_ok(&["run", "--rm", &w.image, "sh", "-c", "touch /x && echo writable"])?;
    ensure!(out == "writable\n", "without --read-only: {out:?}");
    Ok(())
}

/// Subordinate ids for the server's id user (`cm`) in /etc/subuid and /etc/subgid while it lives; the files
/// are put back as they were when it is dropped.
struct SubIds {
    saved: Vec<(&'static str, Option<String>)>,
}

impl SubIds {
    fn add(line: &str) -> Result<SubIds> {
        let mut saved = Vec::new();
        for file in ["/etc/subuid", "/etc/subgid"] {
            let before = std::fs::read_to_string(file).ok();
            saved.push((file, before.clone()));
            let mut text = before.unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(line);
            text.push('\n');
            std::fs::write(file, text)?;
        }
        Ok(SubIds { saved })
    }
}

impl Drop for SubIds {
    fn drop(&mut self) {
        for (file, before) in &self.saved {
            let _ = match before {
                Some(text) => std::fs::write(file, text),
                None => std::fs::remove_file(file),
            };
        }
    }
}

fn userns_auto_maps_container_root_to_its_own_unprivileged_host_range(w: &World) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let without = w.server.cli(&["run", "--rm", "--userns", "auto", &w.image, "true"])?;
    let no_ids = !std::fs::read_to_string("/etc/subuid").unwrap_or_default().lines().any(|l| l.starts_with("cm:"));
    if no_ids {
        ensure!(
            without.status.code() == Some(125) && stderr(&without).contains("/etc/subuid"),
            "without subordinate ids: {}",
            summary(&without)
        );
    }
    let (start, count) = (1_200_000_000u32, 2 * 65536u32);
    let _ids = SubIds::add(&format!("cm:{start}:{count}"))?;
    let data = tempfile::tempdir()?;
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o777))?;
    let volume = format!("{}:/data", data.path().display());
    let script = "cat /proc/self/uid_map /proc/self/gid_map; id -u; stat -c %u:%g /; touch /data/made; touch /etc/x";
    let first = w.server.run_detached(&[
        "--userns",
        "auto",
        "-v",
        &volume,
        &w.image,
        "sh",
        "-c",
        &format!("{script}; sleep 30"),
    ])?;
    let second = w.server.run_detached(&["--userns", "auto", &w.image, "sleep", "30"])?;
    let result = (|| -> Result<()> {
        let out = eventually_output(w, &first)?;
        let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
        ensure!(lines.len() >= 4, "{out:?}");
        // Container ids 0-65535 are 65536 host ids from the range, neither identity nor root.
        let (uid, gid) = (lines[0][1].parse::<u32>()?, lines[1][1].parse::<u32>()?);
        ensure!(lines[0][0] == "0" && lines[0][2] == "65536" && lines[1][2] == "65536", "maps: {out:?}");
        ensure!((start..start + count).contains(&uid) && (start..start + count).contains(&gid), "maps: {out:?}");
        ensure!(lines[2] == ["0"] && lines[3] == ["0:0"], "root inside, and / is root's: {out:?}");
        // What container root makes on a bind mount is the mapped host id's.
        let made = std::fs::metadata(data.path().join("made"))?;
        ensure!((made.uid(), made.gid()) == (uid, gid), "host owner {}:{} want {uid}:{gid}", made.uid(), made.gid());
        // The image's files are untouched on the host (idmapped, not chowned); the upper dir is the mapped root's.
        let upper = std::fs::metadata(w.server.container_dir(&first).join("upper/etc/x"))?;
        ensure!(upper.uid() == uid, "a file made in the root is host uid {}", upper.uid());
        // The second container has a range of its own.
        let other = w.server.cli_ok(&["exec", &second, "cat", "/proc/self/uid_map"])?;
        let other_uid: u32 = other.split_whitespace().nth(1).context("uid_map")?.parse()?;
        ensure!(other_uid.abs_diff(uid) >= 65536, "overlapping ranges {uid} and {other_uid}");
        // The host sees the container's processes as the mapped ids.
        let pid = w.server.inspect(&second)?["State"]["Pid"].as_i64().context("pid")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let host_uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).context("Uid")?;
        ensure!(host_uid.split_whitespace().all(|u| u == other_uid.to_string()), "host view: {host_uid}");
        // Exec joins the user namespace too.
        let exec = w.server.cli_ok(&["exec", &first, "sh", "-c", "id -u; cat /proc/self/uid_map"])?;
        ensure!(exec.starts_with("0\n") && exec.contains(&uid.to_string()), "exec: {exec:?}");
        // Removing the containers gives their ranges back: a new one starts where the first was.
        w.server.cli_ok(&["rm", "-f", &first, &second])?;
        let again = w.server.cli_ok(&["run", "--rm", "--userns", "auto", &w.image, "cat", "/proc/self/uid_map"])?;
        let again_uid: u32 = again.split_whitespace().nth(1).context("uid_map")?.parse()?;
        ensure!(again_uid == uid.min(other_uid), "after removal got {again_uid}, want {}", uid.min(other_uid));
        for id in [&first, &second] {
            let left = w.server.remains_of(id);
            ensure!(left.is_empty(), "left of {id}: {left:?}");
        }
        Ok(())
    })();
    let _ = w.server.cli(&["rm", "-f", &first, &second]);
    result
}

/// The logs of a detached container once its script printed its four lines.
fn eventually_output(w: &World, id: &str) -> Result<String> {
    let mut out = String::new();
    eventually("the container's output", std::time::Duration::from_secs(10), || {
        out = w.server.cli_ok(&["logs", id])?;
        Ok(out.lines().count() >= 4)
    })?;
    Ok(out)
}
