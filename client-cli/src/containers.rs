//! Container commands that need no terminal: ps, inspect, stop, kill, rm, wait, logs, port.

use std::future::Future;
use std::io::Write;

use anyhow::bail;
use cm_api::v1::{self as pb, ContainerState, LogStream, NetworkMode};
use serde_json::{Value, json};

use crate::connect::Client;
use crate::format::{self, rfc3339};
use crate::status_error;

/// Runs `op` for each container, printing its line on success and "cm-client: <error>" on failure, and goes on
/// after a failure as docker does. Returns the exit code: 1 if any failed.
pub async fn for_each<F, Fut>(containers: Vec<String>, mut op: F) -> i32
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Option<String>, tonic::Status>>,
{
    let mut code = 0;
    for container in containers {
        match op(container).await {
            Ok(Some(line)) => println!("{line}"),
            Ok(None) => {}
            Err(status) => {
                eprintln!("cm-client: {}", status_error(status));
                code = 1;
            }
        }
    }
    code
}

/// `stop [-t SECONDS]`: prints each container as given.
pub async fn stop(client: &Client, containers: Vec<String>, seconds: Option<u32>) -> i32 {
    for_each(containers, |container| {
        let mut client = client.clone();
        let timeout = seconds.map(|s| prost_types::Duration { seconds: s.into(), nanos: 0 });
        async move {
            client.stop(pb::StopRequest { container: container.clone(), timeout }).await?;
            Ok(Some(container))
        }
    })
    .await
}

/// `kill [-s SIGNAL]`: prints each container as given.
pub async fn kill(client: &Client, containers: Vec<String>, signal: Option<String>) -> i32 {
    for_each(containers, |container| {
        let mut client = client.clone();
        let signal = signal.clone().unwrap_or_default();
        async move {
            client.kill(pb::KillRequest { container: container.clone(), signal, exec_id: String::new() }).await?;
            Ok(Some(container))
        }
    })
    .await
}

/// `rm [-f]`: prints each container as given.
pub async fn rm(client: &Client, containers: Vec<String>, force: bool) -> i32 {
    for_each(containers, |container| {
        let mut client = client.clone();
        async move {
            client.remove(pb::RemoveRequest { container: container.clone(), force }).await?;
            Ok(Some(container))
        }
    })
    .await
}

/// `wait`: prints each container's exit code.
pub async fn wait(client: &Client, containers: Vec<String>) -> i32 {
    for_each(containers, |container| {
        let mut client = client.clone();
        async move {
            let response = client.wait(pb::WaitRequest { container, exec_id: String::new() }).await?.into_inner();
            Ok(Some(response.status.unwrap_or_default().exit_code.to_string()))
        }
    })
    .await
}

