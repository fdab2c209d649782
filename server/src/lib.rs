//! cm-server's library: everything the daemon (src/main.rs) and the per-container monitor
//! (src/bin/cm-monitor.rs) are made of.

pub(crate) mod api;
pub(crate) mod cgroups;
pub(crate) mod clock;
pub(crate) mod containers;
pub(crate) mod events;
pub(crate) mod fsroot;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod image;
pub(crate) mod listen;
pub(crate) mod network;
pub(crate) mod pods;
pub(crate) mod runtime;
pub(crate) mod store;

// What the binaries use. Everything else is crate-private, so rustc reports what nothing uses.
pub use api::ContainerApi;
pub use api::cri::stream::StreamServer;
pub use api::cri::{CriImages, CriRuntime};
pub use cgroups::{Limits, parse_cpus, parse_memory};
pub use containers::{Containers, RuntimeOptions};
pub use events::Events;
pub use image::trust::{pem as trust_roots_pem, roots as registry_trust_roots};
pub use image::{ImageStore, RegistryMirror, RegistryOptions};
pub use listen::{Listener, TlsFiles, bind, check_address, unix_incoming};
pub use network::Ipv4Net;
pub use network::cni::{Cni, CniOptions};
pub use network::driver::BRIDGE;
pub use network::pod::{PodNetwork, PodNetworkRequest, PodNetworkStatus, PodPortMapping};
pub use network::{BridgeNetwork, NetworkOptions, Networks};
pub use pods::Pods;
pub use runtime::bundle::LogLimits;
pub use runtime::monitor::main as monitor_main;
