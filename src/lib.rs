//! cm-api: the cm.v1 contract generated from `proto/cm/v1/cm.proto`, and the listen/connect address syntax
//! shared by cm-server (`--listen`) and cm-client (`--host`).

pub mod address;
pub mod units;

/// Generated messages and the ContainerService client and server.
pub mod v1 {
    tonic::include_proto!("cm.v1");

    /// Encoded file descriptor set of cm.v1, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cm_v1_descriptor");
}

pub use address::Address;

/// Where cm-server listens and cm-client connects when nothing is said.
pub const DEFAULT_ADDRESS: &str = "unix:/run/cm.sock";
