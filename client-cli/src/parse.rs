//! Docker's syntax for flag values: the clap value parsers of `run`, `create`, `exec`, `logs` and `events`, so a
//! malformed flag is reported by clap with the flag's name and the usage line.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cm_api::v1 as pb;

/// `--network`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// The default bridge, with NAT and published ports.
    #[value(alias = "default")]
    Bridge,
    /// Loopback only.
    None,
    /// The host's network namespace.
    Host,
}

impl From<Network> for pb::NetworkMode {
    fn from(network: Network) -> Self {
        match network {
            Network::Bridge => pb::NetworkMode::Bridge,
            Network::None => pb::NetworkMode::None,
            Network::Host => pb::NetworkMode::Host,
        }
    }
}

/// `--userns`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Userns {
    /// The host's user namespace (container root is host root).
    Host,
    /// Its own: container root is an unprivileged host id from the server's subordinate ids.
    Auto,
}

impl From<Userns> for pb::UserNamespaceMode {
    fn from(userns: Userns) -> Self {
        match userns {
            Userns::Host => pb::UserNamespaceMode::Host,
            Userns::Auto => pb::UserNamespaceMode::Auto,
        }
    }
}

/// The ports one `--publish` flag stands for (more than one for a range).
#[derive(Clone, Debug, PartialEq)]
pub struct Published(pub Vec<pb::PortMapping>);

/// `-e KEY=VALUE` as given; `-e KEY` takes KEY's value from the client's environment, or nothing when unset.
pub fn parse_env(entry: &str, lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<String>> {
    match entry.split_once('=') {
        Some(("", _)) => bail!("invalid environment variable: {entry}"),
        Some(_) => Ok(Some(entry.to_string())),
        None if entry.is_empty() => bail!("invalid environment variable: empty name"),
        None => Ok(lookup(entry).map(|value| format!("{entry}={value}"))),
    }
}

/// An env file as docker reads it: KEY=VALUE lines (the value verbatim), bare KEY lines from the client's
/// environment, `#` comments and blank lines skipped, leading whitespace ignored.
pub fn parse_env_file(text: &str, lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Vec<String>> {
    let mut env = Vec::new();
    for (number, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split_once('=').map_or(line, |(key, _)| key);
        if key.is_empty() {
            bail!("line {}: no variable name in '{line}'", number + 1);
        }
        if key.contains(char::is_whitespace) {
            bail!("line {}: variable '{key}' contains whitespace", number + 1);
        }
        env.extend(parse_env(line, &lookup)?);
    }
    Ok(env)
}

/// `--workdir`: must be absolute, as docker requires.
pub fn parse_workdir(text: &str) -> anyhow::Result<String> {
    if !text.starts_with('/') {
        bail!("the working directory '{text}' is invalid: it needs to be an absolute path");
    }
    Ok(text.to_string())
}

/// `--label KEY[=VALUE]` (a bare KEY gets an empty value, as docker).
pub fn parse_label(text: &str) -> anyhow::Result<(String, String)> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    if key.is_empty() {
        bail!("invalid label '{text}': empty key");
    }
    Ok((key.to_string(), value.to_string()))
}

/// `--publish [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]`, docker's syntax: "80", "8080:80", "127.0.0.1:8080:80",
/// "127.0.0.1::80" (any free host port), "[::1]:8080:80", "53:53/udp", ranges "8000-8001:80-81" and "80-81".
pub fn parse_publish(text: &str) -> anyhow::Result<Published> {
    let invalid = |why: &str| anyhow::anyhow!("invalid port mapping '{text}': {why}");
    let (rest, protocol) = match text.rsplit_once('/') {
        Some((rest, proto)) => (rest, proto.to_ascii_lowercase()),
        None => (text, "tcp".to_string()),
    };
    if protocol != "tcp" && protocol != "udp" {
        return Err(invalid("the protocol must be tcp or udp"));
    }
    // Split from the right, so an unbracketed IPv6 address keeps its colons.
    let mut parts = rest.rsplitn(3, ':');
    let container = parts.next().unwrap_or_default();
    let host_port = parts.next();
    let host_ip = parts.next().unwrap_or_default();
    let host_ip = host_ip.strip_prefix('[').and_then(|ip| ip.strip_suffix(']')).unwrap_or(host_ip);
    if !host_ip.is_empty() && host_ip.parse::<IpAddr>().is_err() {
        return Err(invalid(&format!("'{host_ip}' is not an IP address")));
    }
    let (first, last) = port_range(container).map_err(|why| invalid(&why))?;
    if first == 0 {
        return Err(invalid("the container port must be 1-65535"));
    }
    let count = last - first + 1;
    let host_first = match host_port.filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => {
            let (host_first, host_last) = port_range(p).map_err(|why| invalid(&why))?;
            if host_last - host_first + 1 != count {
                return Err(invalid("the host and container port ranges must be the same size"));
            }
            Some(host_first)
        }
    };
    let mappings = (0..count)
        .map(|i| pb::PortMapping {
            host_ip: host_ip.to_string(),
            host_port: host_first.map_or(0, |h| u32::from(h) + u32::from(i)),
            container_port: u32::from(first) + u32::from(i),
            protocol: protocol.clone(),
        })
        .collect();
    Ok(Published(mappings))
}

