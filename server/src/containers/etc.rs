//! The files bind-mounted over a container's /etc/hosts, /etc/hostname and /etc/resolv.conf.

use std::path::{Path, PathBuf};

use super::Config;

/// Writes the files into the container's directory (mode 0644: a non-root user must be able to read them); returns (host file, path inside the container) pairs.
/// A container in the host's network namespace (`host_network`) gets the host's /etc/hosts.
pub fn write_files(dir: &Path, config: &Config, host_network: bool) -> std::io::Result<Vec<(PathBuf, String)>> {
    let hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| hosts_file(config))
    } else {
        hosts_file(config)
    };
    let files = [
        ("hosts", hosts, "/etc/hosts"),
        ("hostname", format!("{}\n", config.hostname), "/etc/hostname"),
        (
            "resolv.conf",
            resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
            "/etc/resolv.conf",
        ),
    ];
    let mut out = Vec::new();
    for (name, content, target) in files {
        let path = dir.join(name);
        crate::store::write_replace_readable(&path, content.as_bytes())?;
        out.push((path, target.to_string()));
    }
    Ok(out)
}

fn hosts_file(config: &Config) -> String {
    let mut names = vec![config.hostname.clone()];
    if !config.name.is_empty() && config.name != config.hostname {
        names.push(config.name.clone());
    }
    // On the bridge the container's own address carries its names, so other tools resolve them to it.
    let own = config.address.map_or_else(|| "127.0.1.1".to_string(), |a| a.to_string());
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}\t{}\n", names.join(" "))
}

/// The host's resolv.conf without loopback nameservers (they mean nothing inside the container's own
/// network namespace), as docker does.
pub(super) fn resolv_conf(host: &str) -> String {
    host.lines()
        .filter(|l| {
            let mut words = l.split_whitespace();
            !(words.next() == Some("nameserver")
                && words.next().is_some_and(|ip| ip.starts_with("127.") || ip == "::1"))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_nameservers_are_dropped() {
        let host = "search lan\nnameserver 127.0.0.53\nnameserver 10.0.0.1\nnameserver ::1\noptions edns0\n";
        assert_eq!(resolv_conf(host), "search lan\nnameserver 10.0.0.1\noptions edns0\n");
    }
}
