//! `inspect`: containers in docker's inspect layout, and the lookup of one container other commands use.

use cm_api::v1::{self as pb, ContainerState, NetworkMode};
use serde_json::{Value, json};

use crate::connect::Client;
use crate::error::{FAILURE, report_status, status_error};
use crate::format::{ZERO_TIME, protocol, rfc3339};

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Container ids, id prefixes or names.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `inspect`: a JSON array of the containers found; the others are reported, and the exit code is 1.
pub async fn inspect(client: &mut Client, args: InspectArgs) -> anyhow::Result<i32> {
    let containers = args.containers;
    let mut found = Vec::new();
    let mut code = 0;
    for container in containers {
        match client.inspect(pb::InspectRequest { container }).await {
            Ok(response) => found.push(inspect_json(&response.into_inner().container.unwrap_or_default())),
            Err(status) => {
                report_status(status);
                code = FAILURE;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&found)?);
    Ok(code)
}

/// One container's description, for the commands that need its state or spec first.
pub async fn container(client: &mut Client, container: &str) -> anyhow::Result<pb::Container> {
    let request = pb::InspectRequest { container: container.to_string() };
    let response = client.inspect(request).await.map_err(status_error)?.into_inner();
    response.container.ok_or_else(|| anyhow::anyhow!("the server described no container for {container}"))
}

/// One container in docker's inspect layout (docker's field names where docker has the field).
pub fn inspect_json(c: &pb::Container) -> Value {
    let spec = c.spec.clone().unwrap_or_default();
    let exit = c.exit.clone().unwrap_or_default();
    let resources = spec.resources.unwrap_or_default();
    let time = |t: Option<prost_types::Timestamp>| t.map_or_else(|| ZERO_TIME.to_string(), |t| rfc3339(&t));
    let state = ContainerState::try_from(c.state).unwrap_or(ContainerState::Unspecified);
    let status = match state {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Stopped => "exited",
        ContainerState::Damaged => "damaged",
        ContainerState::Unspecified => "unknown",
    };
    let network = match NetworkMode::try_from(spec.network).unwrap_or(NetworkMode::Unspecified) {
        NetworkMode::Bridge => "bridge",
        NetworkMode::None => "none",
        NetworkMode::Host => "host",
        NetworkMode::Unspecified => "default",
    };
    let mounts: Vec<Value> = spec
        .mounts
        .iter()
        .map(|m| {
            json!({
                "Type": m.r#type,
                "Source": m.source,
                "Destination": m.target,
                "Mode": if m.read_only { "ro" } else { "rw" },
                "RW": !m.read_only,
            })
        })
        .collect();
    let (path, args) = c.command.split_first().map_or(("", &[][..]), |(p, a)| (p.as_str(), a));
    let or_null = |list: &[String]| if list.is_empty() { Value::Null } else { json!(list) };
    json!({
        "Id": c.id,
        "Name": c.name,
        "Created": time(c.created),
        "Path": path,
        "Args": args,
        "Image": c.image,
        "ImageId": c.image_id,
        "State": {
            "Status": status,
            "Running": state == ContainerState::Running,
            "Pid": c.pid,
            "ExitCode": exit.exit_code,
            "Signal": exit.signal,
            "OOMKilled": exit.oom_killed,
            "Error": if c.damage.is_empty() { exit.error } else { c.damage.clone() },
            "StartedAt": time(c.started),
            "FinishedAt": time(exit.finished_at),
            "LogDroppedBytes": c.log_dropped_bytes,
        },
        "Config": {
            "Image": spec.image,
            "Entrypoint": if spec.entrypoint_set { json!(spec.entrypoint) } else { Value::Null },
            "Cmd": or_null(&spec.command),
            "Env": spec.env,
            "WorkingDir": spec.workdir,
            "User": spec.user,
            "Hostname": spec.hostname,
            "Tty": spec.tty,
            "OpenStdin": spec.stdin,
            "Labels": spec.labels,
            "StopSignal": spec.stop_signal,
        },
        "HostConfig": {
            "Memory": resources.memory_bytes,
            "NanoCpus": resources.cpu_millis * 1_000_000,
            "PidsLimit": resources.pids_limit,
            "NetworkMode": network,
            "AutoRemove": spec.auto_remove,
            "PortBindings": port_map(&spec.ports),
            "SecurityOpt": security_opt(spec.security.as_ref()),
            "CapAdd": or_null(&spec.cap_add),
            "CapDrop": or_null(&spec.cap_drop),
            "Privileged": spec.privileged,
            "ReadonlyRootfs": spec.read_only_rootfs,
            "UsernsMode": if spec.userns == pb::UserNamespaceMode::Auto as i32 { "auto" } else { "" },
        },
        "Mounts": mounts,
        "NetworkSettings": {
            "IPAddress": c.ip_address,
            "Ports": port_map(&c.ports),
        },
    })
}

/// Docker's SecurityOpt list (a custom profile shows as seccomp=<profile>, as docker keeps only the text).
fn security_opt(s: Option<&pb::SecurityOptions>) -> Value {
    let Some(s) = s else { return Value::Null };
    let mut opts = Vec::new();
    if s.seccomp_unconfined {
        opts.push("seccomp=unconfined".to_string());
    } else if !s.seccomp_profile.is_empty() {
        opts.push("seccomp=<profile>".to_string());
    }
    if s.no_new_privileges {
        opts.push("no-new-privileges".to_string());
    }
    if opts.is_empty() { Value::Null } else { json!(opts) }
}

/// Docker's port map: {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}, host port "" when any is fine.
fn port_map(ports: &[pb::PortMapping]) -> Value {
    let mut map = serde_json::Map::new();
    for p in ports {
        let key = format!("{}/{}", p.container_port, protocol(p));
        let host_port = if p.host_port == 0 { String::new() } else { p.host_port.to_string() };
        let binding = json!({ "HostIp": p.host_ip, "HostPort": host_port });
        match map.entry(key).or_insert_with(|| json!([])) {
            Value::Array(bindings) => bindings.push(binding),
            _ => unreachable!("inserted as an array"),
        }
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn inspect_has_dockers_shape() {
        let c = pb::Container {
            id: "ab".repeat(32),
            name: "web".into(),
            image: "docker.io/library/alpine:latest".into(),
            image_id: "sha256:cd".into(),
            command: args(&["sh", "-c", "echo hi"]),
            state: ContainerState::Stopped as i32,
            exit: Some(pb::ExitStatus {
                exit_code: 130,
                signal: "SIGINT".into(),
                finished_at: Some(prost_types::Timestamp { seconds: 1_714_557_601, nanos: 250_000_000 }),
                ..Default::default()
            }),
            created: ts(1_714_557_600),
            spec: Some(pb::ContainerSpec {
                image: "alpine".into(),
                entrypoint_set: true,
                env: args(&["A=1"]),
                tty: true,
                resources: Some(pb::Resources { memory_bytes: 1 << 28, cpu_millis: 500, pids_limit: 64 }),
                network: NetworkMode::Bridge as i32,
                ports: vec![pb::PortMapping { host_port: 0, container_port: 80, ..Default::default() }],
                labels: HashMap::from([("k".into(), "v".into())]),
                mounts: vec![pb::Mount {
                    r#type: "bind".into(),
                    source: "/a".into(),
                    target: "/b".into(),
                    read_only: true,
                }],
                cap_add: args(&["NET_ADMIN"]),
                read_only_rootfs: true,
                userns: pb::UserNamespaceMode::Auto as i32,
                security: Some(pb::SecurityOptions { no_new_privileges: true, ..Default::default() }),
                ..Default::default()
            }),
            ip_address: "10.88.0.2".into(),
            ports: vec![pb::PortMapping {
                host_port: 32768,
                container_port: 80,
                protocol: "tcp".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let j = inspect_json(&c);
        assert_eq!(j["Id"], "ab".repeat(32));
        assert_eq!(j["Name"], "web");
        assert_eq!(j["Image"], "docker.io/library/alpine:latest");
        assert_eq!(j["ImageId"], "sha256:cd");
        assert_eq!(j["Path"], "sh");
        assert_eq!(j["Args"], json!(["-c", "echo hi"]));
        assert_eq!(j["Created"], "2024-05-01T10:00:00Z");
        assert_eq!(
            j["State"],
            json!({
                "Status": "exited", "Running": false, "Pid": 0, "ExitCode": 130, "Signal": "SIGINT",
                "OOMKilled": false, "Error": "", "StartedAt": ZERO_TIME, "FinishedAt": "2024-05-01T10:00:01.25Z",
                "LogDroppedBytes": 0,
            })
        );
        assert_eq!(j["Config"]["Entrypoint"], json!([]));
        assert_eq!(j["Config"]["Cmd"], Value::Null);
        assert_eq!(j["Config"]["Env"], json!(["A=1"]));
        assert_eq!(j["Config"]["Tty"], true);
        assert_eq!(j["Config"]["Labels"], json!({"k": "v"}));
        assert_eq!(
            j["HostConfig"],
            json!({
                "Memory": 1 << 28, "NanoCpus": 500_000_000, "PidsLimit": 64, "NetworkMode": "bridge",
                "AutoRemove": false, "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": ""}]},
                "CapAdd": ["NET_ADMIN"], "CapDrop": null, "Privileged": false, "ReadonlyRootfs": true,
                "UsernsMode": "auto", "SecurityOpt": ["no-new-privileges"],
            })
        );
        assert_eq!(j["Mounts"][0]["Mode"], "ro");
        assert_eq!(j["NetworkSettings"]["IPAddress"], "10.88.0.2");
        assert_eq!(j["NetworkSettings"]["Ports"], json!({"80/tcp": [{"HostIp": "", "HostPort": "32768"}]}));
    }
}
