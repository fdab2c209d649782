//! Pod networking for the CRI. A pod's network namespace is a file of its own (bind-mounted, so that it
//! outlives the pod's processes and a teardown after a crash still finds it), and a [`PodNetwork`] connects
//! that namespace when the pod starts and disconnects it when the pod stops. The real implementation is CNI
//! (`super::cni`): the plugins of the first config in the CNI configuration directory, ADD at setup, DEL at
//! teardown, CHECK on request.
//!
//! This is the seam between the CRI's pod lifecycle and the network: the CRI code never runs a plugin, and the
//! CNI code never reads a pod record.

use std::net::IpAddr;
use std::path::PathBuf;

use super::NetError;
use super::driver::BoxFuture;

/// A pod as its network sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetworkRequest {
    /// The sandbox id (CNI_CONTAINERID).
    pub pod_id: String,
    /// The pod's network namespace file (CNI_NETNS).
    pub netns: PathBuf,
    /// The interface to make in the pod (CNI_IFNAME), "eth0".
    pub ifname: String,
    /// The pod's metadata, passed to the plugins as K8S_POD_NAME, K8S_POD_NAMESPACE and K8S_POD_UID.
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    /// The ports the pod publishes on the host (CNI's portMappings capability).
    pub port_mappings: Vec<PodPortMapping>,
}

/// One published port of a pod, as CNI's portMappings runtime config spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// "tcp", "udp" or "sctp".
    pub protocol: String,
    /// The host address to bind, None for all.
    pub host_ip: Option<IpAddr>,
}

/// What setting up a pod's network gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNetworkStatus {
    /// The pod's addresses, the primary one first (the CRI's PodSandboxNetworkStatus ip and additional_ips).
    pub ips: Vec<IpAddr>,
    /// The interface they are on.
    pub interface: String,
}

/// Connects and disconnects pod network namespaces.
pub trait PodNetwork: Send + Sync {
    /// Whether pods can be networked now: Err says why not (the CRI's NetworkReady condition and its reason,
    /// e.g. no network config in the configuration directory).
    fn ready(&self) -> Result<(), String>;

    /// Connects the pod. On error nothing is left: what was set up is torn down again.
    fn setup<'a>(&'a self, pod: &'a PodNetworkRequest) -> BoxFuture<'a, Result<PodNetworkStatus, NetError>>;

    /// Disconnects the pod and gives back what it held. Idempotent: a pod never set up, set up partly, or whose
    /// namespace is gone (after a crash) is torn down without error.
    fn teardown<'a>(&'a self, pod: &'a PodNetworkRequest) -> BoxFuture<'a, Result<(), NetError>>;

    /// Checks that the pod's network is as setup left it.
    fn check<'a>(&'a self, pod: &'a PodNetworkRequest) -> BoxFuture<'a, Result<(), NetError>>;
}
