//! Fixtures for cm's end-to-end tests, all offline and on loopback:
//!
//! - [`Registry`]: a real `docker-registry` (distribution 2.8) on a free 127.0.0.1 port;
//! - [`Layer`], [`Image`], [`Index`]: OCI and Docker schema 2 images built in memory, byte-for-byte
//!   reproducible, including layers with hostile tar entries;
//! - [`fixtures`]: ready-made images (busybox, multi-layer with whiteouts, multi-arch, hostile, bench,
//!   tampered);
//! - [`push_image`], [`push_index`]: the Registry v2 push protocol over plain HTTP.
//! - [`pty`]: a pseudo-terminal to drive a command (cm-client -it) as a person at a terminal would.
//! - [`harness`]: what every suite shares: the [`harness::TestServer`], bounded waits, [`harness::run_suite`]
//!   and its leave-nothing-behind check.
//! - [`certs`]: certificates for the TLS tests (a CA, server and client certificates, a second CA).
//! - [`bench`]: statistics and report text for the benchmarks in bench/ (the `cm-bench` binary).

#![warn(missing_docs)]

pub mod bench;
pub mod certs;
pub mod fixtures;
pub mod harness;
pub mod image;
pub mod layer;
pub mod proxy;
pub mod pty;
pub mod push;
pub mod registry;
pub mod server;

pub use fixtures::{
    HOSTILE_HARDLINK_TARGET, HostileImage, TamperedImage, bench_image, busybox_image, busybox_layer,
    hostile_hardlink_image, hostile_image, multiarch_docker_index, multiarch_index, multilayer_docker_image,
    multilayer_image, tampered_image,
};
pub use image::{Blob, Image, ImageConfig, Index, ManifestFormat, Platform, media_type};
pub use layer::{Compression, Entry, Layer, RawEntry};
pub use push::{FetchedManifest, get_manifest, push_blob, push_image, push_image_by_digest, push_index};
pub use registry::Registry;

use sha2::{Digest, Sha256};

/// The OCI digest of `bytes`: `sha256:<hex>`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One libtest-mimic trial per test function `fn(&World) -> anyhow::Result<()>`, named after it, each given a
/// clone of the shared world (an `Arc`): `trials![world; test_a, test_b]`.
#[macro_export]
macro_rules! trials {
    ($world:expr; $($name:ident),* $(,)?) => {
        vec![$({
            let world = $world.clone();
            libtest_mimic::Trial::test(stringify!($name), move || {
                $name(&world).map_err(|e| libtest_mimic::Failed::from(format!("{e:#}")))
            })
        }),*]
    };
}
