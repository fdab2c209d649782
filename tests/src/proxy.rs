//! A TCP proxy on loopback that forwards to a registry at a limited rate, so a test can act in the middle
//! of a download (cancel it, kill the server) without racing a fast local pull.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

/// A running throttling proxy; stops accepting on drop (open connections end with the test process).
pub struct SlowProxy {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl SlowProxy {
    /// Forwards 127.0.0.1:<free port> to `upstream` ("127.0.0.1:PORT"), sending responses at about
    /// `bytes_per_second`.
    pub fn start(upstream: &str, bytes_per_second: u64) -> Result<SlowProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (upstream, stopping) = (upstream.to_string(), stop.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let (client2, server2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                thread::spawn(move || pipe(client, server, None));
                thread::spawn(move || pipe(server2, client2, Some(bytes_per_second)));
            }
        });
        Ok(SlowProxy { addr, stop })
    }

    /// "127.0.0.1:PORT", to use as the registry part of a reference.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }
}

/// Copies `from` to `to`, at most `rate` bytes per second when given.
fn pipe(mut from: TcpStream, mut to: TcpStream, rate: Option<u64>) {
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                thread::sleep(wait);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}
