//! CRI messages to domain specs and domain records to CRI messages: pods, containers, users, capabilities,
//! resources, filters.

use std::collections::HashMap;

use cm_api::cri as pb;
use tonic::Status;

use crate::cgroups::Limits;
use crate::containers::{Container, ContainerStatus, MountConfig, Record};
use crate::pods::{Dns, Pod, PodSpec, PortMapping};

pub fn map(pairs: &[(String, String)]) -> HashMap<String, String> {
    pairs.iter().cloned().collect()
}

pub fn pairs(map: HashMap<String, String>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = map.into_iter().collect();
    v.sort();
    v
}

/// Whether every `selector` pair is among `labels`.
pub fn selects(selector: &HashMap<String, String>, labels: &[(String, String)]) -> bool {
    selector.iter().all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
}

fn mode(m: i32) -> pb::NamespaceMode {
    pb::NamespaceMode::try_from(m).unwrap_or(pb::NamespaceMode::Pod)
}

/// A RunPodSandbox config as a pod spec.
pub fn pod_spec(config: pb::PodSandboxConfig, runtime_handler: String) -> Result<PodSpec, Status> {
    let metadata = config.metadata.ok_or_else(|| Status::invalid_argument("the pod sandbox config needs metadata"))?;
    let linux = config.linux.unwrap_or_default();
    let ns = linux.security_context.clone().unwrap_or_default().namespace_options.unwrap_or_default();
    if mode(ns.network) == pb::NamespaceMode::Target || mode(ns.pid) == pb::NamespaceMode::Target {
        return Err(Status::invalid_argument("a pod sandbox cannot use the TARGET namespace mode"));
    }
    let dns = config.dns_config.unwrap_or_default();
    let mut port_mappings = Vec::new();
    for p in config.port_mappings {
        let port = |v: i32, what: &str| {
            u16::try_from(v).map_err(|_| Status::invalid_argument(format!("port mapping {what} {v} is out of range")))
        };
        let protocol = match pb::Protocol::try_from(p.protocol).unwrap_or(pb::Protocol::Tcp) {
            pb::Protocol::Tcp => "tcp",
            pb::Protocol::Udp => "udp",
            pb::Protocol::Sctp => "sctp",
        };
        port_mappings.push(PortMapping {
            protocol: protocol.into(),
            container_port: port(p.container_port, "container_port")?,
            host_port: port(p.host_port, "host_port")?,
            host_ip: p.host_ip,
        });
    }
    Ok(PodSpec {
        name: metadata.name,
        namespace: metadata.namespace,
        uid: metadata.uid,
        attempt: metadata.attempt,
        hostname: config.hostname,
        log_directory: config.log_directory,
        dns: Dns { servers: dns.servers, searches: dns.searches, options: dns.options },
        port_mappings,
        labels: pairs(config.labels),
        annotations: pairs(config.annotations),
        cgroup_parent: linux.cgroup_parent,
        host_network: mode(ns.network) == pb::NamespaceMode::Node,
        host_pid: mode(ns.pid) == pb::NamespaceMode::Node,
        host_ipc: mode(ns.ipc) == pb::NamespaceMode::Node,
        shared_pid: mode(ns.pid) == pb::NamespaceMode::Pod,
        runtime_handler,
    })
}

pub fn pod_metadata(spec: &PodSpec) -> pb::PodSandboxMetadata {
    pb::PodSandboxMetadata {
        name: spec.name.clone(),
        uid: spec.uid.clone(),
        namespace: spec.namespace.clone(),
        attempt: spec.attempt,
    }
}

pub fn pod_to_proto(pod: &Pod, ready: bool) -> pb::PodSandbox {
    let r = pod.record();
    pb::PodSandbox {
        id: r.id.clone(),
        metadata: Some(pod_metadata(&r.spec)),
        state: if ready { pb::PodSandboxState::SandboxReady } else { pb::PodSandboxState::SandboxNotready } as i32,
        created_at: r.created_unix_nanos,
        labels: map(&r.spec.labels),
        annotations: map(&r.spec.annotations),
        runtime_handler: r.spec.runtime_handler.clone(),
    }
}

pub fn pod_status(pod: &Pod, ready: bool) -> pb::PodSandboxStatus {
    let r = pod.record();
    let spec = &r.spec;
    let ns_mode = |node: bool, pod_wide: bool| {
        if node {
            pb::NamespaceMode::Node
        } else if pod_wide {
            pb::NamespaceMode::Pod
        } else {
            pb::NamespaceMode::Container
        }
    } as i32;
    let network = (!spec.host_network).then(|| pb::PodSandboxNetworkStatus {
        ip: r.ips.first().cloned().unwrap_or_default(),
        additional_ips: r.ips.iter().skip(1).map(|ip| pb::PodIp { ip: ip.clone() }).collect(),
    });
    pb::PodSandboxStatus {
        id: r.id.clone(),
        metadata: Some(pod_metadata(spec)),
        state: if ready { pb::PodSandboxState::SandboxReady } else { pb::PodSandboxState::SandboxNotready } as i32,
        created_at: r.created_unix_nanos,
        network,
        linux: Some(pb::LinuxPodSandboxStatus {
            namespaces: Some(pb::Namespace {
                options: Some(pb::NamespaceOption {
                    network: ns_mode(spec.host_network, true),
                    pid: ns_mode(spec.host_pid, spec.shared_pid),
                    ipc: ns_mode(spec.host_ipc, true),
                    ..Default::default()
                }),
            }),
        }),
        labels: map(&spec.labels),
        annotations: map(&spec.annotations),
        runtime_handler: spec.runtime_handler.clone(),
    }
}

