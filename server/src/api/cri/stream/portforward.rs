//! portforward.k8s.io over SPDY: the client opens a data and an error stream per forwarded connection, both
//! with the `port` and `requestID` headers; cm connects to that port on the pod's loopback, inside the pod's
//! network namespace (a thread that joins it with setns, so the host's network is never involved), and
//! copies both ways. A failure is a message on the error stream.

use std::collections::HashMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::conn::{SpdyConn, SpdyStream};
use super::spdy::header;

pub const PROTOCOL: &str = "portforward.k8s.io";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to 127.0.0.1:port in the network namespace at `netns` (None: this one).
async fn connect(netns: Option<PathBuf>, port: u16) -> std::io::Result<TcpStream> {
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Some(netns) = netns else {
        return tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await?;
    };
    // setns changes the calling thread: a thread of its own, which ends with the connect.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("cm-portforward".into()).spawn(move || {
        let connected = (|| {
            let ns = File::open(&netns)?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            std::net::TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
        })();
        let _ = tx.send(connected);
    })?;
    let stream = rx.await.map_err(|_| std::io::Error::other("the connecting thread died"))??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

async fn forward(pod: String, netns: Option<PathBuf>, port: u16, mut data: SpdyStream, error: SpdyStream) {
    let tcp = match connect(netns, port).await {
        Ok(t) => t,
        Err(e) => {
            let message = format!("cannot connect to port {port} in pod {pod}: {e}");
            tracing::info!(%message, "port-forward");
            error.writer.write(message.into_bytes()).await;
            error.writer.finish().await;
            data.writer.finish().await;
            return;
        }
    };
    let (mut read, mut write) = tcp.into_split();
    let to_pod = async {
        while let Some(d) = data.data.recv().await {
            if write.write_all(&d).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    };
    let writer = data.writer.clone();
    let from_pod = async move {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !writer.write(buf[..n].to_vec()).await {
                        break;
                    }
                }
            }
        }
        writer.finish().await;
    };
    tokio::join!(to_pod, from_pod);
    error.writer.finish().await;
}

/// Serves one port-forward session until the client ends it.
pub async fn serve<IO: AsyncRead + AsyncWrite + Send + 'static>(pod: String, netns: Option<PathBuf>, io: IO) {
    let mut conn = SpdyConn::new(io);
    let mut waiting: HashMap<String, (Option<SpdyStream>, Option<SpdyStream>)> = HashMap::new();
    let mut forwards = JoinSet::new();
    while let Some(stream) = conn.accept().await {
        let kind = header(&stream.headers, "streamtype").unwrap_or("").to_string();
        let port = header(&stream.headers, "port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
        let Some(port) = port else {
            let message = "a port-forward stream needs a port header between 1 and 65535";
            stream.writer.write(message.as_bytes().to_vec()).await;
            stream.writer.finish().await;
            continue;
        };
        // Older clients send no requestID: one connection per port at a time.
        let id = header(&stream.headers, "requestid").map_or_else(|| format!("port-{port}"), str::to_string);
        let slot = waiting.entry(id.clone()).or_default();
        match kind.as_str() {
            "data" => slot.0 = Some(stream),
            "error" => slot.1 = Some(stream),
            other => {
                tracing::debug!(stream_type = other, "ignoring an unknown port-forward stream");
                continue;
            }
        }
        if matches!(waiting.get(&id), Some((Some(_), Some(_))))
            && let Some((Some(data), Some(error))) = waiting.remove(&id)
        {
            forwards.spawn(forward(pod.clone(), netns.clone(), port, data, error));
        }
        while forwards.try_join_next().is_some() {}
    }
    // The client is gone: its forwards end with it (dropping the set aborts them).
    drop(forwards);
    conn.close().await;
}
