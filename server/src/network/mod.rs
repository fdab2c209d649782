//! Bridge networking: one bridge per server with a conflict-free subnet, a veth pair per container with its
//! end created inside the container's network namespace, addresses from [`ipam`], and NAT (masquerade and
//! published ports) in an nftables table of cm's own. All link work goes through rtnetlink ([`link`]); no
//! `ip` or `brctl` commands.

pub mod ipam;
pub mod link;
pub mod nft;
pub mod subnet;

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};

use ipam::Ipam;
use link::Netlink;
use nft::Forward;
pub use nft::Protocol;
pub use subnet::Ipv4Net;

/// Errors of network setup, each meaning one gRPC code to the caller.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The request itself is wrong (a malformed port, a port twice).
    #[error("{0}")]
    Invalid(String),
    /// The request is fine but cannot be met now (a port in use, no address left).
    #[error("{0}")]
    Unavailable(String),
    /// The system failed us.
    #[error("{0:#}")]
    System(#[from] anyhow::Error),
}

/// Server-wide network settings (cm-server's --bridge, --subnet, --nft-table).
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    pub bridge: String,
    /// None: pick a private subnet that collides with nothing on the host.
    pub subnet: Option<Ipv4Net>,
    pub nft_table: String,
}

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
enum Reservation {
    Tcp(#[allow(dead_code)] OwnedFd),
    Udp(#[allow(dead_code)] std::net::UdpSocket),
}

fn reserve(ip: Option<Ipv4Addr>, port: u16, protocol: Protocol) -> std::io::Result<(Reservation, u16)> {
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

/// The name of a container's host-side veth: `cm-` and 12 hex digits of its id (15 bytes, the limit).
pub fn veth_name(id: &str) -> String {
    format!("cm-{}", &id[..12.min(id.len())])
}

/// What a running container publishes.
struct Published {
    address: Ipv4Addr,
    ports: Vec<PortConfig>,
    _reservations: Vec<Reservation>,
}

/// The subnet a server used, kept so a restarted server picks the same one.
#[derive(Serialize, Deserialize)]
struct Saved {
    bridge: String,
    subnet: Ipv4Net,
}

/// The default bridge network of this server.
pub struct BridgeNetwork {
    options: NetworkOptions,
    subnet: Ipv4Net,
    bridge_index: u32,
    netlink: Netlink,
    ipam: Mutex<Ipam>,
    /// Published ports of running containers; the nftables table is rebuilt from it under this lock.
    published: tokio::sync::Mutex<BTreeMap<String, Published>>,
}

impl BridgeNetwork {
    /// Sets up the bridge (creating it if needed) on the given or a conflict-free subnet, and turns on
    /// forwarding. The nftables table is written by [`BridgeNetwork::reconcile`] once containers are known.
    pub async fn open(root: &Path, options: NetworkOptions) -> anyhow::Result<BridgeNetwork> {
        if !nft::valid_name(&options.bridge, 15) {
            anyhow::bail!(
                "--bridge {:?}: a bridge name is 1-15 letters, digits, '-', '_' or '.', starting with a letter",
                options.bridge
            );
        }
        if !nft::valid_name(&options.nft_table, 64) {
            anyhow::bail!(
                "--nft-table {:?}: a table name is 1-64 letters, digits, '-', '_' or '.', starting with a letter",
                options.nft_table
            );
        }
        let netlink = Netlink::connect()?;
        let existing = netlink.index(&options.bridge).await?;
        let host = netlink.host_nets(existing).await?;
        let saved_path = saved_path(root);
        let saved = crate::store::read_json::<Saved>(&saved_path)
            .ok()
            .flatten()
            .filter(|s| s.bridge == options.bridge)
            .map(|s| s.subnet);
        let subnet = match options.subnet {
            Some(subnet) => {
                if let Some(clash) = subnet::conflict(&subnet, &host) {
                    anyhow::bail!("--subnet {subnet} overlaps {clash}; choose a subnet the host does not use");
                }
                subnet
            }
            None => {
                let subnet = subnet::choose(saved, &host).ok_or_else(|| {
                    anyhow!("every candidate private subnet collides with the host's routes; give one with --subnet")
                })?;
                tracing::info!(%subnet, bridge = %options.bridge, "picked a subnet no host address or route uses");
                subnet
            }
        };
        let bridge_index = netlink
            .ensure_bridge(&options.bridge, subnet.gateway(), subnet)
            .await
            .with_context(|| format!("setting up bridge {}", options.bridge))?;
        // The host's own connections to 127.0.0.1:PORT are DNATed onto the bridge.
        link::sysctl(&format!("ipv4/conf/{}/route_localnet", options.bridge), "1")?;
        link::sysctl("ipv4/ip_forward", "1")?;
        std::fs::create_dir_all(root.join("network"))?;
        let saved = Saved { bridge: options.bridge.clone(), subnet };
        crate::store::write_json(&saved_path, &saved)?;
        tracing::info!(bridge = %options.bridge, %subnet, gateway = %subnet.gateway(), table = %options.nft_table, "bridge network ready");
        Ok(BridgeNetwork {
            ipam: Mutex::new(Ipam::new(subnet)),
            options,
            subnet,
            bridge_index,
            netlink,
            published: tokio::sync::Mutex::new(BTreeMap::new()),
        })
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn bridge(&self) -> &str {
        &self.options.bridge
    }

    /// An address for container `id` (the one it holds, or a new one).
    pub fn allocate(&self, id: &str) -> Result<Ipv4Addr, NetError> {
        self.ipam.lock().unwrap().allocate(id).map_err(NetError::Unavailable)
    }

    /// Records the address a container was given before a restart. Fails if it is not on this subnet or
    /// someone else holds it (the container then gets a new one when it starts).
    pub fn claim(&self, id: &str, address: Ipv4Addr) -> Result<(), String> {
        self.ipam.lock().unwrap().claim(address, id)
    }

    pub fn address_of(&self, id: &str) -> Option<Ipv4Addr> {
        self.ipam.lock().unwrap().address_of(id)
    }

    /// Gives back the address of a removed container.
    pub fn release(&self, id: &str) {
        if let Some(address) = self.ipam.lock().unwrap().release(id) {
            tracing::debug!(container = %id, %address, "address released");
        }
    }

    /// Connects a container whose namespaces exist (its init waits for the go-ahead): reserves its host
    /// ports, creates its veth pair, configures eth0 and adds its port forwards. On error nothing is left.
    pub async fn attach(
        &self,
        id: &str,
        netns: OwnedFd,
        address: Ipv4Addr,
        ports: &[PortConfig],
    ) -> Result<Vec<PortConfig>, NetError> {
        let mut reservations = Vec::new();
        let mut bound = Vec::new();
        let published = self.published.lock().await;
        for p in ports {
            let taken = published.values().flat_map(|x| &x.ports).any(|b| {
                b.host_port == p.host_port
                    && b.protocol == p.protocol
                    && (b.host_ip.is_none() || p.host_ip.is_none() || b.host_ip == p.host_ip)
            });
            let shown =
                format!("{}:{}/{}", p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), p.host_port, p.protocol.as_str());
            if p.host_port != 0 && taken {
                return Err(NetError::Unavailable(format!(
                    "host port {shown} is already published by another container"
                )));
            }
            let (reservation, host_port) =
                reserve(p.host_ip, p.host_port, p.protocol).map_err(|e| match e.raw_os_error() {
                    Some(nix::libc::EADDRINUSE) => {
                        NetError::Unavailable(format!("host port {shown} is already in use"))
                    }
                    Some(nix::libc::EADDRNOTAVAIL) => NetError::Invalid(format!(
                        "cannot publish on {shown}: {} is not an address of this host",
                        p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)
                    )),
                    _ => NetError::System(anyhow!("reserving host port {shown}: {e}")),
                })?;
            reservations.push(reservation);
            bound.push(PortConfig {
                host_ip: p.host_ip,
                host_port,
                container_port: p.container_port,
                protocol: p.protocol,
            });
        }
        drop(published);
        let veth = veth_name(id);
        if let Err(e) = self.connect_veth(&veth, netns, address).await {
            let _ = self.netlink.delete(&veth).await;
            return Err(e.into());
        }
        if !bound.is_empty() {
            let mut published = self.published.lock().await;
            published.insert(id.to_string(), Published { address, ports: bound.clone(), _reservations: reservations });
            if let Err(e) = self.apply(&published) {
                published.remove(id);
                drop(published);
                let _ = self.netlink.delete(&veth).await;
                return Err(NetError::System(anyhow!(e)));
            }
        }
        Ok(bound)
    }

    async fn connect_veth(&self, veth: &str, netns: OwnedFd, address: Ipv4Addr) -> anyhow::Result<()> {
        // A veth of an earlier run of this container may outlive it for a moment (namespaces die lazily).
        self.netlink.delete(veth).await?;
        let index = self.netlink.add_veth(veth, self.bridge_index, &netns).await?;
        link::sysctl(&format!("ipv6/conf/{veth}/accept_dad"), "0")?;
        self.netlink.set_up(index).await?;
        link::configure_container(netns, address, self.subnet.prefix(), self.subnet.gateway()).await
    }

    /// Takes back what a container that stopped had: its veth and its port forwards (the address stays until
    /// it is removed).
    pub async fn detach(&self, id: &str) {
        let mut published = self.published.lock().await;
        if published.remove(id).is_some()
            && let Err(e) = self.apply(&published)
        {
            tracing::warn!(container = %id, error = %e, "cannot remove the container's port forwards");
        }
        drop(published);
        if let Err(e) = self.netlink.delete(&veth_name(id)).await {
            tracing::warn!(container = %id, error = %e, "cannot delete the container's veth");
        }
    }

    /// After a restart: holds the ports of a container that kept running, and forwards them again.
    pub async fn readopt(&self, id: &str, address: Ipv4Addr, ports: &[PortConfig]) {
        let mut reservations = Vec::new();
        for p in ports {
            match reserve(p.host_ip, p.host_port, p.protocol) {
                Ok((r, _)) => reservations.push(r),
                Err(e) => {
                    tracing::warn!(container = %id, port = p.host_port, error = %e, "cannot hold a published port again")
                }
            }
        }
        if !ports.is_empty() {
            let published = Published { address, ports: ports.to_vec(), _reservations: reservations };
            self.published.lock().await.insert(id.to_string(), published);
        }
    }

    /// At start, once containers are loaded: removes the veths of containers that are not running (left by a
    /// crash) and rewrites the nftables table from the running ones.
    pub async fn reconcile(&self, running: &HashSet<String>) -> anyhow::Result<()> {
        let keep: HashSet<String> = running.iter().map(|id| veth_name(id)).collect();
        for port in self.netlink.ports(self.bridge_index).await? {
            if port.starts_with("cm-") && !keep.contains(&port) {
                tracing::info!(link = %port, "removing the veth of a container that is gone");
                self.netlink.delete(&port).await?;
            }
        }
        let published = self.published.lock().await;
        self.apply(&published).map_err(|e| anyhow!(e))
    }

    /// Replaces cm's nftables table with one built from `published`.
    fn apply(&self, published: &BTreeMap<String, Published>) -> Result<(), String> {
        let forwards: Vec<Forward> = published
            .values()
            .flat_map(|p| {
                p.ports.iter().map(|b| Forward {
                    host_ip: b.host_ip,
                    host_port: b.host_port,
                    protocol: b.protocol,
                    container_ip: p.address,
                    container_port: b.container_port,
                })
            })
            .collect();
        nft::apply(&nft::ruleset(&self.options.nft_table, &self.options.bridge, self.subnet, &forwards))
    }
}

fn saved_path(root: &Path) -> PathBuf {
    root.join("network").join("bridge.json")
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
        let (held, port) = reserve(Some(Ipv4Addr::LOCALHOST), 0, Protocol::Tcp).unwrap();
        assert_ne!(port, 0);
        let again = reserve(Some(Ipv4Addr::LOCALHOST), port, Protocol::Tcp).err().unwrap();
        assert_eq!(again.raw_os_error(), Some(nix::libc::EADDRINUSE));
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err(), "nobody else can listen there");
        drop(held);
        reserve(Some(Ipv4Addr::LOCALHOST), port, Protocol::Tcp).unwrap();
        let (_udp, port) = reserve(Some(Ipv4Addr::LOCALHOST), 0, Protocol::Udp).unwrap();
        assert!(std::net::UdpSocket::bind(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn veth_names_fit_the_kernel_limit() {
        assert_eq!(veth_name("0123456789abcdef0123"), "cm-0123456789ab");
        assert_eq!(veth_name("0123456789abcdef0123").len(), 15);
    }
}
