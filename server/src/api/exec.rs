//! Exec: run an extra process in a running container with bidirectional stdio, and Wait/Kill by exec id.

use std::sync::Arc;

use cm_api::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::RpcStream;
use super::containers::exit_to_proto;
use super::session::{ClientFrame, InputEnd, forward_input, spawn_writer};
use crate::containers::{Container, Containers, ExitRecord, parse_signal};
use crate::events::Event;
use crate::runtime::bundle::{ExecSpec, ExitInfo, Process};
use crate::runtime::client::Connection;
use crate::runtime::protocol::{FromMonitor, ToMonitor};

/// An exec event: the exec id, with its container's id, name and image.
fn exec_event(c: &Container, action: &'static str, exec_id: &str) -> Event {
    let config = c.record().config;
    Event::new("exec", action, exec_id).with("container", &c.id).with("name", config.name).with("image", config.image)
}

/// An exec's exit as the API reports it (the same form as a container's; OOM is not tracked per exec).
fn exit_status(e: &ExitInfo) -> pb::ExitStatus {
    exit_to_proto(&ExitRecord::from_info(e, false))
}

fn validate_exec_id(id: &str) -> Result<(), Status> {
    let ok = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok { Ok(()) } else { Err(Status::invalid_argument(format!("exec id {id:?} must be 1-64 of [A-Za-z0-9_.-]"))) }
}

fn new_exec_id() -> Result<String, Status> {
    crate::containers::new_id().map(|id| id[..16].to_string()).map_err(|e| Status::internal(e.to_string()))
}