/// CRI container states from cm's.
pub fn container_state(r: &Record) -> pb::ContainerState {
    match r.state.status {
        ContainerStatus::Created => pb::ContainerState::ContainerCreated,
        ContainerStatus::Running => pb::ContainerState::ContainerRunning,
        ContainerStatus::Stopped => pb::ContainerState::ContainerExited,
        // A record that could not be read: the kubelet can only remove it.
        ContainerStatus::Damaged => pb::ContainerState::ContainerUnknown,
    }
}

pub fn container_metadata(r: &Record) -> pb::ContainerMetadata {
    pb::ContainerMetadata { name: r.config.pod.member_name.clone(), attempt: r.config.pod.attempt }
}

fn image_spec(r: &Record) -> pb::ImageSpec {
    pb::ImageSpec { image: r.config.image.clone(), user_specified_image: r.config.image.clone(), ..Default::default() }
}

pub fn container_to_proto(c: &Container) -> pb::Container {
    let r = c.record();
    pb::Container {
        id: c.id.clone(),
        pod_sandbox_id: r.config.pod.pod_id.clone(),
        metadata: Some(container_metadata(&r)),
        image: Some(image_spec(&r)),
        image_ref: r.config.image_id.clone(),
        state: container_state(&r) as i32,
        created_at: r.config.created_unix_nanos,
        labels: map(&r.config.labels),
        annotations: map(&r.config.pod.annotations),
        image_id: r.config.image_id.clone(),
    }
}

pub fn container_status(c: &Container) -> pb::ContainerStatus {
    let r = c.record();
    let exit = r.state.exit.clone().filter(|_| r.state.status == ContainerStatus::Stopped);
    let (exit_code, finished_at, reason, message) = match &exit {
        Some(e) => {
            let reason = if e.oom_killed {
                "OOMKilled"
            } else if e.code == 0 {
                "Completed"
            } else {
                "Error"
            };
            (e.code, e.finished_unix_nanos, reason.to_string(), e.error.clone())
        }
        None => (0, 0, String::new(), String::new()),
    };
    pb::ContainerStatus {
        id: c.id.clone(),
        metadata: Some(container_metadata(&r)),
        state: container_state(&r) as i32,
        created_at: r.config.created_unix_nanos,
        started_at: r.state.started_unix_nanos,
        finished_at,
        exit_code,
        image: Some(image_spec(&r)),
        image_ref: r.config.image_id.clone(),
        reason,
        message,
        labels: map(&r.config.labels),
        annotations: map(&r.config.pod.annotations),
        mounts: r
            .config
            .mounts
            .iter()
            .filter(|m| m.kind == "bind")
            .map(|m| pb::Mount {
                container_path: m.target.clone(),
                host_path: m.source.display().to_string(),
                readonly: m.read_only,
                ..Default::default()
            })
            .collect(),
        log_path: r.config.pod.cri_log.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        resources: Some(pb::ContainerResources {
            linux: Some(resources_to_proto(&r.config.limits)),
            ..Default::default()
        }),
        image_id: r.config.image_id.clone(),
        ..Default::default()
    }
}

/// The CFS period cm uses (the kernel's default).
const CPU_PERIOD: i64 = 100_000;

pub fn resources_to_proto(l: &Limits) -> pb::LinuxContainerResources {
    pb::LinuxContainerResources {
        cpu_period: if l.cpu_millis.is_some() { CPU_PERIOD } else { 0 },
        cpu_quota: l.cpu_millis.map_or(0, |m| m as i64 * CPU_PERIOD / 1000),
        memory_limit_in_bytes: l.memory_bytes.unwrap_or(0) as i64,
        ..Default::default()
    }
}

/// The limits cm applies from CRI resources: memory, and CPU as quota/period. Shares, cpusets, hugepages and
/// OOM score are not cm limits (yet) and are left as the server sets them.
pub fn limits(r: &pb::LinuxContainerResources) -> Result<Limits, Status> {
    if r.memory_limit_in_bytes < 0 || r.cpu_quota < -1 || r.cpu_period < 0 {
        return Err(Status::invalid_argument("resources must not be negative"));
    }
    let cpu_millis = (r.cpu_quota > 0).then(|| {
        let period = if r.cpu_period > 0 { r.cpu_period } else { CPU_PERIOD };
        (r.cpu_quota as u64 * 1000).div_ceil(period as u64)
    });
    Ok(Limits {
        memory_bytes: (r.memory_limit_in_bytes > 0).then_some(r.memory_limit_in_bytes as u64),
        cpu_millis,
        pids: None,
    })
}

