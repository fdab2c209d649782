//! Listening sockets: unix sockets (mode 0660, root-owned, optional group; a stale socket file is replaced,
//! a live server on it is refused) and TCP on loopback. Unix connections go through [`UnixAuthority`], so
//! clients that send the socket path as `:authority` (grpcio, grpc-java) are served.

mod authority;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cm_api::Address;
use futures::{Stream, StreamExt};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;

pub use authority::UnixAuthority;

/// A bound listener.
pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

/// Binds `address`. `group` is the group the unix socket is shared with.
pub async fn bind(address: &Address, group: Option<&str>) -> anyhow::Result<Listener> {
    match address {
        Address::Unix(path) => bind_unix(path, group).map(|l| Listener::Unix(l, path.clone())),
        Address::Tcp(addr) => {
            if !address.is_local() {
                bail!(
                    "refusing to listen on {address}: the API has no authentication yet, so TCP is only \
                     allowed on loopback addresses (e.g. tcp://127.0.0.1:7070); use a unix socket otherwise"
                );
            }
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
