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

/// Kubernetes CRI v1 (`proto/k8s/cri/v1/api.proto`, k8s.io/cri-api v0.37.2 unchanged): the RuntimeService and
/// ImageService messages, clients and servers.
#[allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items, clippy::large_enum_variant)]
pub mod cri {
    tonic::include_proto!("runtime.v1");

    /// Encoded file descriptor set of runtime.v1, served by gRPC reflection on the CRI socket.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cri_v1_descriptor");
}

pub use address::Address;

/// Where cm-server listens and cm-client connects when nothing is said.
pub const DEFAULT_ADDRESS: &str = "unix:/run/cm.sock";
