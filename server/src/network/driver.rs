//! Container networks behind one trait. A container records the name of its network; the containers domain
//! asks that network's driver for an address at create, to attach the container when it starts and detach it
//! when it exits, to release the address at removal, and, at server start, to take back what running
//! containers held and to clean up after the ones that are gone. The drivers: [`super::BridgeNetwork`] (the
//! default network), [`NoneNetwork`] (a namespace with only loopback) and [`HostNetwork`] (the host's own
//! namespace). User-defined networks are further named drivers; a CNI driver for pods fits the same calls.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Arc;

use super::{NetError, PortConfig};

/// The default network: the server's bridge.
pub const BRIDGE: &str = "bridge";
/// A network namespace of the container's own with only loopback in it.
pub const NONE: &str = "none";
/// The host's network namespace.
pub const HOST: &str = "host";

/// What a driver's async calls return (the trait is used as `dyn NetworkDriver`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A container as its network sees it.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub id: &'a str,
    /// A process in the container's network namespace (its init): the namespace is /proc/<pid>/ns/net.
    pub pid: i32,
    /// The address the network gave the container, if it gives addresses.
    pub address: Option<Ipv4Addr>,
    /// At attach the ports asked for; at readopt the ports bound before the restart.
    pub ports: &'a [PortConfig],
}

/// What attaching a container gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachment {
    /// The published ports as bound (a host port asked as 0 is the one picked).
    pub ports: Vec<PortConfig>,
}

/// One network containers can be on. The defaults are those of a network that gives no addresses, publishes
/// nothing and has nothing to set up.
pub trait NetworkDriver: Send + Sync {
    /// The network's name, as containers record it.
    fn name(&self) -> &str;

    /// Whether containers share the host's network namespace (and see its /etc/hosts) instead of getting their
    /// own.
    fn shares_host_namespace(&self) -> bool {
        false
    }

    /// Whether the network can publish container ports on the host.
    fn publishes_ports(&self) -> bool {
        false
    }

    /// An address for container `id`, held until [`NetworkDriver::release`]: the one it holds, or a new one.
    /// None when the network gives no addresses.
    fn allocate(&self, _id: &str) -> Result<Option<Ipv4Addr>, NetError> {
        Ok(None)
    }

    /// At server start: holds again the address a container was given. Fails if the network no longer has
    /// it to give (the container then gets a new one when it starts).
    fn claim(&self, _id: &str, _address: Ipv4Addr) -> Result<(), NetError> {
        Ok(())
    }

    /// Gives back the address of a removed container.
    fn release(&self, _id: &str) {}

    /// Connects a starting container, whose namespaces exist while its init waits for the go-ahead. On error
    /// nothing is left.
    fn attach<'a>(&'a self, _endpoint: Endpoint<'a>) -> BoxFuture<'a, Result<Attachment, NetError>> {
        Box::pin(std::future::ready(Ok(Attachment::default())))
    }

    /// Takes back what a container that stopped (or failed to start) had, but its address.
    fn detach<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// After a server restart: holds again what a container that kept running has.
    fn readopt<'a>(&'a self, _endpoint: Endpoint<'a>) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// At server start, once containers are loaded and re-adopted: removes what containers of this network
    /// that are not in `running` left behind, and applies the state of those that are.
    fn reconcile<'a>(&'a self, _running: &'a HashSet<String>) -> BoxFuture<'a, Result<(), NetError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// `--network none`: the container's own namespace, with loopback only (its init brings `lo` up).
pub struct NoneNetwork;

impl NetworkDriver for NoneNetwork {
    fn name(&self) -> &str {
        NONE
    }
}

/// `--network host`: the container stays in the host's network namespace.
pub struct HostNetwork;

impl NetworkDriver for HostNetwork {
    fn name(&self) -> &str {
        HOST
    }

    fn shares_host_namespace(&self) -> bool {
        true
    }
}

/// The networks of this server, by name.
pub struct Networks {
    drivers: BTreeMap<String, Arc<dyn NetworkDriver>>,
    /// Networks this server runs without, with what to tell the user who asks for one.
    disabled: BTreeMap<String, String>,
}

impl Default for Networks {
    /// `none` and `host`, which every server has.
    fn default() -> Networks {
        let mut networks = Networks { drivers: BTreeMap::new(), disabled: BTreeMap::new() };
        networks.add(Arc::new(NoneNetwork));
        networks.add(Arc::new(HostNetwork));
        networks
    }
}

impl Networks {
    /// Adds (or replaces) the network of the driver's name.
    pub fn add(&mut self, driver: Arc<dyn NetworkDriver>) {
        self.disabled.remove(driver.name());
        self.drivers.insert(driver.name().to_string(), driver);
    }

    /// Marks a network as one this server runs without; `why` tells the user what to do instead.
    pub fn disable(&mut self, name: &str, why: &str) {
        self.drivers.remove(name);
        self.disabled.insert(name.to_string(), why.to_string());
    }

    /// The driver of the network `name`.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn NetworkDriver>, NetError> {
        self.drivers.get(name).ok_or_else(|| match self.disabled.get(name) {
            Some(why) => NetError::Unavailable(why.clone()),
            None => NetError::Invalid(format!("there is no network named {name:?}")),
        })
    }

    /// Every network, in name order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn NetworkDriver>> {
        self.drivers.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_has_none_and_host_and_a_disabled_network_says_why() {
        let mut networks = Networks::default();
        assert!(!networks.get(NONE).unwrap().shares_host_namespace());
        assert!(networks.get(HOST).unwrap().shares_host_namespace());
        assert!(!networks.get(HOST).unwrap().publishes_ports());
        assert!(matches!(networks.get("web"), Err(NetError::Invalid(m)) if m.contains("no network named \"web\"")));
        networks.disable(BRIDGE, "this server runs without a bridge");
        assert!(matches!(networks.get(BRIDGE), Err(NetError::Unavailable(m)) if m.contains("without a bridge")));
        assert_eq!(networks.all().map(|d| d.name().to_string()).collect::<Vec<_>>(), [HOST, NONE]);
    }
}
