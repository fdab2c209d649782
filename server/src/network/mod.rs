//! Container networking. Networks are drivers behind [`NetworkDriver`] ([`driver`]): the bridge
//! ([`bridge`]: a bridge with a conflict-free subnet, veths, addresses from [`ipam`]), none and host. The
//! bridge's NAT and published ports are the firewall module's ([`nft`]: one nftables table of cm's own);
//! [`ports`] holds the published ports themselves. All link work goes through rtnetlink ([`link`]).

pub mod bridge;
pub mod cni;
pub mod driver;
#[cfg(test)]
pub mod fake;
pub mod ipam;
pub mod link;
pub mod nft;
pub mod pod;
pub mod ports;
pub mod subnet;

pub use bridge::{BridgeNetwork, NetworkOptions};
pub use driver::{Endpoint, NetworkDriver, Networks};
pub use ports::PortConfig;
pub use subnet::Ipv4Net;

/// Errors of network setup, each meaning one gRPC code to the caller.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The request itself is wrong (a malformed port, a port twice, a network that does not exist).
    #[error("{0}")]
    Invalid(String),
    /// The request is fine but cannot be met now (a port in use, no address left, a network this server runs
    /// without).
    #[error("{0}")]
    Unavailable(String),
    /// The system failed us.
    #[error(transparent)]
    System(#[from] anyhow::Error),
}
