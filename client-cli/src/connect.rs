//! Connecting to cm-server over a unix socket or loopback TCP.

use cm_api::Address;
use cm_api::v1::container_service_client::ContainerServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

pub type Client = ContainerServiceClient<Channel>;

/// Connects, or explains in one line where we looked and how to start the server.
pub async fn connect(address: &Address) -> anyhow::Result<Client> {
    let result = match address {
        Address::Unix(path) => {
            let path = path.clone();
            // The URI is required by the API but unused: the connector dials the socket.
            Endpoint::from_static("http://cm.sock")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
                }))
                .await
        }
        Address::Tcp(addr) => Endpoint::from_shared(format!("http://{addr}"))?.connect().await,
    };
    let channel = result.map_err(|e| {
        let cause = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
        anyhow::anyhow!(
            "cannot connect to cm-server at {address} ({cause}); is it running? Start it with \
             `sudo cm-server --listen {address}`, or point --host / CM_HOST at it"
        )
    })?;
    Ok(ContainerServiceClient::new(channel).max_decoding_message_size(64 << 20))
}
