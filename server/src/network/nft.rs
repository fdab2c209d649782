//! cm's nftables table: masquerade for the bridge's subnet, DNAT for published ports, and no way from the
//! bridge to the host's loopback but the replies of those. The whole table is
//! rendered from the current state and replaced in one `nft -f` transaction, so a change is never half
//! applied and rules of containers that no longer exist cannot survive a change.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::subnet::Ipv4Net;

/// Transport protocol of a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One published port: traffic to `host_ip:host_port` (any local address when None) goes to
/// `container_ip:container_port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub protocol: Protocol,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

/// Whether `name` can be used as a table or interface name in a ruleset without quoting trouble.
pub fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// The ruleset text that replaces table `ip <table>`.
pub fn ruleset(table: &str, bridge: &str, subnet: Ipv4Net, forwards: &[Forward]) -> String {
    let mut s = String::new();
    // Declaring the table first makes the delete succeed when it does not exist yet.
    let _ = writeln!(s, "table ip {table} {{}}\ndelete table ip {table}\ntable ip {table} {{");
    // Published ports answer on every local address (other hosts, the host's addresses, 127.0.0.1): from
    // outside through prerouting, from the host itself through output.
    for (chain, hook, priority) in [("prerouting", "prerouting", "dstnat"), ("output", "output", "-100")] {
        let _ = writeln!(s, "\tchain {chain} {{\n\t\ttype nat hook {hook} priority {priority}; policy accept;");
        let _ = writeln!(s, "\t\tfib daddr type local jump published\n\t}}");
    }
    let _ = writeln!(s, "\tchain published {{");
    for f in forwards {
        let daddr = f.host_ip.map(|ip| format!("ip daddr {ip} ")).unwrap_or_default();
        let _ = writeln!(
            s,
            "\t\t{daddr}{} dport {} dnat to {}:{}",
            f.protocol.as_str(),
            f.host_port,
            f.container_ip,
            f.container_port
        );
    }
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;");
    // Containers reach the outside with the host's address.
    let _ = writeln!(s, "\t\tip saddr {subnet} oifname != \"{bridge}\" masquerade");
    // The host's own connections to 127.0.0.1:PORT, and a container's to a published port, come back
    // through the gateway.
    let _ = writeln!(s, "\t\toifname \"{bridge}\" ip saddr 127.0.0.0/8 masquerade");
    let _ = writeln!(s, "\t\toifname \"{bridge}\" ip saddr {subnet} ct status dnat masquerade");
    let _ = writeln!(s, "\t}}");
    // route_localnet on the bridge (for published ports on 127.0.0.1) would also let a container reach the
    // host's loopback services with crafted packets (CVE-2020-8558): from the bridge, 127.0.0.0/8 takes only
    // the replies of connections DNATed to a container (the host's own 127.0.0.1:PORT ones).
    let _ = writeln!(s, "\tchain input {{\n\t\ttype filter hook input priority filter; policy accept;");
    let _ = writeln!(s, "\t\tiifname \"{bridge}\" ip daddr 127.0.0.0/8 ct status dnat accept");
    let _ = writeln!(s, "\t\tiifname \"{bridge}\" ip daddr 127.0.0.0/8 drop");
    let _ = writeln!(s, "\t}}\n}}");
    s
}

/// Runs `nft -f -` with `script` as one transaction.
pub fn apply(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (install nftables; cm's NAT and published ports use it): {e}"))?;
    let written = child.stdin.take().expect("piped").write_all(script.as_bytes());
    let output = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if !output.status.success() {
        return Err(format!("nft refused cm's rules: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    written.map_err(|e| format!("writing to nft: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_masquerades_the_subnet_and_forwards_ports() {
        let forwards = [
            Forward {
                host_ip: None,
                host_port: 8080,
                protocol: Protocol::Tcp,
                container_ip: Ipv4Addr::new(10, 88, 0, 2),
                container_port: 80,
            },
            Forward {
                host_ip: Some(Ipv4Addr::LOCALHOST),
                host_port: 5353,
                protocol: Protocol::Udp,
                container_ip: Ipv4Addr::new(10, 88, 0, 3),
                container_port: 53,
            },
        ];
        let text = ruleset("cm", "cm0", "10.88.0.0/16".parse().unwrap(), &forwards);
        assert!(text.starts_with("table ip cm {}\ndelete table ip cm\ntable ip cm {\n"), "{text}");
        assert!(text.contains("\t\ttcp dport 8080 dnat to 10.88.0.2:80\n"), "{text}");
        assert!(text.contains("\t\tip daddr 127.0.0.1 udp dport 5353 dnat to 10.88.0.3:53\n"), "{text}");
        assert!(text.contains("ip saddr 10.88.0.0/16 oifname != \"cm0\" masquerade"), "{text}");
        assert_eq!(text.matches("fib daddr type local jump published").count(), 2);
        let accept = text.find("iifname \"cm0\" ip daddr 127.0.0.0/8 ct status dnat accept\n").expect(&text);
        let drop = text.find("iifname \"cm0\" ip daddr 127.0.0.0/8 drop\n").expect(&text);
        assert!(accept < drop, "{text}");
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn names_that_could_break_the_ruleset_are_refused() {
        assert!(valid_name("cm0", 15));
        assert!(valid_name("cm_test-1", 15));
        assert!(!valid_name("", 15));
        assert!(!valid_name("0cm", 15));
        assert!(!valid_name("cm0\"; flush ruleset", 64));
        assert!(!valid_name("a-very-long-bridge-name", 15));
    }
}
