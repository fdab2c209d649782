//! Links, addresses and routes over rtnetlink: the bridge and the host's routes in the host's namespace,
//! the veth pair whose container end is created directly inside the container's namespace, and that end's
//! configuration, done by a thread that enters the namespace (a netlink socket belongs to the namespace it
//! was opened in).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, Result, anyhow};
use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteType};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::subnet::{HostNet, Ipv4Net};

/// The interface name of a container's end of its veth pair.
pub const CONTAINER_INTERFACE: &str = "eth0";

/// The errno of a netlink answer, if it was an error.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().raw_os_error(),
        _ => None,
    }
}

fn name_of(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|a| if let LinkAttribute::IfName(n) = a { Some(n.clone()) } else { None })
        .unwrap_or_default()
}

/// Writes a sysctl under /proc/sys/net of the calling thread's network namespace. A missing file (IPv6
/// disabled) is not an error: there is nothing to turn off then.
pub fn sysctl(path: &str, value: &str) -> Result<()> {
    match std::fs::write(format!("/proc/sys/net/{path}"), value) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.with_context(|| format!("setting net.{} = {value}", path.replace('/', "."))),
    }
}

/// A netlink connection to the host's network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    pub fn connect() -> Result<Netlink> {
        let (connection, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The index of the link called `name`, if there is one.
    pub async fn index(&self, name: &str) -> Result<Option<u32>> {
        match self.handle.link().get().match_name(name).execute().try_next().await {
            Ok(link) => Ok(link.map(|l| l.header.index)),
            Err(e) if errno(&e) == Some(nix::libc::ENODEV) => Ok(None),
            Err(e) => Err(anyhow!("looking up link {name}: {e}")),
        }
    }

    /// Every IPv4 address's network and every main-table IPv4 route, except those on `skip` (our bridge).
    pub async fn host_nets(&self, skip: Option<u32>) -> Result<Vec<HostNet>> {
        let mut names = std::collections::HashMap::new();
        let mut links = self.handle.link().get().execute();
        while let Some(link) = links.try_next().await.context("listing links")? {
            names.insert(link.header.index, name_of(&link));
        }
        let name = |index: u32| names.get(&index).cloned().unwrap_or_else(|| format!("link {index}"));
        let mut nets = Vec::new();
        let mut addresses = self.handle.address().get().execute();
        while let Some(a) = addresses.try_next().await.context("listing addresses")? {
            if Some(a.header.index) == skip {
                continue;
            }
            for attr in &a.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = attr {
                    let net = Ipv4Net::containing(*ip, a.header.prefix_len);
                    nets.push(HostNet { net, interface: name(a.header.index), kind: "address" });
                }
            }
        }
        let mut routes = self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
        while let Some(r) = routes.try_next().await.context("listing routes")? {
            if r.header.table != RouteHeader::RT_TABLE_MAIN || r.header.kind != RouteType::Unicast {
                continue;
            }
            let oif = r.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None });
            if oif.is_some() && oif == skip {
                continue;
            }
            let destination = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            let net =
                Ipv4Net::containing(destination.unwrap_or(Ipv4Addr::UNSPECIFIED), r.header.destination_prefix_length);
            let interface = oif.map(name).unwrap_or_else(|| "no interface".into());
            nets.push(HostNet { net, interface, kind: "route" });
        }
        Ok(nets)
    }

    /// Makes sure bridge `name` exists, is up and has `gateway` (and only that) as its address; returns its
    /// index.
    pub async fn ensure_bridge(&self, name: &str, gateway: Ipv4Addr, subnet: Ipv4Net) -> Result<u32> {
        let index = match self.index(name).await? {
            Some(index) => index,
            None => {
                self.handle
                    .link()
                    .add(LinkBridge::new(name).build())
                    .execute()
                    .await
                    .with_context(|| format!("creating bridge {name}"))?;
                self.index(name).await?.ok_or_else(|| anyhow!("bridge {name} vanished after creation"))?
            }
        };
        // Addresses of an earlier --subnet go; ours is added unless present.
        let mut present = false;
        let mut addresses = self.handle.address().get().set_link_index_filter(index).execute();
        let mut stale = Vec::new();
        while let Some(a) = addresses.try_next().await.context("listing the bridge's addresses")? {
            let v4 = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            match v4 {
                Some(ip) if ip == gateway && a.header.prefix_len == subnet.prefix() => present = true,
                Some(_) => stale.push(a),
                None => {}
            }
        }
        for a in stale {
            self.handle.address().del(a).execute().await.context("removing an old address from the bridge")?;
        }
        if !present {
            self.handle
                .address()
                .add(index, IpAddr::V4(gateway), subnet.prefix())
                .execute()
                .await
                .with_context(|| format!("adding {gateway}/{} to bridge {name}", subnet.prefix()))?;
        }
        // A bridge whose MAC was never set takes the lowest of its ports' MACs, so it would change as containers
        // come and go, and every container's neighbor entry for the gateway would point at a MAC the bridge
        // no longer has until it went stale. A set one stays.
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).address(mac_for(gateway).to_vec()).up().build())
            .execute()
            .await
            .with_context(|| format!("setting bridge {name}'s MAC address and bringing it up"))?;
        Ok(index)
    }

    /// Creates veth `host` on bridge `bridge`, its peer `eth0` inside the namespace `netns`; returns the host
    /// end's index. Both ends stay down until configured.
    pub async fn add_veth(&self, host: &str, bridge: u32, netns: &OwnedFd) -> Result<u32> {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(CONTAINER_INTERFACE.to_string())
            .setns_by_fd(netns.as_raw_fd())
            .build();
        let message = LinkVeth::new(host, CONTAINER_INTERFACE)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(bridge)
            .build();
        self.handle.link().add(message).execute().await.map_err(|e| match errno(&e) {
            Some(nix::libc::EEXIST) => anyhow!("link {host} already exists"),
            _ => anyhow!("creating veth pair {host}: {e}"),
        })?;
        self.index(host).await?.ok_or_else(|| anyhow!("veth {host} vanished after creation"))
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .with_context(|| format!("bringing link {index} up"))
    }

    /// Deletes link `name`; false when there was none.
    pub async fn delete(&self, name: &str) -> Result<bool> {
        let Some(index) = self.index(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(nix::libc::ENODEV) => Ok(false),
            Err(e) => Err(anyhow!("deleting link {name}: {e}")),
        }
    }

    /// Names of the links attached to bridge `bridge`.
    pub async fn ports(&self, bridge: u32) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(link) = links.try_next().await.context("listing links")? {
            if link.attributes.contains(&LinkAttribute::Controller(bridge)) {
                out.push(name_of(&link));
            }
        }
        Ok(out)
    }
}

