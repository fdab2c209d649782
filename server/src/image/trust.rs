//! The roots a registry's TLS certificate is verified against: the system's CA bundle where there is one
//! (rustls-native-certs: `SSL_CERT_FILE`/`SSL_CERT_DIR` or the distribution's paths) and Mozilla's roots
//! bundled into cm (webpki-root-certs), so a machine without a bundle (a minimal image, a fresh VM) still
//! pulls over TLS, and a plain-HTTP pull never depends on one. Loaded once, at the first pull or at start.
//!
//! Every oci-client Client also builds a default reqwest client, which panics where the system has no CA
//! certificate; so on such a machine cm-server writes these roots as a PEM file and points SSL_CERT_FILE at
//! it before it starts any thread (see main.rs).

use std::collections::HashSet;
use std::sync::OnceLock;

use oci_client::client::{Certificate, CertificateEncoding};
use rustls::pki_types::CertificateDer;

/// The roots in use, and where they came from.
pub struct Roots {
    pub certificates: Vec<Certificate>,
    /// How many came from the system's bundle (after removing unparsable ones and duplicates).
    pub system: usize,
    /// How many of the bundled roots were added (those the system's bundle did not already have).
    pub bundled: usize,
    /// Why the system's bundle gave nothing or only part of itself, for the log.
    pub problems: Vec<String>,
}

/// The process's roots, loaded on first use.
pub fn roots() -> &'static Roots {
    static ROOTS: OnceLock<Roots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let native = rustls_native_certs::load_native_certs();
        let problems = native.errors.iter().map(ToString::to_string).collect();
        combine(native.certs, webpki_root_certs::TLS_SERVER_ROOT_CERTS, problems)
    })
}

/// The system's certificates that parse as trust anchors, then the bundled ones not among them.
fn combine(system: Vec<CertificateDer<'static>>, bundled: &[CertificateDer<'static>], problems: Vec<String>) -> Roots {
    let mut seen = HashSet::new();
    let mut certificates = Vec::new();
    let mut add = |der: &CertificateDer<'_>| {
        // One certificate webpki cannot read would make the whole client fail to build: leave such out.
        let parses = rustls::RootCertStore::empty().add(der.clone().into_owned()).is_ok();
        if parses && seen.insert(der.as_ref().to_vec()) {
            certificates.push(Certificate { encoding: CertificateEncoding::Der, data: der.as_ref().to_vec() });
            true
        } else {
            false
        }
    };
    let system = system.iter().filter(|der| add(der)).count();
    let bundled = bundled.iter().filter(|der| add(der)).count();
    Roots { certificates, system, bundled, problems }
}

/// The roots as a PEM bundle.
pub fn pem(roots: &Roots) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    for certificate in &roots.certificates {
        let text = base64::engine::general_purpose::STANDARD.encode(&certificate.data);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in text.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_system_bundle_the_bundled_roots_are_used() {
        let roots = combine(Vec::new(), webpki_root_certs::TLS_SERVER_ROOT_CERTS, vec!["no bundle".into()]);
        assert_eq!(roots.system, 0);
        assert!(roots.bundled > 100, "Mozilla's set has well over 100 roots: {}", roots.bundled);
        assert_eq!(roots.certificates.len(), roots.bundled);
    }

    #[test]
    fn the_systems_roots_come_first_without_duplicates_and_garbage_is_left_out() {
        let bundled = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
        let system = vec![bundled[0].clone(), CertificateDer::from(b"not a certificate".to_vec())];
        let roots = combine(system, bundled, Vec::new());
        assert_eq!((roots.system, roots.bundled), (1, bundled.len() - 1));
        assert_eq!(roots.certificates[0].data, bundled[0].as_ref());
    }

    #[test]
    fn the_pem_bundle_reads_back_as_the_same_certificates() {
        use rustls::pki_types::pem::PemObject;
        let roots = combine(Vec::new(), webpki_root_certs::TLS_SERVER_ROOT_CERTS, Vec::new());
        let text = pem(&roots);
        let back: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes()).collect::<Result<_, _>>().unwrap();
        assert_eq!(back.len(), roots.certificates.len());
        assert!(back.iter().zip(&roots.certificates).all(|(a, b)| a.as_ref() == b.data));
    }
}
