//! TLS for TCP listeners: the server's certificate and key, and the CA whose certificates clients must present.
//! Every TCP listener requires a client certificate signed by that CA (mutual TLS); the unix socket is
//! protected by its file mode and stays plaintext.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The PEM files given with --tls-cert, --tls-key and --tls-ca.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    /// All three files or none: half a TLS setup is an error that names what is missing.
    pub fn from_flags(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
    ) -> anyhow::Result<Option<Self>> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles { cert, key, ca })),
            (cert, key, ca) => {
                let missing: Vec<&str> =
                    [("--tls-cert", cert.is_none()), ("--tls-key", key.is_none()), ("--tls-ca", ca.is_none())]
                        .into_iter()
                        .filter_map(|(flag, absent)| absent.then_some(flag))
                        .collect();
                bail!(
                    "TLS needs --tls-cert, --tls-key and --tls-ca together (missing {}): the CA is what client \
                     certificates are checked against, and every TCP client must present one",
                    missing.join(", ")
                )
            }
        }
    }

    /// The tonic server configuration: our identity, client certificates required and checked against the CA.
    pub fn server_config(&self) -> anyhow::Result<ServerTlsConfig> {
        let cert = read_pem(&self.cert, "--tls-cert")?;
        let key = read_pem(&self.key, "--tls-key")?;
        let ca = read_pem(&self.ca, "--tls-ca")?;
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(false))
    }
}

/// Largest PEM file read (a certificate chain is a few KiB).
const MAX_PEM: u64 = 1 << 20;

fn read_pem(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("{flag}: cannot open {}", path.display()))?;
    let mut pem = Vec::new();
    file.take(MAX_PEM + 1).read_to_end(&mut pem).with_context(|| format!("{flag}: cannot read {}", path.display()))?;
    if pem.len() as u64 > MAX_PEM {
        bail!("{flag}: {} is larger than {MAX_PEM} bytes; expected a PEM file", path.display());
    }
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        bail!("{flag}: {} is not a PEM file (no -----BEGIN line)", path.display());
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_three_files_or_none() {
        assert!(TlsFiles::from_flags(None, None, None).unwrap().is_none());
        let err = TlsFiles::from_flags(Some("c".into()), None, Some("a".into())).unwrap_err().to_string();
        assert!(err.contains("missing --tls-key"), "{err}");
        assert!(TlsFiles::from_flags(Some("c".into()), Some("k".into()), Some("a".into())).unwrap().is_some());
    }

    #[test]
    fn files_that_are_missing_or_not_pem_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("cert");
        std::fs::write(&not_pem, b"hello").unwrap();
        let files = TlsFiles { cert: not_pem, key: dir.path().join("nope"), ca: dir.path().join("nope") };
        let err = files.server_config().unwrap_err().to_string();
        assert!(err.contains("--tls-cert") && err.contains("not a PEM file"), "{err}");
        let files = TlsFiles { cert: dir.path().join("nope"), ..files };
        assert!(files.server_config().unwrap_err().to_string().contains("--tls-cert: cannot open"));
    }
}