pub async fn exec(
    containers: Arc<Containers>,
    mut requests: Streaming<pb::ExecRequest>,
) -> Result<RpcStream<pb::ExecResponse>, Status> {
    use pb::exec_request::Frame;
    let first = requests.message().await?.and_then(|m| m.frame);
    let Some(Frame::Start(start)) = first else {
        return Err(Status::invalid_argument("the first Exec message must be a start frame"));
    };
    if start.argv.is_empty() || start.argv[0].is_empty() {
        return Err(Status::invalid_argument("argv must name the command to run"));
    }
    if let Some(bad) = start.env.iter().find(|e| e.is_empty() || e.starts_with('=')) {
        return Err(Status::invalid_argument(format!("environment entry {bad:?} must be KEY=VALUE")));
    }
    let exec_id = if start.exec_id.is_empty() { new_exec_id()? } else { start.exec_id.clone() };
    validate_exec_id(&exec_id)?;
    let c = containers.get(&start.container)?;
    let Connection { mut reader, mut writer } = containers.connect(&c).await?;
    let size = start.tty_size.unwrap_or_default();
    let spec = ExecSpec {
        exec_id: exec_id.clone(),
        process: Process {
            args: start.argv.clone(),
            env: start.env.clone(),
            cwd: start.workdir.clone(),
            user: start.user.clone(),
            tty: start.tty,
            stdin: start.stdin,
        },
        rows: size.rows.min(u16::MAX as u32) as u16,
        cols: size.cols.min(u16::MAX as u32) as u16,
    };
    let unavailable = |e: std::io::Error| Status::unavailable(format!("lost the container's monitor: {e}"));
    writer.send(ToMonitor::Exec(spec)).await.map_err(unavailable)?;
    let (tx, rx) = mpsc::channel::<Result<pb::ExecResponse, Status>>(16);
    let frame = |f: pb::exec_response::Frame| Ok(pb::ExecResponse { frame: Some(f) });
    let pid = loop {
        match reader.next().await.map_err(unavailable)? {
            Some(FromMonitor::Started { pid }) => break pid,
            // The command could not be exec'd (not found: 127, not executable: 126): its exit is the answer.
            Some(FromMonitor::Exit(e)) if e.code == 126 || e.code == 127 => {
                containers.events().publish(exec_event(&c, "exec_die", &exec_id).with("exitCode", e.code.to_string()));
                let _ = tx.send(frame(pb::exec_response::Frame::Exit(exit_status(&e)))).await;
                return Ok(Box::pin(ReceiverStream::new(rx)));
            }
            Some(FromMonitor::Exit(e)) => return Err(Status::failed_precondition(e.error)),
            Some(_) => continue,
            None => return Err(Status::failed_precondition(format!("container {} stopped", c.shown()))),
        }
    };
    tracing::info!(container = %c.id, exec = %exec_id, pid, "exec started");
    containers.events().publish(exec_event(&c, "exec_start", &exec_id));
    let _ =
        tx.send(frame(pb::exec_response::Frame::Started(pb::ProcessStarted { exec_id: exec_id.clone(), pid }))).await;

    // Client frames to the monitor. A cancelled stream or a bad frame kills the process unless detached.
    let to_monitor = spawn_writer(writer);
    let kill_on_cancel = !start.detach_on_disconnect;
    let (input_errors, input_to_monitor, want_stdin) = (tx.clone(), to_monitor.clone(), start.stdin);
    let input = tokio::spawn(async move {
        let frame_of = |m: pb::ExecRequest| ClientFrame::from(m.frame);
        match forward_input(requests, frame_of, want_stdin, &input_to_monitor).await {
            InputEnd::Closed => {}
            InputEnd::Cancelled if !kill_on_cancel => {}
            InputEnd::Cancelled => {
                let _ = input_to_monitor.send(ToMonitor::Signal(nix::libc::SIGKILL)).await;
            }
            InputEnd::Invalid(status) => {
                let _ = input_to_monitor.send(ToMonitor::Signal(nix::libc::SIGKILL)).await;
                let _ = input_errors.send(Err(status)).await;
            }
        }
    });

    // The process's frames to the client, the exit frame last.
    let container = c.clone();
    let events = containers.events().clone();
    tokio::spawn(async move {
        loop {
            let out = match reader.next().await {
                Ok(Some(FromMonitor::Stdout(d))) => frame(pb::exec_response::Frame::Stdout(d)),
                Ok(Some(FromMonitor::Stderr(d))) => frame(pb::exec_response::Frame::Stderr(d)),
                Ok(Some(FromMonitor::Exit(e))) => {
                    tracing::info!(container = %container.id, exec = %exec_id, code = e.code, "exec exited");
                    let died = exec_event(&container, "exec_die", &exec_id).with("exitCode", e.code.to_string());
                    events.publish(died.with("signal", signal_name_of(&e)));
                    let _ = tx.send(frame(pb::exec_response::Frame::Exit(exit_status(&e)))).await;
                    // The stream ends with the exit frame even if the client keeps sending.
                    input.abort();
                    return;
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => {
                    let message = format!("container {} stopped while the exec ran", container.shown());
                    let _ = tx.send(Err(Status::aborted(message))).await;
                    return;
                }
            };
            if tx.send(out).await.is_err() {
                if kill_on_cancel {
                    let _ = to_monitor.send(ToMonitor::Signal(nix::libc::SIGKILL)).await;
                }
                return;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Waits for an exec to end (at once if it has).
pub async fn wait_exec(containers: &Containers, c: &Arc<Container>, exec_id: &str) -> Result<pb::ExitStatus, Status> {
    let mut conn = containers.connect(c).await?;
    let unavailable = |e: std::io::Error| Status::unavailable(format!("lost the container's monitor: {e}"));
    conn.writer.send(ToMonitor::WaitExec(exec_id.to_string())).await.map_err(unavailable)?;
    loop {
        match conn.reader.next().await.map_err(unavailable)? {
            Some(FromMonitor::Exit(e)) => return Ok(exit_status(&e)),
            Some(FromMonitor::NoSuchExec(id)) => return Err(no_such_exec(c, &id)),
            Some(_) => continue,
            None => return Err(Status::aborted(format!("container {} stopped", c.shown()))),
        }
    }
}

/// Signals an exec.
pub async fn kill_exec(containers: &Containers, c: &Arc<Container>, exec_id: &str, signal: &str) -> Result<(), Status> {
    let signal = parse_signal(signal).map_err(Status::invalid_argument)?;
    let mut conn = containers.connect(c).await?;
    let unavailable = |e: std::io::Error| Status::unavailable(format!("lost the container's monitor: {e}"));
    conn.writer.send(ToMonitor::SignalExec { exec_id: exec_id.to_string(), signal }).await.map_err(unavailable)?;
    loop {
        match conn.reader.next().await.map_err(unavailable)? {
            Some(FromMonitor::Started { .. }) => return Ok(()),
            Some(FromMonitor::NoSuchExec(id)) => return Err(no_such_exec(c, &id)),
            Some(_) => continue,
            None => return Err(Status::aborted(format!("container {} stopped", c.shown()))),
        }
    }
}

/// The name of the signal that ended an exec, or "".
fn signal_name_of(e: &ExitInfo) -> String {
    if e.signal > 0 { crate::containers::signal_name(e.signal) } else { String::new() }
}

fn no_such_exec(c: &Container, id: &str) -> Status {
    Status::not_found(format!("no exec {id:?} in container {}", c.shown()))
}
