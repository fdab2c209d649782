//! Certificates for the TLS tests, made with rcgen: a CA, the server's certificate for 127.0.0.1 and
//! localhost, a client certificate of that CA, and a client certificate of another CA.

use std::path::PathBuf;

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// PEM files made for this run, in a directory of their own.
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// The file `name` (ca.pem, server.pem, server.key, client.pem, client.key, other.pem, other.key).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A CA (ca.pem), the server's certificate for 127.0.0.1 and localhost (server.pem, server.key), a client
    /// certificate of that CA (client.pem, client.key), and one of another CA (other.pem, other.key).
    pub fn make() -> Result<Certs> {
        let dir = tempfile::Builder::new().prefix("cm-e2e-certs-").tempdir_in("/tmp")?;
        let certs = Certs { dir };
        let other_ca = ca("cm e2e other CA")?;
        let ca = ca("cm e2e CA")?;
        std::fs::write(certs.path("ca.pem"), ca.pem())?;
        let server = leaf(&["127.0.0.1", "localhost"], ExtendedKeyUsagePurpose::ServerAuth, &ca)?;
        certs.write("server", server)?;
        certs.write("client", leaf(&["cm-e2e-client"], ExtendedKeyUsagePurpose::ClientAuth, &ca)?)?;
        certs.write("other", leaf(&["cm-e2e-client"], ExtendedKeyUsagePurpose::ClientAuth, &other_ca)?)?;
        Ok(certs)
    }

    fn write(&self, name: &str, (cert, key): (String, String)) -> Result<()> {
        std::fs::write(self.path(&format!("{name}.pem")), cert)?;
        std::fs::write(self.path(&format!("{name}.key")), key)?;
        Ok(())
    }
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn leaf(
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    ca: &CertifiedIssuer<'static, KeyPair>,
) -> Result<(String, String)> {
    let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}
