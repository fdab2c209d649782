//! The CRI streaming server: the CRI's Exec, Attach and PortForward answer a URL with a one-time token
//! (`http://ADDR/exec/TOKEN`, `/attach/TOKEN`, `/portforward/TOKEN`) bound to the request, valid for a
//! minute; the kubelet (or crictl, critest) upgrades that URL to SPDY/3.1 (remotecommand v1-v5,
//! portforward.k8s.io) or to WebSocket (v4/v5.channel.k8s.io for exec and attach, client-go's SPDY tunnel
//! `SPDY/3.1+portforward.k8s.io` for port-forward). Sessions run on the
//! domain's exec and attach, the same as cm.v1's.

mod conn;
mod portforward;
mod remotecommand;
pub mod spdy;
mod websocket;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::containers::{AttachRequest, Containers, ExecRequest};

/// How long a URL's token stays valid unused (the kubelet's streaming default).
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Tokens waiting at once; beyond, the oldest go.
const MAX_PENDING: usize = 1024;

/// What a token was issued for.
#[derive(Debug, Clone)]
pub enum Pending {
    Exec(ExecRequest, Streams),
    Attach(AttachRequest, Streams),
    /// The pod's network namespace file (None: the host's network).
    PortForward {
        pod: String,
        netns: Option<PathBuf>,
    },
}

/// Which standard streams the request asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The tokens issued and not used yet, each for one request, valid for `ttl`.
struct Tokens {
    ttl: Duration,
    pending: Mutex<HashMap<String, (Instant, Pending)>>,
}

impl Tokens {
    fn new(ttl: Duration) -> Self {
        Tokens { ttl, pending: Mutex::default() }
    }

    fn issue(&self, request: Pending) -> std::io::Result<String> {
        let token = crate::containers::new_id()?[..32].to_string();
        let mut pending = self.pending.lock().unwrap();
        pending.retain(|_, (at, _)| at.elapsed() < self.ttl);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending.iter().min_by_key(|(_, (at, _))| *at).map(|(t, _)| t.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(token.clone(), (Instant::now(), request));
        Ok(token)
    }

    /// The request of a valid token of this kind, which is then used up.
    fn take(&self, kind: &str, token: &str) -> Option<Pending> {
        let mut pending = self.pending.lock().unwrap();
        let fits = match pending.get(token) {
            Some((at, p)) if at.elapsed() < self.ttl => kind == p.kind(),
            Some(_) => {
                pending.remove(token);
                false
            }
            None => false,
        };
        if fits { pending.remove(token).map(|(_, p)| p) } else { None }
    }
}

impl Pending {
    /// The URL path's first component for this request.
    fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(..) => "exec",
            Pending::Attach(..) => "attach",
            Pending::PortForward { .. } => "portforward",
        }
    }
}

pub struct StreamServer {
    address: SocketAddr,
    containers: Arc<Containers>,
    tokens: Tokens,
}

impl StreamServer {
    /// Binds the address; [`Self::serve`] answers on it.
    pub async fn bind(address: SocketAddr, containers: Arc<Containers>) -> std::io::Result<(Arc<Self>, TcpListener)> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        Ok((Arc::new(StreamServer { address, containers, tokens: Tokens::new(TOKEN_TTL) }), listener))
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A URL for the request, valid once, for [`TOKEN_TTL`].
    pub fn issue(&self, request: Pending) -> std::io::Result<String> {
        let kind = request.kind();
        let token = self.tokens.issue(request)?;
        Ok(format!("http://{}/{kind}/{token}", self.address))
    }

