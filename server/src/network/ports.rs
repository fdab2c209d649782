//! Published ports: a port as asked for and as bound, and the socket that holds a host port while a container
//! publishes it.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

pub use super::nft::Protocol;

/// A published port. As asked for, `host_port` 0 means any free one; as bound (a running container's), it is
/// the port actually held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConfig {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortConfig {
    /// Parses the API's fields; errors name the port.
    pub fn parse(host_ip: &str, host_port: u32, container_port: u32, protocol: &str) -> Result<PortConfig, String> {
        let shown = format!("{host_ip}:{host_port}:{container_port}/{protocol}");
        let protocol = match protocol.to_ascii_lowercase().as_str() {
            "" | "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => return Err(format!("published port {shown}: protocol {other:?} is not tcp or udp")),
        };
        let host_ip = match host_ip.trim_start_matches('[').trim_end_matches(']') {
            "" | "0.0.0.0" => None,
            text => match text.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(ip)) => Some(ip),
                Ok(std::net::IpAddr::V6(_)) => {
                    return Err(format!("published port {shown}: IPv6 host addresses are not supported yet"));
                }
                Err(_) => return Err(format!("published port {shown}: {text:?} is not an IPv4 address")),
            },
        };
        let host_port = u16::try_from(host_port)
            .map_err(|_| format!("published port {shown}: host port {host_port} is not in 1-65535"))?;
        let container_port = u16::try_from(container_port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("published port {shown}: container port {container_port} is not in 1-65535"))?;
        Ok(PortConfig { host_ip, host_port, container_port, protocol })
    }

    /// Rejects the same host port asked for twice.
    pub fn check_unique(ports: &[PortConfig]) -> Result<(), String> {
        let mut seen = HashSet::new();
        for p in ports.iter().filter(|p| p.host_port != 0) {
            if !seen.insert((p.host_port, p.protocol)) {
                return Err(format!("host port {}/{} is published twice", p.host_port, p.protocol.as_str()));
            }
        }
        Ok(())
    }
}

/// Holds a host port while a container publishes it, so no other program can take it: a bound, not
/// listening, TCP socket, or a bound UDP socket. Traffic never reaches it; DNAT sends it to the container.
pub(super) enum Reservation {
    Tcp(#[allow(dead_code)] OwnedFd),
    Udp(#[allow(dead_code)] std::net::UdpSocket),
}

pub(super) fn reserve(ip: Option<Ipv4Addr>, port: u16, protocol: Protocol) -> std::io::Result<(Reservation, u16)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, getsockname, socket};
    let address = SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port);
    match protocol {
        Protocol::Tcp => {
            let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
            bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(address))?;
            let bound: SockaddrIn = getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd))?;
            Ok((Reservation::Tcp(fd), bound.port()))
        }
        Protocol::Udp => {
            let socket = std::net::UdpSocket::bind(SocketAddr::V4(address))?;
            let bound = socket.local_addr()?.port();
            Ok((Reservation::Udp(socket), bound))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_with_errors_that_name_them() {
        let p = PortConfig::parse("", 8080, 80, "").unwrap();
        assert_eq!(p, PortConfig { host_ip: None, host_port: 8080, container_port: 80, protocol: Protocol::Tcp });
        let p = PortConfig::parse("127.0.0.1", 0, 53, "UDP").unwrap();
        assert_eq!((p.host_ip, p.protocol), (Some(Ipv4Addr::LOCALHOST), Protocol::Udp));
        let err = |args: (&str, u32, u32, &str)| PortConfig::parse(args.0, args.1, args.2, args.3).unwrap_err();
        assert!(err(("", 8080, 0, "tcp")).contains("container port 0 is not in 1-65535"));
        assert!(err(("", 70000, 80, "tcp")).contains("host port 70000"));
        assert!(err(("", 8080, 80, "sctp")).contains("\"sctp\" is not tcp or udp"));
        assert!(err(("localhost", 8080, 80, "tcp")).contains("\"localhost\" is not an IPv4 address"));
        assert!(err(("::1", 8080, 80, "tcp")).contains("IPv6"));
        let twice = [PortConfig::parse("", 8080, 80, "").unwrap(), PortConfig::parse("", 8080, 81, "").unwrap()];
        assert!(PortConfig::check_unique(&twice).unwrap_err().contains("8080/tcp is published twice"));
        let any = [PortConfig::parse("", 0, 80, "").unwrap(), PortConfig::parse("", 0, 81, "").unwrap()];
        PortConfig::check_unique(&any).unwrap();
    }

    #[test]
    fn reservations_hold_the_port_and_report_the_picked_one() {
        let (_picked, port) = reserve(Some(Ipv4Addr::LOCALHOST), 0, Protocol::Tcp).unwrap();
        assert_ne!(port, 0);
        // Re-reserving after a drop needs a port that no other test's connect() can take as its ephemeral
        // source port in between: one below the kernel's ephemeral range.
        let (held, port) = (20000..32000u16)
            .skip(std::process::id() as usize % 8000)
            .find_map(|port| reserve(Some(Ipv4Addr::LOCALHOST), port, Protocol::Tcp).ok())
            .unwrap();
        let again = reserve(Some(Ipv4Addr::LOCALHOST), port, Protocol::Tcp).err().unwrap();
        assert_eq!(again.raw_os_error(), Some(nix::libc::EADDRINUSE));
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err(), "nobody else can listen there");
        drop(held);
        reserve(Some(Ipv4Addr::LOCALHOST), port, Protocol::Tcp).unwrap();
        let (_udp, port) = reserve(Some(Ipv4Addr::LOCALHOST), 0, Protocol::Udp).unwrap();
        assert!(std::net::UdpSocket::bind(("127.0.0.1", port)).is_err());
    }
}
