//! Container RPCs: conversion between cm.v1 messages and the container domain, and the Attach stream.

use std::sync::Arc;
use std::time::Duration;

use cm_api::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::session::{ClientFrame, InputEnd, forward_input, spawn_writer};
use super::{RpcStream, timestamp};
use crate::cgroups::Limits;
use crate::containers::{
    Container, ContainerError, ContainerStatus, Containers, CreateSpec, ExitRecord, MountConfig, Network,
};
use crate::network::PortConfig;
use crate::runtime::client::Connection;
use crate::runtime::protocol::{FromMonitor, ToMonitor};

impl From<ContainerError> for Status {
    fn from(e: ContainerError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

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
    let network = match pb::NetworkMode::try_from(spec.network).unwrap_or(pb::NetworkMode::Unspecified) {
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
    })
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
    let c = containers.get(&start.container)?;
    let size =
        start.tty_size.map_or((0, 0), |s| (s.rows.min(u16::MAX as u32) as u16, s.cols.min(u16::MAX as u32) as u16));
    let session = if start.start {
        containers.start(&c, Some(size)).await?.expect("attached start returns its connection")
    } else {
        let mut conn = containers.connect(&c).await?;
        conn.writer.send(ToMonitor::Attach).await.map_err(|e| Status::unavailable(e.to_string()))?;
        if size.0 > 0 {
            let _ = conn.writer.send(ToMonitor::Resize { rows: size.0, cols: size.1 }).await;
        }
        conn
    };
    let Connection { mut reader, writer } = session;
    let (tx, rx) = mpsc::channel::<Result<pb::AttachResponse, Status>>(16);
    let frame = |f: pb::attach_response::Frame| Ok(pb::AttachResponse { frame: Some(f) });
    let pid = c.record().state.pid;
    let _ =
        tx.send(frame(pb::attach_response::Frame::Started(pb::ProcessStarted { exec_id: String::new(), pid }))).await;

    // Client frames to the monitor. Going away leaves the main process running.
    let input_errors = tx.clone();
    let want_stdin = start.stdin;
    let input = tokio::spawn(async move {
        let to_monitor = spawn_writer(writer);
        let end = forward_input(requests, |m: pb::AttachRequest| ClientFrame::from(m.frame), want_stdin, &to_monitor);
        if let InputEnd::Invalid(status) = end.await {
            let _ = input_errors.send(Err(status)).await;
        }
    });

    // Monitor frames to the client; the exit frame comes from the recorded exit (with OOM) after output.
    tokio::spawn(async move {
        loop {
            let out = match reader.next().await {
                Ok(Some(FromMonitor::Stdout(d))) => frame(pb::attach_response::Frame::Stdout(d)),
                Ok(Some(FromMonitor::Stderr(d))) => frame(pb::attach_response::Frame::Stderr(d)),
                Ok(Some(FromMonitor::Started { .. } | FromMonitor::NoSuchExec(_))) => continue,
                Ok(Some(FromMonitor::Exit(_))) | Ok(None) | Err(_) => break,
            };
            if tx.send(out).await.is_err() {
                return; // client gone; the container keeps running
            }
        }
        let exit = match tokio::time::timeout(Duration::from_secs(30), containers.wait(&c)).await {
            Ok(Ok(exit)) => frame(pb::attach_response::Frame::Exit(exit_to_proto(&exit))),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Status::unavailable("lost the container's monitor before its exit status arrived")),
        };
        let _ = tx.send(exit).await;
        // The stream ends with the exit frame even if the client keeps sending.
        input.abort();
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}
