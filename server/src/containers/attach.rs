//! Attach: a session with a container's main process (started by the attach, or already running): inputs go
//! to the process while its output comes back, and its recorded exit ends the session.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::session::{InputEnd, SessionInputs, SessionOutput, SessionOutputs, clamp_size, forward_input, spawn_writer};
use super::{ContainerError, Containers};
use crate::runtime::client::Connection;
use crate::runtime::protocol::{FromMonitor, ToMonitor};

/// Which container to attach to, and how.
#[derive(Debug, Clone, Default)]
pub struct AttachRequest {
    /// The container's id, id prefix or name.
    pub container: String,
    /// Start the container, its output connected before the process runs.
    pub start: bool,
    /// Forward stdin.
    pub stdin: bool,
    /// The terminal's (rows, cols), if the client has one.
    pub tty_size: Option<(u32, u32)>,
}

impl Containers {
    /// Attaches to a container (starting it if asked). Going away leaves the main process running.
    pub async fn attach(
        self: &Arc<Self>,
        request: AttachRequest,
        input: SessionInputs,
    ) -> Result<SessionOutputs, ContainerError> {
        let c = self.get(&request.container)?;
        let size = request.tty_size.map_or((0, 0), |(rows, cols)| clamp_size(rows, cols));
        let session = if request.start {
            self.start(&c, Some(size)).await?.expect("attached start returns its connection")
        } else {
            let mut conn = self.connect(&c).await?;
            conn.writer.send(ToMonitor::Attach).await.map_err(ContainerError::MonitorLost)?;
            if size.0 > 0 {
                let _ = conn.writer.send(ToMonitor::Resize { rows: size.0, cols: size.1 }).await;
            }
            conn
        };
        let Connection { mut reader, writer } = session;
        let (tx, rx) = mpsc::channel::<Result<SessionOutput, ContainerError>>(16);
        let pid = c.record().state.pid;
        let _ = tx.send(Ok(SessionOutput::Started { exec_id: String::new(), pid })).await;

        let input_errors = tx.clone();
        let want_stdin = request.stdin;
        let input_task = tokio::spawn(async move {
            let to_monitor = spawn_writer(writer);
            if let InputEnd::Invalid(e) = forward_input(input, want_stdin, &to_monitor).await {
                let _ = input_errors.send(Err(e)).await;
            }
        });

        // Output to the client; the exit comes from the recorded exit (with OOM) after the output.
        let containers = self.clone();
        tokio::spawn(async move {
            loop {
                let out = match reader.next().await {
                    Ok(Some(FromMonitor::Stdout(d))) => SessionOutput::Stdout(d),
                    Ok(Some(FromMonitor::Stderr(d))) => SessionOutput::Stderr(d),
                    Ok(Some(FromMonitor::Started { .. } | FromMonitor::NoSuchExec(_) | FromMonitor::LogDropped(_))) => {
                        continue;
                    }
                    Ok(Some(FromMonitor::Exit(_))) | Ok(None) | Err(_) => break,
                };
                if tx.send(Ok(out)).await.is_err() {
                    return; // client gone; the container keeps running
                }
            }
            let exit = match tokio::time::timeout(Duration::from_secs(30), containers.wait(&c)).await {
                Ok(Ok(exit)) => Ok(SessionOutput::Exit(exit)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ContainerError::ExitLost),
            };
            let _ = tx.send(exit).await;
            // The session ends with the exit even if the client keeps sending.
            input_task.abort();
        });
        Ok(rx)
    }
}
