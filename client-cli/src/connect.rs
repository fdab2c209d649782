//! Connecting to cm-server over a unix socket, or over TCP with TLS and a client certificate.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cm_api::Address;
use cm_api::v1::container_service_client::ContainerServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

pub type Client = ContainerServiceClient<Channel>;

/// The PEM files for TLS on TCP: our certificate and key, and the CA the server's certificate must be
/// signed by.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM client certificate presented to the server (TCP).
    #[arg(long, global = true, env = "CM_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, global = true, env = "CM_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate the server's certificate must be signed by (TCP).
    #[arg(long, global = true, env = "CM_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    fn any(&self) -> bool {
        self.tls_cert.is_some() || self.tls_key.is_some() || self.tls_ca.is_some()
    }

    /// The TLS configuration for a server named `server_name` (the host of --host).
    fn config(&self, server_name: &str) -> anyhow::Result<ClientTlsConfig> {
        let mut config = ClientTlsConfig::new().domain_name(server_name);
        if let Some(ca) = &self.tls_ca {
            config = config.ca_certificate(Certificate::from_pem(read(ca, "--tls-ca")?));
        } else {
            bail!("TLS needs --tls-ca (or CM_TLS_CA): the CA that signed the server's certificate");
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(read(cert, "--tls-cert")?, read(key, "--tls-key")?))
            }
            (None, None) => {}
            _ => bail!("--tls-cert and --tls-key (CM_TLS_CERT, CM_TLS_KEY) go together"),
        }
        Ok(config)
    }
}

fn read(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
}

/// The host part of a `tcp://HOST:PORT` address, as the server's certificate names it.
fn tcp_host(host: &str) -> Option<&str> {
    let rest = host.strip_prefix("tcp://")?.trim_end_matches('/');
    let (name, _port) = rest.rsplit_once(':')?;
    Some(name.trim_start_matches('[').trim_end_matches(']'))
}

/// Connects to `host` (as given: its host name is the TLS server name), or explains in one line where we
/// looked and how to start the server.
pub async fn connect(address: &Address, host: &str, tls: &TlsArgs) -> anyhow::Result<Client> {
    let result = match address {
        Address::Unix(path) => {
            if tls.any() {
                bail!("--tls-* options are for tcp:// addresses; a unix socket is protected by its file mode");
            }
            let path = path.clone();
            // The URI is required by the API but unused: the connector dials the socket.
            Endpoint::from_static("http://cm.sock")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
                }))
                .await
        }
        Address::Tcp(addr) if tls.any() => {
            let name = tcp_host(host).map_or_else(|| addr.ip().to_string(), str::to_string);
            Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.config(&name)?)?.connect().await
        }
        Address::Tcp(_) => bail!(
            "{address} needs TLS: cm-server serves TCP only with TLS and client certificates; give --tls-ca, \
             --tls-cert and --tls-key (or CM_TLS_CA, CM_TLS_CERT, CM_TLS_KEY)"
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_server_name_is_the_host_of_the_address() {
        assert_eq!(tcp_host("tcp://127.0.0.1:7070"), Some("127.0.0.1"));
        assert_eq!(tcp_host("tcp://cm.example:7070/"), Some("cm.example"));
        assert_eq!(tcp_host("tcp://[::1]:7070"), Some("::1"));
        assert_eq!(tcp_host("unix:/run/cm.sock"), None);
    }
}
