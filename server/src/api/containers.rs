//! Container RPCs: conversion between cm.v1 messages and the container domain, and the Attach stream.

use std::sync::Arc;

use cm_api::v1 as pb;
use tonic::{Status, Streaming};

use super::bounds::Bounded;
use super::session::{ClientFrame, inputs, outputs};
use super::{RpcStream, timestamp};
use crate::cgroups::Limits;
use crate::containers::{
    AttachRequest, Container, ContainerStatus, Containers, CreateSpec, ExitRecord, MountConfig, Network, Seccomp,
    Security, SessionOutput,
};
use crate::containers::{Privileges, UserNamespace};
use crate::network::PortConfig;

/// ContainerSpec to the domain's CreateSpec, refusing what is malformed.
pub fn create_spec(spec: Option<pb::ContainerSpec>) -> Result<CreateSpec, Status> {
    let spec = spec.ok_or_else(|| Status::invalid_argument("spec is required"))?;
    if spec.image.trim().is_empty() {
        return Err(Status::invalid_argument("spec.image is required"));
    }
    let r = spec.resources.unwrap_or_default();
    let positive = |v: i64, what: &str| -> Result<Option<u64>, Status> {
        match v {
            0 => Ok(None),
            v if v < 0 => Err(Status::invalid_argument(format!("{what} must not be negative (got {v})"))),
            v => Ok(Some(v as u64)),
        }
    };
    let limits = Limits {
        memory_bytes: positive(r.memory_bytes, "resources.memory_bytes")?,
        cpu_millis: positive(r.cpu_millis, "resources.cpu_millis")?,
        pids: positive(r.pids_limit, "resources.pids_limit")?,
    };
    let mode = pb::NetworkMode::try_from(spec.network).map_err(|_| {
        Status::invalid_argument(format!("spec.network: unknown network mode {} (bridge, none or host)", spec.network))
    })?;
    let network = match mode {
        pb::NetworkMode::Unspecified | pb::NetworkMode::Bridge => Network::Bridge,
        pb::NetworkMode::None => Network::None,
        pb::NetworkMode::Host => Network::Host,
    };
    let ports = spec
        .ports
        .iter()
        .map(|p| PortConfig::parse(&p.host_ip, p.host_port, p.container_port, &p.protocol))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Status::invalid_argument)?;
    for e in &spec.env {
        if e.is_empty() || e.starts_with('=') {
            return Err(Status::invalid_argument(format!("environment entry {e:?} must be KEY=VALUE")));
        }
    }
    let userns = pb::UserNamespaceMode::try_from(spec.userns).map_err(|_| {
        Status::invalid_argument(format!("spec.userns: unknown user namespace mode {} (host or auto)", spec.userns))
    })?;
    let privileges = Privileges {
        cap_add: spec.cap_add,
        cap_drop: spec.cap_drop,
        privileged: spec.privileged,
        read_only_rootfs: spec.read_only_rootfs,
        user_namespace: match userns {
            pb::UserNamespaceMode::Unspecified | pb::UserNamespaceMode::Host => UserNamespace::Host,
            pb::UserNamespaceMode::Auto => UserNamespace::Auto,
        },
    };
    let mounts = spec
        .mounts
        .iter()
        .map(|m| MountConfig {
            kind: if m.r#type.is_empty() { "bind".into() } else { m.r#type.clone() },
            source: m.source.clone().into(),
            target: m.target.clone(),
            read_only: m.read_only,
        })
        .collect();
    let security = security(spec.security.unwrap_or_default())?;
    Ok(CreateSpec {
        image: spec.image.trim().to_string(),
        name: spec.name,
        entrypoint: if spec.entrypoint_set || !spec.entrypoint.is_empty() { Some(spec.entrypoint) } else { None },
        command: spec.command,
        env: spec.env,
        workdir: spec.workdir,
        user: spec.user,
        hostname: spec.hostname,
        tty: spec.tty,
        stdin: spec.stdin,
        limits,
        network,
        ports,
        mounts,
        auto_remove: spec.auto_remove,
        labels: spec.labels.into_iter().collect(),
        stop_signal: spec.stop_signal,
        security,
        privileges,
        pod: Default::default(),
    })
}

fn security(s: pb::SecurityOptions) -> Result<Security, Status> {
    let seccomp = match (s.seccomp_unconfined, s.seccomp_profile.is_empty()) {
        (true, false) => {
            return Err(Status::invalid_argument(
                "spec.security: seccomp_unconfined and seccomp_profile exclude each other",
            ));
        }
        (true, true) => Seccomp::Unconfined,
        (false, true) => Seccomp::Default,
        (false, false) => Seccomp::Profile(s.seccomp_profile),
    };
    Ok(Security { seccomp, no_new_privileges: s.no_new_privileges })
}

fn security_to_proto(s: &Security) -> pb::SecurityOptions {
    pb::SecurityOptions {
        seccomp_profile: match &s.seccomp {
            Seccomp::Profile(json) => json.clone(),
            _ => String::new(),
        },
        seccomp_unconfined: s.seccomp == Seccomp::Unconfined,
        no_new_privileges: s.no_new_privileges,
    }
}

pub fn exit_to_proto(e: &ExitRecord) -> pb::ExitStatus {
    pb::ExitStatus {
        exit_code: e.code,
        signal: e.signal.clone(),
        oom_killed: e.oom_killed,
        finished_at: timestamp(e.finished_unix_nanos),
        error: e.error.clone(),
    }
}

