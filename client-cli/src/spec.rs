//! `run` and `create` flags into a ContainerSpec, and the process flags `exec` shares with them. The values are
//! checked by the parsers in parse.rs while clap reads the flags.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use cm_api::v1 as pb;

use crate::parse::{self, Network, Published, Userns};

/// The flags that shape a process, shared by `run`, `create` and `exec` (flattened into each; `exec` rewords the
/// help of -u and -w, whose defaults are the container's there).
#[derive(clap::Args, Debug)]
pub struct ProcessOptions {
    /// Set an environment variable; KEY alone takes its value from this shell (skipped when unset).
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Read environment variables from a file of KEY=VALUE lines (# comments).
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container (absolute).
    #[arg(short, long, value_name = "DIR", value_parser = parse::parse_workdir)]
    pub workdir: Option<String>,
    /// User to run as: name or uid, optionally :group or :gid.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
}

/// What `run` and `create` turn into a ContainerSpec.
#[derive(clap::Args, Debug)]
pub struct ContainerOptions {
    /// Keep stdin open (and attached, for run).
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Name the container.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub process: ProcessOptions,
    /// Override the image's entrypoint ("" clears it).
    #[arg(long, value_name = "COMMAND")]
    pub entrypoint: Option<String>,
    /// Container host name (default: the first 12 characters of the id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Memory limit: a number of bytes with an optional unit b, k, m or g (1024-based), e.g. 256m.
    #[arg(short, long, value_name = "BYTES", value_parser = cm_api::units::parse_memory)]
    pub memory: Option<u64>,
    /// Number of CPUs, e.g. 0.5 or 2.
    #[arg(long, value_name = "DECIMAL", value_parser = cm_api::units::parse_cpus)]
    pub cpus: Option<u64>,
    /// Maximum number of processes (-1 for no limit).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// Network mode.
    #[arg(long, value_enum, default_value_t = Network::Bridge)]
    pub network: Network,
    /// Publish a container port on the host; ranges like 8000-8001:80-81 publish each port.
    #[arg(
        short,
        long,
        value_name = "[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]",
        value_parser = parse::parse_publish
    )]
    pub publish: Vec<Published>,
    /// Bind mount a host directory or file.
    #[arg(short, long, value_name = "HOST_PATH:CONTAINER_PATH[:ro]", value_parser = parse::parse_volume)]
    pub volume: Vec<pb::Mount>,
    /// Mount an empty tmpfs.
    #[arg(long, value_name = "PATH[:ro]", value_parser = parse::parse_tmpfs)]
    pub tmpfs: Vec<pb::Mount>,
    /// Set a label.
    #[arg(short, long, value_name = "KEY[=VALUE]", value_parser = parse::parse_label)]
    pub label: Vec<(String, String)>,
    /// Signal that stops the container, e.g. SIGINT (default: the image's, or SIGTERM).
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// Security options: seccomp=unconfined (no seccomp filter), seccomp=PROFILE.json (a profile in docker's
    /// format, read here; default: docker's profile), no-new-privileges.
    #[arg(long, value_name = "OPTION")]
    pub security_opt: Vec<String>,
    /// Add a capability to the default set (NET_ADMIN, CAP_NET_ADMIN, ALL).
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability from the default set (ALL drops every one but those added).
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Every capability and host device, writable /sys and /proc/sys, nothing masked.
    #[arg(long)]
    pub privileged: bool,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// User namespace: host, or auto (its own range of unprivileged host ids).
    #[arg(long, value_enum, value_name = "MODE")]
    pub userns: Option<Userns>,
    /// Image reference or id, then the command and its arguments, which override the image's Cmd (everything
    /// after IMAGE is the command's, flags included).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_names = ["IMAGE", "COMMAND"])]
    pub image_and_command: Vec<String>,
}

