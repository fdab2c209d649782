//! `ps`: the container table, as docker draws it.

use cm_api::v1::{self as pb, ContainerState};

use crate::connect::Client;
use crate::error::status_error;
use crate::format::{self, host_address, protocol};

#[derive(clap::Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default: running ones).
    #[arg(short, long)]
    all: bool,
    /// Only show ids.
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate ids and commands.
    #[arg(long)]
    no_trunc: bool,
}

/// `ps [-a] [-q] [--no-trunc]`, newest first.
pub async fn ps(client: &mut Client, args: PsArgs) -> anyhow::Result<i32> {
    let PsArgs { all, quiet, no_trunc } = args;
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
        ContainerState::Damaged => "Damaged".into(),
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

#[cfg(test)]
mod tests {
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
}
