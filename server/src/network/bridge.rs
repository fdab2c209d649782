//! The bridge driver: one bridge per network with a conflict-free subnet, a veth pair per container with its
//! end created inside the container's network namespace, addresses from [`super::ipam`], and NAT (masquerade
//! and published ports) through the firewall module ([`super::nft`]). All link work goes through rtnetlink
//! ([`super::link`]); no `ip` or `brctl` commands.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};

use super::NetError;
use super::driver::{Attachment, BRIDGE, BoxFuture, Endpoint, NetworkDriver};
use super::ipam::Ipam;
use super::link::{self, Netlink};
use super::nft::{self, Forward};
use super::ports::{PortConfig, Reservation, reserve};
use super::subnet::{self, Ipv4Net};

/// Server-wide network settings (cm-server's --bridge, --subnet, --nft-table).
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    pub bridge: String,
    /// None: pick a private subnet that collides with nothing on the host.
    pub subnet: Option<Ipv4Net>,
    pub nft_table: String,
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

/// A bridge network: the server's default one, named [`BRIDGE`].
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
    /// forwarding. The nftables table is written by [`NetworkDriver::reconcile`] once containers are known.
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

    /// Reserves the container's host ports, creates its veth pair, configures eth0 and adds its port forwards.
    /// On error nothing is left.
    async fn connect(&self, endpoint: Endpoint<'_>) -> Result<Attachment, NetError> {
        let Endpoint { id, pid, address, ports } = endpoint;
        let address = address.ok_or_else(|| NetError::System(anyhow!("no address allocated")))?;
        let netns: OwnedFd = std::fs::File::open(format!("/proc/{pid}/ns/net"))
            .context("opening the container's network namespace")?
            .into();
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
        Ok(Attachment { ports: bound })
    }

    async fn connect_veth(&self, veth: &str, netns: OwnedFd, address: Ipv4Addr) -> anyhow::Result<()> {
        // A veth of an earlier run of this container may outlive it for a moment (namespaces die lazily).
        self.netlink.delete(veth).await?;
        let index = self.netlink.add_veth(veth, self.bridge_index, &netns).await?;
        link::sysctl(&format!("ipv6/conf/{veth}/accept_dad"), "0")?;
        self.netlink.set_up(index).await?;
        link::configure_container(netns, address, self.subnet.prefix(), self.subnet.gateway()).await
    }

    /// Removes a container's port forwards and its veth.
    async fn disconnect(&self, id: &str) {
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

    /// Holds the ports of a container that kept running, to forward them again at reconcile.
    async fn hold_again(&self, id: &str, address: Ipv4Addr, ports: &[PortConfig]) {
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

    /// Removes the veths of containers that are not running (left by a crash) and rewrites the nftables table
    /// from the running ones.
    async fn clean_up(&self, running: &HashSet<String>) -> anyhow::Result<()> {
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

impl NetworkDriver for BridgeNetwork {
    fn name(&self) -> &str {
        BRIDGE
    }

    fn publishes_ports(&self) -> bool {
        true
    }

    fn allocate(&self, id: &str) -> Result<Option<Ipv4Addr>, NetError> {
        self.ipam.lock().unwrap().allocate(id).map(Some).map_err(NetError::Unavailable)
    }

    /// Fails if the address is not on this subnet or someone else holds it.
    fn claim(&self, id: &str, address: Ipv4Addr) -> Result<(), NetError> {
        self.ipam.lock().unwrap().claim(address, id).map_err(NetError::Unavailable)
    }

    fn release(&self, id: &str) {
        if let Some(address) = self.ipam.lock().unwrap().release(id) {
            tracing::debug!(container = %id, %address, "address released");
        }
    }

    fn attach<'a>(&'a self, endpoint: Endpoint<'a>) -> BoxFuture<'a, Result<Attachment, NetError>> {
        Box::pin(self.connect(endpoint))
    }

    fn detach<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.disconnect(id))
    }

    fn readopt<'a>(&'a self, endpoint: Endpoint<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(address) = endpoint.address {
                self.hold_again(endpoint.id, address, endpoint.ports).await;
            }
        })
    }

    fn reconcile<'a>(&'a self, running: &'a HashSet<String>) -> BoxFuture<'a, Result<(), NetError>> {
        Box::pin(async move { Ok(self.clean_up(running).await?) })
    }
}

fn saved_path(root: &Path) -> PathBuf {
    root.join("network").join("bridge.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_the_kernel_limit() {
        assert_eq!(veth_name("0123456789abcdef0123"), "cm-0123456789ab");
        assert_eq!(veth_name("0123456789abcdef0123").len(), 15);
    }
}