/// Builds the spec; `lookup` reads the client's environment (for `-e KEY` and bare KEY lines in env files).
pub fn build(o: ContainerOptions, lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<pb::ContainerSpec> {
    let env = o.process.env(lookup)?;
    let security = security_options(&o.security_opt, |path| {
        std::fs::read_to_string(path).with_context(|| format!("reading seccomp profile {path}"))
    })?;
    let mut mounts = o.volume;
    mounts.extend(o.tmpfs);
    let mut image_and_command = o.image_and_command.into_iter();
    let image = image_and_command.next().context("an image is required")?;
    Ok(pb::ContainerSpec {
        image,
        name: o.name.unwrap_or_default(),
        entrypoint_set: o.entrypoint.is_some(),
        // `--entrypoint ""` clears the image's entrypoint; any other value is one program, not split.
        entrypoint: o.entrypoint.into_iter().filter(|e| !e.is_empty()).collect(),
        command: image_and_command.collect(),
        env,
        workdir: o.process.workdir.unwrap_or_default(),
        user: o.process.user.unwrap_or_default(),
        hostname: o.hostname.unwrap_or_default(),
        tty: o.tty,
        stdin: o.interactive,
        resources: Some(pb::Resources {
            memory_bytes: o.memory.map_or(0, |m| m as i64),
            cpu_millis: o.cpus.map_or(0, |c| c as i64),
            // Docker's -1 (and 0) mean no limit; so does 0 in the API.
            pids_limit: o.pids_limit.unwrap_or(0).max(0),
        }),
        network: pb::NetworkMode::from(o.network).into(),
        ports: o.publish.into_iter().flat_map(|p| p.0).collect(),
        mounts,
        auto_remove: o.rm,
        labels: o.label.into_iter().collect::<HashMap<_, _>>(),
        stop_signal: o.stop_signal.unwrap_or_default(),
        security: Some(security),
        cap_add: o.cap_add,
        cap_drop: o.cap_drop,
        privileged: o.privileged,
        read_only_rootfs: o.read_only,
        userns: o.userns.map_or(pb::UserNamespaceMode::Unspecified, pb::UserNamespaceMode::from).into(),
    })
}

/// `--security-opt` values as docker takes them (KEY=VALUE or the older KEY:VALUE); `read` reads a profile.
pub fn security_options(
    options: &[String],
    read: impl Fn(&str) -> anyhow::Result<String>,
) -> anyhow::Result<pb::SecurityOptions> {
    let mut security = pb::SecurityOptions::default();
    for option in options {
        let (key, value) = match option.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (option.as_str(), None),
        };
        match (key, value) {
            ("seccomp", Some("unconfined")) => {
                security.seccomp_unconfined = true;
                security.seccomp_profile.clear();
            }
            ("seccomp", Some(path)) if !path.is_empty() => {
                security.seccomp_profile = read(path)?;
                security.seccomp_unconfined = false;
            }
            ("no-new-privileges", None | Some("true")) => security.no_new_privileges = true,
            ("no-new-privileges", Some("false")) => security.no_new_privileges = false,
            _ => anyhow::bail!(
                "--security-opt {option:?}: expected seccomp=unconfined, seccomp=PROFILE.json or no-new-privileges"
            ),
        }
    }
    Ok(security)
}