/// `ps [-a] [-q] [--no-trunc]`, newest first.
pub async fn ps(client: &mut Client, all: bool, quiet: bool, no_trunc: bool) -> anyhow::Result<i32> {
    let mut containers = client.list(pb::ListRequest { all }).await.map_err(status_error)?.into_inner().containers;
    containers.sort_by_key(|c| std::cmp::Reverse(c.created.map(|t| (t.seconds, t.nanos))));
    let id = |c: &pb::Container| if no_trunc { c.id.clone() } else { format::short_id(&c.id).to_string() };
    if quiet {
        for c in &containers {
            println!("{}", id(c));
        }
        return Ok(0);
    }
    let now = format::now();
    let rows: Vec<Vec<String>> = containers
        .iter()
        .map(|c| {
            vec![
                id(c),
                image_name(c),
                ps_command(&c.command, !no_trunc),
                format::ago(c.created.map(|t| t.seconds)),
                status(c, now),
                ps_ports(&c.ports),
                c.name.clone(),
            ]
        })
        .collect();
    print!("{}", format::table(&["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], &rows));
    Ok(0)
}

/// The image as the user named it at create time (docker shows it as given), else the server's reference.
fn image_name(c: &pb::Container) -> String {
    match c.spec.as_ref().map(|s| s.image.as_str()).filter(|i| !i.is_empty()) {
        Some(image) => image.to_string(),
        None => format::repo_and_tag(&c.image).0,
    }
}

/// Docker's COMMAND column: the program and its arguments (quoted in '' when they hold a space), truncated to
/// 20 characters with "…", in double quotes.
pub fn ps_command(command: &[String], truncate: bool) -> String {
    let line = command
        .iter()
        .enumerate()
        .map(|(i, arg)| if i > 0 && arg.contains(' ') { format!("'{arg}'") } else { arg.clone() })
        .collect::<Vec<_>>()
        .join(" ");
    let line = if truncate { ellipsis(&line, 20) } else { line };
    format!("{line:?}")
}

fn ellipsis(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    text.chars().take(width - 1).chain(['…']).collect()
}

/// Docker's STATUS column: "Up 5 seconds", "Exited (0) 2 minutes ago", "Created". `now`: seconds since the epoch.
pub fn status(c: &pb::Container, now: i64) -> String {
    let since = |t: Option<prost_types::Timestamp>| format::human_duration(now - t.map_or(now, |t| t.seconds));
    match ContainerState::try_from(c.state).unwrap_or(ContainerState::Unspecified) {
        ContainerState::Created => "Created".into(),
        ContainerState::Running => format!("Up {}", since(c.started)),
        ContainerState::Stopped => {
            let exit = c.exit.clone().unwrap_or_default();
            match exit.finished_at {
                Some(finished) => format!("Exited ({}) {} ago", exit.exit_code, since(Some(finished))),
                None => format!("Exited ({})", exit.exit_code),
            }
        }
        ContainerState::Unspecified => "Unknown".into(),
    }
}

/// Docker's PORTS column: "0.0.0.0:8080->80/tcp, 53/udp".
fn ps_ports(ports: &[pb::PortMapping]) -> String {
    let port = |p: &pb::PortMapping| match p.host_port {
        0 => format!("{}/{}", p.container_port, protocol(p)),
        _ => format!("{}->{}/{}", host_address(p), p.container_port, protocol(p)),
    };
    ports.iter().map(port).collect::<Vec<_>>().join(", ")
}

fn protocol(p: &pb::PortMapping) -> &str {
    if p.protocol.is_empty() { "tcp" } else { &p.protocol }
}

/// "0.0.0.0:32768", "[::1]:8080".
fn host_address(p: &pb::PortMapping) -> String {
    match p.host_ip.as_str() {
        "" => format!("0.0.0.0:{}", p.host_port),
        ip if ip.contains(':') => format!("[{ip}]:{}", p.host_port),
        ip => format!("{ip}:{}", p.host_port),
    }
}

/// `inspect`: a JSON array of the containers found; the others are reported, and the exit code is 1.
pub async fn inspect(client: &mut Client, containers: Vec<String>) -> anyhow::Result<i32> {
    let mut found = Vec::new();
    let mut code = 0;
    for container in containers {
        match client.inspect(pb::InspectRequest { container }).await {
            Ok(response) => found.push(inspect_json(&response.into_inner().container.unwrap_or_default())),
            Err(status) => {
                eprintln!("cm-client: {}", status_error(status));
                code = 1;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&found)?);
    Ok(code)
}

/// Docker's zero time, for times that have not happened.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

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
            "Error": exit.error,
            "StartedAt": time(c.started),
            "FinishedAt": time(exit.finished_at),
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
        },
        "Mounts": mounts,
        "NetworkSettings": {
            "IPAddress": c.ip_address,
            "Ports": port_map(&c.ports),
        },
    })
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

/// `port CONTAINER [PRIVATE_PORT[/PROTO]]`: "80/tcp -> 0.0.0.0:32768" lines, or the addresses of one port.
pub async fn port(client: &mut Client, container: String, filter: Option<String>) -> anyhow::Result<i32> {
    let request = pb::InspectRequest { container: container.clone() };
    let c = client.inspect(request).await.map_err(status_error)?.into_inner().container.unwrap_or_default();
    let bound = c.ports.iter().filter(|p| p.host_port != 0);
    let Some(filter) = filter else {
        for p in bound {
            println!("{}/{} -> {}", p.container_port, protocol(p), host_address(p));
        }
        return Ok(0);
    };
    let (port, proto) = filter.split_once('/').unwrap_or((&filter, "tcp"));
    let matching: Vec<_> =
        bound.filter(|p| p.container_port.to_string() == port && protocol(p).eq_ignore_ascii_case(proto)).collect();
    if matching.is_empty() {
        bail!("no public port '{port}/{proto}' published for {container}");
    }
    for p in matching {
        println!("{}", host_address(p));
    }
    Ok(0)
}

/// `logs --tail`: the last N lines, or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    All,
    Last(i64),
}

