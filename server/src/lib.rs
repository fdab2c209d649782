//! cm-server's library: everything the daemon (src/main.rs) and the per-container monitor
//! (src/bin/cm-monitor.rs) are made of.

pub mod api;
pub mod cgroups;
pub mod clock;
pub mod containers;
pub mod events;
pub mod fsroot;
pub mod image;
pub mod listen;
pub mod network;
pub mod runtime;
pub mod store;