/// The user a container runs as: run_as_username, else run_as_user[:run_as_group], else the image's.
pub fn user(sc: &pb::LinuxContainerSecurityContext) -> Result<String, Status> {
    let group = sc.run_as_group.as_ref().map(|g| g.value);
    if let Some(g) = group
        && sc.run_as_user.is_none()
        && sc.run_as_username.is_empty()
    {
        return Err(Status::invalid_argument(format!("run_as_group {g} needs run_as_user or run_as_username")));
    }
    let name = if !sc.run_as_username.is_empty() {
        sc.run_as_username.clone()
    } else if let Some(u) = &sc.run_as_user {
        if u.value < 0 {
            return Err(Status::invalid_argument(format!("run_as_user {} must not be negative", u.value)));
        }
        u.value.to_string()
    } else {
        return Ok(String::new());
    };
    Ok(match group {
        Some(g) if g < 0 => return Err(Status::invalid_argument(format!("run_as_group {g} must not be negative"))),
        Some(g) => format!("{name}:{g}"),
        None => name,
    })
}

/// Linux capability names, by number.
const CAPABILITIES: [&str; 41] = [
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

/// Every capability.
pub const ALL_CAPABILITIES: u64 = (1 << CAPABILITIES.len()) - 1;

/// The bit of a capability name ("NET_ADMIN" or "CAP_NET_ADMIN", any case); "ALL" is every one.
fn capability_bits(name: &str) -> Result<u64, Status> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Ok(ALL_CAPABILITIES);
    }
    CAPABILITIES
        .iter()
        .position(|c| *c == bare)
        .map(|n| 1u64 << n)
        .ok_or_else(|| Status::invalid_argument(format!("unknown capability {name:?}")))
}

/// The capability set from a base set and the CRI's add and drop lists (drop first, as containerd does).
pub fn capabilities(base: u64, caps: &pb::Capability) -> Result<u64, Status> {
    let mut set = base;
    for name in &caps.drop_capabilities {
        set &= !capability_bits(name)?;
    }
    for name in &caps.add_capabilities {
        set |= capability_bits(name)?;
    }
    Ok(set)
}

/// CRI mounts as cm bind mounts (propagation other than private is not supported yet and refused).
pub fn mounts(mounts: &[pb::Mount]) -> Result<Vec<MountConfig>, Status> {
    mounts
        .iter()
        .map(|m| {
            if m.image.is_some() && m.host_path.is_empty() {
                return Err(Status::invalid_argument(format!("image volume at {} is not supported", m.container_path)));
            }
            match pb::MountPropagation::try_from(m.propagation).unwrap_or(pb::MountPropagation::PropagationPrivate) {
                pb::MountPropagation::PropagationPrivate => {}
                other => {
                    return Err(Status::invalid_argument(format!(
                        "mount {}: propagation {} is not supported (private only)",
                        m.container_path,
                        other.as_str_name()
                    )));
                }
            }
            Ok(MountConfig {
                kind: "bind".into(),
                source: m.host_path.clone().into(),
                target: m.container_path.clone(),
                read_only: m.readonly,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_dropped_then_added_by_name() {
        let caps = pb::Capability {
            add_capabilities: vec!["NET_ADMIN".into(), "cap_sys_time".into()],
            drop_capabilities: vec!["CHOWN".into()],
            ..Default::default()
        };
        let set = capabilities(0b1, &caps).unwrap();
        assert_eq!(set, (1 << 12) | (1 << 25));
        let all = pb::Capability { drop_capabilities: vec!["ALL".into()], ..Default::default() };
        assert_eq!(capabilities(u64::MAX, &all).unwrap(), !ALL_CAPABILITIES);
        let bad = pb::Capability { add_capabilities: vec!["NOPE".into()], ..Default::default() };
        assert!(capabilities(0, &bad).unwrap_err().message().contains("unknown capability"));
    }

    #[test]
    fn users_come_from_name_or_ids() {
        let mut sc = pb::LinuxContainerSecurityContext::default();
        assert_eq!(user(&sc).unwrap(), "");
        sc.run_as_user = Some(pb::Int64Value { value: 1000 });
        sc.run_as_group = Some(pb::Int64Value { value: 50 });
        assert_eq!(user(&sc).unwrap(), "1000:50");
        sc.run_as_username = "nobody".into();
        assert_eq!(user(&sc).unwrap(), "nobody:50");
        let group_only =
            pb::LinuxContainerSecurityContext { run_as_group: Some(pb::Int64Value { value: 1 }), ..Default::default() };
        assert!(user(&group_only).is_err());
    }

    #[test]
    fn cpu_quota_becomes_millis() {
        let r = pb::LinuxContainerResources { cpu_quota: 50_000, cpu_period: 100_000, ..Default::default() };
        assert_eq!(limits(&r).unwrap().cpu_millis, Some(500));
        assert_eq!(resources_to_proto(&limits(&r).unwrap()).cpu_quota, 50_000);
    }
}