/// "all" or a number (a negative number means all, as docker).
pub fn parse_tail(text: &str) -> anyhow::Result<Tail> {
    if text == "all" {
        return Ok(Tail::All);
    }
    let n: i64 = text.parse().map_err(|_| anyhow::anyhow!("invalid line count '{text}': give a number or \"all\""))?;
    Ok(if n < 0 { Tail::All } else { Tail::Last(n) })
}

/// `logs` flags.
pub struct LogsOptions {
    pub follow: bool,
    pub tail: Tail,
    pub since: Option<prost_types::Timestamp>,
    pub timestamps: bool,
}

/// `logs`: each line to stdout or stderr, as it was written.
pub async fn logs(client: &mut Client, container: String, options: LogsOptions) -> anyhow::Result<i32> {
    let now = std::time::SystemTime::now().into();
    let mut since = options.since;
    let tail = match options.tail {
        Tail::All => 0,
        // The API's 0 means all; docker's --tail 0 means none of the past lines: only those from now on.
        Tail::Last(0) => {
            since = Some(since.map_or(now, |s| max_time(s, now)));
            0
        }
        Tail::Last(n) => n,
    };
    let request = pb::LogsRequest { container, follow: options.follow, tail, since, stdout: false, stderr: false };
    let mut stream = client.logs(request).await.map_err(status_error)?.into_inner();
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    while let Some(line) = stream.message().await.map_err(status_error)? {
        let out: &mut dyn Write = if line.stream == LogStream::Stderr as i32 { &mut stderr } else { &mut stdout };
        if options.timestamps {
            write!(out, "{} ", line.time.map_or_else(|| ZERO_TIME.to_string(), |t| rfc3339(&t)))?;
        }
        out.write_all(&line.line)?;
        out.flush()?;
    }
    Ok(0)
}

fn max_time(a: prost_types::Timestamp, b: prost_types::Timestamp) -> prost_types::Timestamp {
    if (a.seconds, a.nanos) >= (b.seconds, b.nanos) { a } else { b }
}

/// `--since` as of now.
pub fn parse_since_now(text: &str) -> anyhow::Result<prost_types::Timestamp> {
    parse_since(text, std::time::SystemTime::now().into())
}