/// "80" or "8000-8010", inclusive.
fn port_range(text: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("'{p}' is not a port number (0-65535)"));
    match text.split_once('-') {
        Some((first, last)) => {
            let (first, last) = (port(first)?, port(last)?);
            if last < first {
                return Err(format!("'{text}' is an empty range"));
            }
            Ok((first, last))
        }
        None => port(text).map(|p| (p, p)),
    }
}

/// `--volume HOST_PATH:CONTAINER_PATH[:ro|rw]`: a bind mount. A relative host path ("./data") is made absolute
/// here, as docker does; a bare name would be a named volume, which cm does not have.
pub fn parse_volume(text: &str) -> anyhow::Result<pb::Mount> {
    let invalid = |why: &str| anyhow::anyhow!("invalid volume '{text}': {why}");
    let mut parts = text.split(':');
    let (Some(source), Some(target)) = (parts.next(), parts.next()) else {
        return Err(invalid("use HOST_PATH:CONTAINER_PATH[:ro] (cm has no anonymous volumes)"));
    };
    let read_only = mount_mode(parts.next()).map_err(|why| invalid(&why))?;
    if parts.next().is_some() {
        return Err(invalid("too many ':'"));
    }
    let source = if source.starts_with('/') {
        PathBuf::from(source)
    } else if source == "." || source.starts_with("./") || source.starts_with("../") || source == ".." {
        std::env::current_dir().context("resolving a relative volume path")?.join(source)
    } else {
        return Err(invalid(&format!(
            "'{source}' is not a path and cm has no named volumes; give an absolute host path or ./relative"
        )));
    };
    Ok(pb::Mount {
        r#type: "bind".into(),
        source: source.to_string_lossy().into_owned(),
        target: container_path(target).map_err(|why| invalid(&why))?,
        read_only,
    })
}

/// `--tmpfs PATH[:ro|rw]`.
pub fn parse_tmpfs(text: &str) -> anyhow::Result<pb::Mount> {
    let invalid = |why: &str| anyhow::anyhow!("invalid tmpfs '{text}': {why}");
    let (target, mode) = match text.split_once(':') {
        Some((target, mode)) => (target, Some(mode)),
        None => (text, None),
    };
    Ok(pb::Mount {
        r#type: "tmpfs".into(),
        source: String::new(),
        target: container_path(target).map_err(|why| invalid(&why))?,
        read_only: mount_mode(mode).map_err(|why| invalid(&why))?,
    })
}

/// Mount options: "ro" or "rw" (comma-separated, the last one wins); true for read-only.
fn mount_mode(mode: Option<&str>) -> Result<bool, String> {
    let mut read_only = false;
    for option in mode.unwrap_or_default().split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_only = true,
            "rw" => read_only = false,
            other => return Err(format!("unsupported option '{other}' (cm supports ro and rw)")),
        }
    }
    Ok(read_only)
}