    /// Answers connections until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "CRI streaming server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let server = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |r| {
                    let server = server.clone();
                    async move { Ok::<_, std::convert::Infallible>(server.handle(r)) }
                });
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "CRI streaming connection ended");
                }
            });
        }
    }

    fn handle(self: &Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().trim_start_matches('/').to_string();
        let Some((kind, token)) = path.split_once('/') else {
            return error(
                StatusCode::NOT_FOUND,
                "unknown path: use the URL the CRI's Exec, Attach or PortForward gave",
            );
        };
        if !["exec", "attach", "portforward"].contains(&kind) {
            return error(StatusCode::NOT_FOUND, &format!("unknown streaming request {kind:?}"));
        }
        let upgrade = header(&request, "upgrade").to_ascii_lowercase();
        let websocket = upgrade == "websocket";
        if !(websocket || upgrade == "spdy/3.1")
            || !header(&request, "connection").to_ascii_lowercase().contains("upgrade")
        {
            return error(
                StatusCode::BAD_REQUEST,
                "this URL must be upgraded to SPDY/3.1 or WebSocket (Connection: Upgrade)",
            );
        }
        let offered: Vec<String> = if websocket {
            header_values(&request, "sec-websocket-protocol")
        } else {
            header_values(&request, "x-stream-protocol-version")
        };
        let supported: &[&str] = match (kind, websocket) {
            ("portforward", true) => &[websocket::PORTFORWARD_TUNNEL],
            ("portforward", false) => &[portforward::PROTOCOL],
            (_, true) => websocket::PROTOCOLS,
            (_, false) => remotecommand::PROTOCOLS,
        };
        let Some(protocol) = supported.iter().find(|p| offered.iter().any(|o| o == *p)).copied() else {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("no supported streaming protocol offered (offered {offered:?}; supported {supported:?})"),
            );
        };
        let mut response = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS).header("connection", "Upgrade");
        if websocket {
            let Some(key) = request.headers().get("sec-websocket-key") else {
                return error(StatusCode::BAD_REQUEST, "a WebSocket upgrade needs Sec-WebSocket-Key");
            };
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            response = response
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", accept)
                .header("sec-websocket-protocol", protocol);
        } else {
            response = response.header("upgrade", "SPDY/3.1").header("x-stream-protocol-version", protocol);
        }
        let Some(pending) = self.tokens.take(kind, token) else {
            return error(
                StatusCode::NOT_FOUND,
                &format!("unknown or expired {kind} token (tokens are valid once, for 60 s)"),
            );
        };
        let transport = if websocket { "WebSocket" } else { "SPDY/3.1" };
        tracing::info!(kind, protocol, transport, "CRI streaming session");
        let containers = self.containers.clone();
        tokio::spawn(async move {
            let io = match hyper::upgrade::on(request).await {
                Ok(io) => TokioIo::new(io),
                Err(e) => {
                    tracing::warn!(error = %e, "CRI streaming upgrade failed");
                    return;
                }
            };
            match pending {
                Pending::Exec(r, s) if websocket => websocket::exec(containers, r, s, protocol, io).await,
                Pending::Attach(r, s) if websocket => websocket::attach(containers, r, s, protocol, io).await,
                Pending::Exec(r, s) => remotecommand::exec(containers, r, s, protocol, io).await,
                Pending::Attach(r, s) => remotecommand::attach(containers, r, s, protocol, io).await,
                Pending::PortForward { pod, netns } if websocket => websocket::portforward(pod, netns, io).await,
                Pending::PortForward { pod, netns } => portforward::serve(pod, netns, io).await,
            }
        });
        response.body(Full::default()).expect("a valid response")
    }
}

fn header(r: &Request<Incoming>, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// Every value of a header, comma-separated lists split.
fn header_values(r: &Request<Incoming>, name: &str) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .collect()
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(format!("{message}\n"))))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward() -> Pending {
        Pending::PortForward { pod: "p".into(), netns: None }
    }

    #[test]
    fn tokens_are_single_use_and_bound_to_their_kind() {
        let tokens = Tokens::new(TOKEN_TTL);
        let token = tokens.issue(forward()).unwrap();
        assert_eq!(token.len(), 32);
        assert!(tokens.take("exec", &token).is_none(), "a port-forward token opened an exec");
        assert!(matches!(tokens.take("portforward", &token), Some(Pending::PortForward { .. })));
        assert!(tokens.take("portforward", &token).is_none(), "a token was used twice");
        assert!(tokens.take("portforward", "0123").is_none());
        assert_ne!(tokens.issue(forward()).unwrap(), tokens.issue(forward()).unwrap());
    }

    #[test]
    fn unused_tokens_expire() {
        let tokens = Tokens::new(Duration::from_millis(20));
        let token = tokens.issue(forward()).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert!(tokens.take("portforward", &token).is_none());
        // Expired ones are dropped when the next is issued.
        tokens.issue(forward()).unwrap();
        assert_eq!(tokens.pending.lock().unwrap().len(), 1);
    }

    #[test]
    fn waiting_tokens_are_bounded() {
        let tokens = Tokens::new(TOKEN_TTL);
        for _ in 0..=MAX_PENDING {
            tokens.issue(forward()).unwrap();
        }
        assert_eq!(tokens.pending.lock().unwrap().len(), MAX_PENDING, "the oldest makes room");
    }
}