/// `--since`: a duration before `now` (Go syntax: "10m", "1h30m", "1.5h"), an RFC 3339 time (a date alone, or
/// no zone, means UTC) or unix seconds ("1714557600", "1714557600.5").
pub fn parse_since(text: &str, now: prost_types::Timestamp) -> anyhow::Result<prost_types::Timestamp> {
    if let Some(nanos) = parse_go_duration(text) {
        let nanos = i128::from(now.seconds) * 1_000_000_000 + i128::from(now.nanos) - nanos;
        return Ok(prost_types::Timestamp {
            seconds: nanos.div_euclid(1_000_000_000) as i64,
            nanos: nanos.rem_euclid(1_000_000_000) as i32,
        });
    }
    if let Ok(time) = text.parse::<prost_types::Timestamp>() {
        return Ok(time);
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.len() <= 9
        && fraction.bytes().all(|b| b.is_ascii_digit())
    {
        let seconds = whole.parse().map_err(|_| anyhow::anyhow!("invalid time '{text}': too large"))?;
        let nanos = format!("{fraction:0<9}").parse().unwrap_or(0);
        return Ok(prost_types::Timestamp { seconds, nanos });
    }
    bail!("invalid time '{text}': use an RFC 3339 time (2024-05-01T10:00:00Z), a duration (10m, 1h30m) or unix seconds")
}

/// A Go duration ("300ms", "1.5h", "1h30m") in nanoseconds; None when it is not one. A bare "0" is zero.
fn parse_go_duration(text: &str) -> Option<i128> {
    if text == "0" {
        return Some(0);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += number * unit;
        rest = &rest[unit_end..];
    }
    Some(total as i128)
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
    fn ps_command_is_quoted_and_truncated_like_docker() {
        assert_eq!(ps_command(&args(&["nginx", "-g", "daemon off;"]), true), r#""nginx -g 'daemon of…""#);
        assert_eq!(ps_command(&args(&["sh", "-c", "while true; do sleep 1; done"]), true), r#""sh -c 'while true; …""#);
        assert_eq!(
            ps_command(&args(&["sh", "-c", "while true; do sleep 1; done"]), false),
            r#""sh -c 'while true; do sleep 1; done'""#
        );
        assert_eq!(ps_command(&args(&["/bin/sh"]), true), r#""/bin/sh""#);
        assert_eq!(ps_command(&args(&["echo", "12345678901234"]), true), r#""echo 12345678901234""#);
        assert_eq!(ps_command(&args(&["echo", "say \"hi\""]), false), r#""echo 'say \"hi\"'""#);
        assert_eq!(ps_command(&[], true), r#""""#);
    }

    #[test]
    fn status_reads_like_docker() {
        let now = 1_000_000;
        let created = pb::Container { state: ContainerState::Created as i32, ..Default::default() };
        assert_eq!(status(&created, now), "Created");
        let running =
            pb::Container { state: ContainerState::Running as i32, started: ts(now - 5), ..Default::default() };
        assert_eq!(status(&running, now), "Up 5 seconds");
        let exited = pb::Container {
            state: ContainerState::Stopped as i32,
            exit: Some(pb::ExitStatus { exit_code: 137, finished_at: ts(now - 150), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(status(&exited, now), "Exited (137) 2 minutes ago");
        let exited_untimed = pb::Container { state: ContainerState::Stopped as i32, ..Default::default() };
        assert_eq!(status(&exited_untimed, now), "Exited (0)");
    }

    #[test]
    fn ports_read_like_docker() {
        let ports = [
            pb::PortMapping { host_ip: String::new(), host_port: 8080, container_port: 80, protocol: "tcp".into() },
            pb::PortMapping { host_ip: "::1".into(), host_port: 53, container_port: 53, protocol: "udp".into() },
            pb::PortMapping { host_ip: String::new(), host_port: 0, container_port: 443, protocol: String::new() },
        ];
        assert_eq!(ps_ports(&ports), "0.0.0.0:8080->80/tcp, [::1]:53->53/udp, 443/tcp");
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
            })
        );
        assert_eq!(j["Mounts"][0]["Mode"], "ro");
        assert_eq!(j["NetworkSettings"]["IPAddress"], "10.88.0.2");
        assert_eq!(j["NetworkSettings"]["Ports"], json!({"80/tcp": [{"HostIp": "", "HostPort": "32768"}]}));
    }

    #[test]
    fn tail_takes_all_or_a_count() {
        assert_eq!(parse_tail("all").unwrap(), Tail::All);
        assert_eq!(parse_tail("10").unwrap(), Tail::Last(10));
        assert_eq!(parse_tail("0").unwrap(), Tail::Last(0));
        assert_eq!(parse_tail("-1").unwrap(), Tail::All);
        assert!(parse_tail("some").is_err());
    }

    #[test]
    fn since_takes_durations_times_and_unix_seconds() {
        let now = prost_types::Timestamp { seconds: 1_714_557_600, nanos: 0 };
        let at = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        assert_eq!(parse_since("10m", now).unwrap(), at(now.seconds - 600, 0));
        assert_eq!(parse_since("1h30m", now).unwrap(), at(now.seconds - 5400, 0));
        assert_eq!(parse_since("1.5s", now).unwrap(), at(now.seconds - 2, 500_000_000));
        assert_eq!(parse_since("2024-05-01T10:00:00Z", now).unwrap(), at(1_714_557_600, 0));
        assert_eq!(parse_since("2024-05-01T12:00:00+02:00", now).unwrap(), at(1_714_557_600, 0));
        assert_eq!(parse_since("1714557600", now).unwrap(), at(1_714_557_600, 0));
        assert_eq!(parse_since("1714557600.5", now).unwrap(), at(1_714_557_600, 500_000_000));
        for bad in ["", "yesterday", "10x", "1h30", "2024-13-01T00:00:00Z", "1.2.3"] {
            assert!(parse_since(bad, now).is_err(), "{bad:?} was accepted");
        }
    }
}