fn container_path(path: &str) -> Result<String, String> {
    if !Path::new(path).is_absolute() {
        return Err(format!("the container path '{path}' must be absolute"));
    }
    Ok(path.to_string())
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
    use super::*;

    fn mapping(host_ip: &str, host_port: u32, container_port: u32, protocol: &str) -> pb::PortMapping {
        pb::PortMapping { host_ip: host_ip.into(), host_port, container_port, protocol: protocol.into() }
    }

    fn publish(text: &str) -> Vec<pb::PortMapping> {
        parse_publish(text).unwrap().0
    }

    #[test]
    fn publish_takes_docker_syntax() {
        assert_eq!(publish("80"), [mapping("", 0, 80, "tcp")]);
        assert_eq!(publish("8080:80"), [mapping("", 8080, 80, "tcp")]);
        assert_eq!(publish("127.0.0.1:8080:80"), [mapping("127.0.0.1", 8080, 80, "tcp")]);
        assert_eq!(publish("127.0.0.1::80"), [mapping("127.0.0.1", 0, 80, "tcp")]);
        assert_eq!(publish("53:53/udp"), [mapping("", 53, 53, "udp")]);
        assert_eq!(publish("80/TCP"), [mapping("", 0, 80, "tcp")]);
        assert_eq!(publish("[::1]:8080:80"), [mapping("::1", 8080, 80, "tcp")]);
        assert_eq!(publish("::1:8080:80"), [mapping("::1", 8080, 80, "tcp")]);
        assert_eq!(publish("8000-8001:80-81"), [mapping("", 8000, 80, "tcp"), mapping("", 8001, 81, "tcp")]);
        assert_eq!(publish("80-81/udp"), [mapping("", 0, 80, "udp"), mapping("", 0, 81, "udp")]);
    }

    #[test]
    fn publish_rejects_malformed_mappings() {
        for bad in [
            "",
            "http",
            "0",
            "70000",
            "80/sctp",
            "80/",
            "a:80",
            "1.2.3:8080:80",
            "8080:80:90:100",
            "81-80",
            "8000-8002:80-81",
            ":",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad:?} was accepted");
        }
        let e = parse_publish("80/sctp").unwrap_err().to_string();
        assert!(e.contains("'80/sctp'") && e.contains("tcp or udp"), "{e}");
    }

    #[test]
    fn volumes_are_bind_mounts() {
        let m = parse_volume("/srv/data:/data:ro").unwrap();
        assert_eq!(
            (m.r#type.as_str(), m.source.as_str(), m.target.as_str(), m.read_only),
            ("bind", "/srv/data", "/data", true)
        );
        assert!(!parse_volume("/srv:/srv").unwrap().read_only);
        let relative = parse_volume("./data:/data").unwrap();
        assert_eq!(relative.source, std::env::current_dir().unwrap().join("./data").to_string_lossy());
        for bad in ["/only", "named:/data", "/a:relative", "/a:/b:rx", "/a:/b:ro:x"] {
            assert!(parse_volume(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn tmpfs_mounts_a_path() {
        let m = parse_tmpfs("/run").unwrap();
        assert_eq!(
            (m.r#type.as_str(), m.source.as_str(), m.target.as_str(), m.read_only),
            ("tmpfs", "", "/run", false)
        );
        assert!(parse_tmpfs("/run:ro").unwrap().read_only);
        assert!(parse_tmpfs("run").is_err());
        assert!(parse_tmpfs("/run:size=64m").is_err());
    }

    #[test]
    fn env_entries_take_bare_keys_from_the_client() {
        let lookup = |key: &str| (key == "HOME").then(|| "/home/me".to_string());
        assert_eq!(parse_env("A=1", lookup).unwrap(), Some("A=1".into()));
        assert_eq!(parse_env("A=", lookup).unwrap(), Some("A=".into()));
        assert_eq!(parse_env("A=b=c", lookup).unwrap(), Some("A=b=c".into()));
        assert_eq!(parse_env("HOME", lookup).unwrap(), Some("HOME=/home/me".into()));
        assert_eq!(parse_env("UNSET", lookup).unwrap(), None);
        assert!(parse_env("=1", lookup).is_err());
    }

    #[test]
    fn env_files_read_like_docker() {
        let lookup = |key: &str| (key == "HOME").then(|| "/home/me".to_string());
        let text = "\u{feff}# comment\n\nA=1\n  B=two words \nHOME\nUNSET\nC=\n  # indented comment\nD=x=y\n";
        assert_eq!(parse_env_file(text, lookup).unwrap(), ["A=1", "B=two words ", "HOME=/home/me", "C=", "D=x=y"]);
        assert!(parse_env_file("A B=1\n", lookup).unwrap_err().to_string().contains("line 1"));
        assert!(parse_env_file("ok=1\n=1\n", lookup).unwrap_err().to_string().contains("line 2"));
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