/// Inside the namespace `netns`: DAD off, `address/prefix` on eth0, eth0 up, default route via `gateway`.
pub async fn configure_container(netns: OwnedFd, address: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cm-netns".into())
        .spawn(move || {
            let result = (|| {
                // This thread alone enters the namespace; it ends when done, so nothing else runs there.
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("entering the container's network namespace")?;
                sysctl(&format!("ipv6/conf/{CONTAINER_INTERFACE}/accept_dad"), "0")?;
                let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
                runtime.block_on(configure_here(address, prefix, gateway))
            })();
            let _ = tx.send(result);
        })
        .context("starting a thread for the container's network namespace")?;
    rx.await.map_err(|_| anyhow!("the network namespace thread died"))?
}

/// The MAC address of a container's eth0 or of the bridge: 02:42 (locally administered, unicast) and the
/// IPv4 address, as docker's are.
pub fn mac_for(address: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = address.octets();
    [0x02, 0x42, a, b, c, d]
}

async fn configure_here(address: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Result<()> {
    let (connection, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
    tokio::spawn(connection);
    let link = handle
        .link()
        .get()
        .match_name(CONTAINER_INTERFACE)
        .execute()
        .try_next()
        .await
        .context("finding eth0 in the container")?
        .ok_or_else(|| anyhow!("eth0 is missing in the container"))?;
    let index = link.header.index;
    handle
        .address()
        .add(index, IpAddr::V4(address), prefix)
        .execute()
        .await
        .with_context(|| format!("adding {address}/{prefix} to eth0"))?;
    // The MAC follows from the address, as docker's does: the host's neighbor entry for an address a removed
    // container had stays right for the next container given it (a random MAC would leave the host sending to
    // the old one until the entry goes stale, for a container that has not sent an ARP request yet).
    let mac = mac_for(address).to_vec();
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).address(mac).up().build())
        .execute()
        .await
        .context("setting eth0's MAC address and bringing it up")?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).output_interface(index).build();
    handle.route().add(route).execute().await.with_context(|| format!("adding the default route via {gateway}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_locally_administered_unicast_and_follow_the_address() {
        let mac = mac_for(Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(mac, [0x02, 0x42, 10, 88, 0, 2]);
        assert_eq!(mac[0] & 0b11, 0b10, "locally administered, not multicast");
        assert_ne!(mac_for(Ipv4Addr::new(10, 88, 0, 3)), mac);
    }
}
