//! Listening sockets: unix sockets (mode 0660, root-owned, optional group; a stale socket file is replaced,
//! a live server on it is refused) and TCP, only with TLS and client certificates ([`tls`]). Unix connections
//! go through [`UnixAuthority`], so clients that send the socket path as `:authority` (grpcio, grpc-java) are
//! served.

mod authority;
mod tls;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cm_api::Address;
use futures::{Stream, StreamExt};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;

pub use authority::UnixAuthority;
pub use tls::TlsFiles;

/// A bound listener.
pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

/// Refuses TCP addresses unless the server has TLS (`tls`): checked for every address before any is bound.
pub fn check_address(address: &Address, tls: bool) -> anyhow::Result<()> {
    if matches!(address, Address::Tcp(_)) && !tls {
        bail!(
            "refusing to listen on {address} without TLS: whoever reaches a TCP port (any local user, a container \
             with --network host, even on loopback) would control cm-server, which is root on this host. Give \
             --tls-cert, --tls-key and --tls-ca (clients then need a certificate signed by that CA), or use a \
             unix socket"
        );
    }
    Ok(())
}

/// Binds `address` (TCP only with `tls`, see [`check_address`]). `group` is the group the unix socket is
/// shared with.
pub async fn bind(address: &Address, group: Option<&str>, tls: bool) -> anyhow::Result<Listener> {
    check_address(address, tls)?;
    match address {
        Address::Unix(path) => bind_unix(path, group).map(|l| Listener::Unix(l, path.clone())),
        Address::Tcp(addr) => {
            let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {address}"))?;
            Ok(Listener::Tcp(listener))
        }
    }
}

/// The connections accepted on a unix socket, each wrapped in [`UnixAuthority`].
pub fn unix_incoming(listener: UnixListener) -> impl Stream<Item = std::io::Result<UnixAuthority<UnixStream>>> {
    UnixListenerStream::new(listener).map(|stream| stream.map(UnixAuthority::new))
}

fn bind_unix(path: &Path, group: Option<&str>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() || path.symlink_metadata().is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another server is already listening on unix:{}; stop it first or pick another --listen",
                path.display()
            );
        }
        tracing::info!(path = %path.display(), "replacing stale socket file");
        std::fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("cannot listen on unix:{}", path.display()))?;
    let gid = match group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .with_context(|| format!("cannot look up group {name:?}"))?
                .with_context(|| format!("no group named {name:?} (--group)"))?
                .gid,
        ),
        None => None,
    };
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), gid)
        .with_context(|| format!("cannot chown {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    Ok(listener)
}