/// A container as List and Inspect describe it.
pub fn to_proto(c: &Container) -> pb::Container {
    let r = c.record();
    let cfg = &r.config;
    let state = match r.state.status {
        ContainerStatus::Created => pb::ContainerState::Created,
        ContainerStatus::Running => pb::ContainerState::Running,
        ContainerStatus::Stopped => pb::ContainerState::Stopped,
        ContainerStatus::Damaged => pb::ContainerState::Damaged,
    };
    let spec = pb::ContainerSpec {
        image: cfg.image.clone(),
        name: cfg.name.clone(),
        entrypoint: cfg.entrypoint.clone().unwrap_or_default(),
        entrypoint_set: cfg.entrypoint.is_some(),
        command: cfg.command.clone(),
        env: cfg.env.clone(),
        workdir: cfg.workdir.clone(),
        user: cfg.user.clone(),
        hostname: cfg.hostname.clone(),
        tty: cfg.tty,
        stdin: cfg.stdin,
        resources: Some(pb::Resources {
            memory_bytes: cfg.limits.memory_bytes.unwrap_or(0) as i64,
            cpu_millis: cfg.limits.cpu_millis.unwrap_or(0) as i64,
            pids_limit: cfg.limits.pids.unwrap_or(0) as i64,
        }),
        network: match cfg.network {
            Network::Bridge => pb::NetworkMode::Bridge,
            Network::None => pb::NetworkMode::None,
            Network::Host => pb::NetworkMode::Host,
        }
        .into(),
        ports: cfg.ports.iter().map(port_to_proto).collect(),
        mounts: cfg
            .mounts
            .iter()
            .map(|m| pb::Mount {
                r#type: m.kind.clone(),
                source: m.source.display().to_string(),
                target: m.target.clone(),
                read_only: m.read_only,
            })
            .collect(),
        auto_remove: cfg.auto_remove,
        labels: cfg.labels.iter().cloned().collect(),
        stop_signal: cfg.stop_signal.clone(),
        security: Some(security_to_proto(&cfg.security)),
        cap_add: cfg.privileges.cap_add.clone(),
        cap_drop: cfg.privileges.cap_drop.clone(),
        privileged: cfg.privileges.privileged,
        read_only_rootfs: cfg.privileges.read_only_rootfs,
        userns: match cfg.privileges.user_namespace {
            UserNamespace::Host => pb::UserNamespaceMode::Host,
            UserNamespace::Auto => pb::UserNamespaceMode::Auto,
        }
        .into(),
    };
    pb::Container {
        id: cfg.id.clone(),
        name: cfg.name.clone(),
        image: cfg.image.clone(),
        image_id: cfg.image_id.clone(),
        command: cfg.args.clone(),
        state: state.into(),
        pid: if r.state.status == ContainerStatus::Running { r.state.pid } else { 0 },
        exit: r.state.exit.as_ref().map(exit_to_proto),
        created: timestamp(cfg.created_unix_nanos),
        started: timestamp(r.state.started_unix_nanos),
        spec: Some(spec),
        ip_address: cfg.address.map(|a| a.to_string()).unwrap_or_default(),
        ports: r.state.ports.iter().map(port_to_proto).collect(),
        log_dropped_bytes: c.log_dropped(),
        damage: r.state.damage.clone(),
    }
}

fn port_to_proto(p: &PortConfig) -> pb::PortMapping {
    pb::PortMapping {
        host_ip: p.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        host_port: p.host_port.into(),
        container_port: p.container_port.into(),
        protocol: p.protocol.as_str().into(),
    }
}

fn attach_response(output: SessionOutput) -> pb::AttachResponse {
    use pb::attach_response::Frame;
    let frame = match output {
        SessionOutput::Started { exec_id, pid } => Frame::Started(pb::ProcessStarted { exec_id, pid }),
        SessionOutput::Stdout(d) => Frame::Stdout(d),
        SessionOutput::Stderr(d) => Frame::Stderr(d),
        SessionOutput::Exit(e) => Frame::Exit(exit_to_proto(&e)),
    };
    pb::AttachResponse { frame: Some(frame) }
}

/// Attach: the first frame names the container (and may start it); then stdin, resize and signal frames
/// go to the process while its output comes back, and one exit frame ends the stream.
pub async fn attach(
    containers: Arc<Containers>,
    mut requests: Streaming<pb::AttachRequest>,
) -> Result<RpcStream<pb::AttachResponse>, Status> {
    use pb::attach_request::Frame;
    let first = requests.message().await?.and_then(|m| m.frame);
    let Some(Frame::Start(start)) = first else {
        return Err(Status::invalid_argument("the first Attach message must be a start frame naming the container"));
    };
    start.check_bounds()?;
    let request = AttachRequest {
        container: start.container,
        start: start.start,
        stdin: start.stdin,
        tty_size: start.tty_size.map(|s| (s.rows, s.cols)),
    };
    let input = inputs(requests, |m: pb::AttachRequest| ClientFrame::from(m.frame));
    let session = containers.attach(request, input).await?;
    Ok(outputs(session, attach_response))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> pb::ContainerSpec {
        pb::ContainerSpec { image: "busybox".into(), ..Default::default() }
    }

    #[test]
    fn an_unknown_network_mode_is_refused() {
        assert_eq!(create_spec(Some(spec())).unwrap().network, Network::Bridge);
        let none = pb::ContainerSpec { network: pb::NetworkMode::None.into(), ..spec() };
        assert_eq!(create_spec(Some(none)).unwrap().network, Network::None);
        let status = create_spec(Some(pb::ContainerSpec { network: 99, ..spec() })).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("network mode 99"), "{}", status.message());
    }
}