impl ProcessOptions {
    /// `--env-file` and `-e` into "KEY=VALUE" entries; `lookup` reads the client's environment.
    pub fn env(&self, lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Vec<String>> {
        // As docker: the files first, then -e, so a flag overrides a file.
        let mut env = Vec::new();
        for path in &self.env_file {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading env file {}", path.display()))?;
            env.extend(parse::parse_env_file(&text, &lookup).with_context(|| format!("env file {}", path.display()))?);
        }
        for entry in &self.env {
            env.extend(parse::parse_env(entry, &lookup)?);
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn mapping(host_ip: &str, host_port: u32, container_port: u32, protocol: &str) -> pb::PortMapping {
        pb::PortMapping { host_ip: host_ip.into(), host_port, container_port, protocol: protocol.into() }
    }

    /// The container flags as `run` and `create` read them.
    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        container: ContainerOptions,
    }

    /// The spec `cm-client run ARGS` would send, with a fixed client environment.
    fn run_spec(args: &[&str]) -> pb::ContainerSpec {
        let run = Run::try_parse_from(["run"].iter().chain(args)).unwrap();
        build(run.container, |key| (key == "HOME").then(|| "/home/me".to_string())).unwrap()
    }

    #[test]
    fn run_flags_build_the_spec() {
        let spec = run_spec(&[
            "-it",
            "--rm",
            "--name",
            "web",
            "-e",
            "A=1",
            "-e",
            "HOME",
            "-e",
            "UNSET",
            "-w",
            "/srv",
            "-u",
            "1000:1000",
            "--hostname",
            "box",
            "-m",
            "256m",
            "--cpus",
            "1.5",
            "--pids-limit",
            "100",
            "--network",
            "none",
            "-p",
            "8080:80",
            "-v",
            "/src:/dst:ro",
            "--tmpfs",
            "/run",
            "-l",
            "a=b",
            "-l",
            "flag",
            "--stop-signal",
            "SIGINT",
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "kill",
            "--read-only",
            "--userns",
            "auto",
            "alpine",
            "sh",
            "-c",
            "echo hi",
        ]);
        assert_eq!(spec.image, "alpine");
        assert_eq!(spec.name, "web");
        assert_eq!(spec.command, ["sh", "-c", "echo hi"]);
        assert!(!spec.entrypoint_set && spec.entrypoint.is_empty());
        assert_eq!(spec.env, ["A=1", "HOME=/home/me"]);
        assert_eq!((spec.workdir.as_str(), spec.user.as_str(), spec.hostname.as_str()), ("/srv", "1000:1000", "box"));
        assert!(spec.tty && spec.stdin && spec.auto_remove);
        assert_eq!(spec.resources, Some(pb::Resources { memory_bytes: 256 << 20, cpu_millis: 1500, pids_limit: 100 }));
        assert_eq!(spec.network, pb::NetworkMode::None as i32);
        assert_eq!(spec.ports, [mapping("", 8080, 80, "tcp")]);
        assert_eq!(spec.mounts.iter().map(|m| m.r#type.as_str()).collect::<Vec<_>>(), ["bind", "tmpfs"]);
        assert_eq!(spec.labels, HashMap::from([("a".into(), "b".into()), ("flag".into(), String::new())]));
        assert_eq!(spec.stop_signal, "SIGINT");
        assert_eq!((spec.cap_add, spec.cap_drop), (vec!["NET_ADMIN".into(), "kill".into()], vec!["ALL".into()]));
        assert!(spec.read_only_rootfs && !spec.privileged);
        assert_eq!(spec.userns, pb::UserNamespaceMode::Auto as i32);
    }

    #[test]
    fn security_options_as_docker_takes_them() {
        let read = |path: &str| Ok(format!("profile of {path}"));
        let opts = |o: &[&str]| security_options(&o.iter().map(|s| s.to_string()).collect::<Vec<_>>(), read);
        assert_eq!(opts(&[]).unwrap(), pb::SecurityOptions::default());
        let s = opts(&["seccomp=unconfined", "no-new-privileges"]).unwrap();
        assert!(s.seccomp_unconfined && s.no_new_privileges && s.seccomp_profile.is_empty());
        let s = opts(&["seccomp:/p.json", "no-new-privileges:true"]).unwrap();
        assert_eq!(s.seccomp_profile, "profile of /p.json");
        assert!(!s.seccomp_unconfined && s.no_new_privileges);
        assert!(!opts(&["no-new-privileges=true", "no-new-privileges=false"]).unwrap().no_new_privileges);
        for bad in ["apparmor=x", "seccomp", "seccomp=", "no-new-privileges=maybe"] {
            let e = opts(&[bad]).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("seccomp=unconfined"), "{bad}: {e}");
        }
        let spec = run_spec(&["--security-opt", "seccomp=unconfined", "alpine"]);
        assert!(spec.security.unwrap().seccomp_unconfined);
    }

    #[test]
    fn run_defaults_to_the_bridge_and_the_images_command() {
        let spec = run_spec(&["alpine"]);
        assert_eq!(spec.network, pb::NetworkMode::Bridge as i32);
        assert!(spec.command.is_empty() && !spec.entrypoint_set && !spec.tty && !spec.stdin);
        assert_eq!(spec.resources, Some(pb::Resources::default()));
    }

    #[test]
    fn arguments_after_the_image_belong_to_the_command() {
        assert_eq!(run_spec(&["alpine", "ls", "-l", "--name", "x"]).command, ["ls", "-l", "--name", "x"]);
        let spec = run_spec(&["--name", "n", "alpine", "-e", "A=1"]);
        assert_eq!(
            (spec.name.as_str(), spec.command.as_slice(), spec.env.len()),
            ("n", &["-e".to_string(), "A=1".into()][..], 0)
        );
    }

    #[test]
    fn an_empty_entrypoint_clears_the_images() {
        let spec = run_spec(&["--entrypoint", "", "alpine"]);
        assert!(spec.entrypoint_set && spec.entrypoint.is_empty());
        let spec = run_spec(&["--entrypoint", "/bin/sh -x", "alpine", "-c", "true"]);
        assert_eq!(
            (spec.entrypoint.as_slice(), spec.command.as_slice()),
            (&["/bin/sh -x".to_string()][..], &["-c".to_string(), "true".into()][..])
        );
    }

    #[test]
    fn pids_limit_minus_one_means_no_limit() {
        assert_eq!(run_spec(&["--pids-limit", "-1", "alpine"]).resources.unwrap().pids_limit, 0);
    }
}
