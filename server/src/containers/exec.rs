//! Exec: an extra process in a running container with its stdio as a session, and Wait/Kill by exec id.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::session::{InputEnd, SessionInputs, SessionOutput, SessionOutputs, clamp_size, forward_input, spawn_writer};
use super::{Container, ContainerError, Containers, ExitRecord, error::io, no_nul, parse_signal, signal_name};
use crate::events::Event;
use crate::runtime::bundle::{ExecSpec, ExitInfo, Process};
use crate::runtime::client::Connection;
use crate::runtime::protocol::{FromMonitor, ToMonitor};

/// What to run in a container.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// The container's id, id prefix or name.
    pub container: String,
    /// The exec's id; empty: one is made.
    pub exec_id: String,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub tty: bool,
    pub stdin: bool,
    /// The terminal's (rows, cols).
    pub tty_size: (u32, u32),
    /// Whether the process keeps running when the client goes away (else it is killed).
    pub detach_on_disconnect: bool,
}

impl ExecRequest {
    /// Refuses what no process could be started with.
    pub fn validate(&self) -> Result<(), ContainerError> {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err(ContainerError::Invalid("argv must name the command to run".into()));
        }
        if let Some(bad) = self.env.iter().find(|e| e.is_empty() || e.starts_with('=')) {
            return Err(ContainerError::Invalid(format!("environment entry {bad:?} must be KEY=VALUE")));
        }
        no_nul("argv", self.argv.iter().map(String::as_str))?;
        no_nul("env", self.env.iter().map(String::as_str))?;
        no_nul("workdir", [self.workdir.as_str()])?;
        no_nul("user", [self.user.as_str()])?;
        crate::runtime::user::check_spec(&self.user).map_err(ContainerError::Invalid)?;
        if !self.exec_id.is_empty() {
            validate_exec_id(&self.exec_id)?;
        }
        Ok(())
    }
}

/// An exec event: the exec id, with its container's id, name and image.
fn exec_event(c: &Container, action: &'static str, exec_id: &str) -> Event {
    let config = c.record().config;
    Event::new("exec", action, exec_id).with("container", &c.id).with("name", config.name).with("image", config.image)
}

/// An exec's exit in the same form as a container's (OOM is not tracked per exec).
fn exit_record(e: &ExitInfo) -> ExitRecord {
    ExitRecord::from_info(e, false)
}

fn validate_exec_id(id: &str) -> Result<(), ContainerError> {
    let ok = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok { Ok(()) } else { Err(ContainerError::Invalid(format!("exec id {id:?} must be 1-64 of [A-Za-z0-9_.-]"))) }
}

/// The name of the signal that ended an exec, or "".
fn signal_name_of(e: &ExitInfo) -> String {
    if e.signal > 0 { signal_name(e.signal) } else { String::new() }
}

fn no_such_exec(c: &Container, id: &str) -> ContainerError {
    ContainerError::NoSuchExec { container: c.shown(), exec_id: id.to_string() }
}

impl Containers {
    /// Starts an exec and streams its session: started, output, and the exit last. A command that cannot be
    /// exec'd (not found: 127, not executable: 126) gives just its exit.
    pub async fn exec(
        self: &Arc<Self>,
        request: ExecRequest,
        input: SessionInputs,
    ) -> Result<SessionOutputs, ContainerError> {
        request.validate()?;
        let exec_id = if request.exec_id.is_empty() {
            super::new_id().map(|id| id[..16].to_string()).map_err(io("making an exec id"))?
        } else {
            request.exec_id.clone()
        };
        let c = self.get(&request.container)?;
        let Connection { mut reader, mut writer } = self.connect(&c).await?;
        let (rows, cols) = clamp_size(request.tty_size.0, request.tty_size.1);
        let spec = ExecSpec {
            exec_id: exec_id.clone(),
            process: Process {
                args: request.argv.clone(),
                env: request.env.clone(),
                cwd: request.workdir.clone(),
                user: request.user.clone(),
                tty: request.tty,
                stdin: request.stdin,
            },
            rows,
            cols,
            kill_on_disconnect: !request.detach_on_disconnect,
        };
        writer.send(ToMonitor::Exec(spec)).await.map_err(ContainerError::MonitorLost)?;
        let (tx, rx) = mpsc::channel::<Result<SessionOutput, ContainerError>>(16);
        let pid = loop {
            match reader.next().await.map_err(ContainerError::MonitorLost)? {
                Some(FromMonitor::Started { pid }) => break pid,
                Some(FromMonitor::Exit(e)) if e.code == 126 || e.code == 127 => {
                    self.events.publish(exec_event(&c, "exec_die", &exec_id).with("exitCode", e.code.to_string()));
                    let _ = tx.send(Ok(SessionOutput::Exit(exit_record(&e)))).await;
                    return Ok(rx);
                }
                Some(FromMonitor::Exit(e)) => return Err(ContainerError::ExecFailed(e.error)),
                Some(_) => continue,
                None => return Err(ContainerError::StoppedBeforeExec(c.shown())),
            }
        };
        tracing::info!(container = %c.id, exec = %exec_id, pid, "exec started");
        self.events.publish(exec_event(&c, "exec_start", &exec_id));
        let _ = tx.send(Ok(SessionOutput::Started { exec_id: exec_id.clone(), pid })).await;

        // Inputs to the monitor. A cancelled session or a bad input kills the process unless detached.
        let to_monitor = spawn_writer(writer);
        let kill_on_cancel = !request.detach_on_disconnect;
        let (input_errors, input_to_monitor, want_stdin) = (tx.clone(), to_monitor.clone(), request.stdin);
        let input = tokio::spawn(async move {
            match forward_input(input, want_stdin, &input_to_monitor).await {
                InputEnd::Closed => {}
                InputEnd::Cancelled if !kill_on_cancel => {}
                InputEnd::Cancelled => {
                    let _ = input_to_monitor.send(ToMonitor::Signal(nix::libc::SIGKILL)).await;
                }
                InputEnd::Invalid(e) => {
                    let _ = input_to_monitor.send(ToMonitor::Signal(nix::libc::SIGKILL)).await;
                    let _ = input_errors.send(Err(e)).await;
                }
            }
        });

        // The process's output, the exit last.
        let container = c.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            loop {
                // A client that goes away while the process is silent (a deadline after its half-close) is
                // seen here: the response stream was dropped.
                let next = tokio::select! {
                    next = reader.next() => next,
                    () = tx.closed() => {
                        if kill_on_cancel {
                            let _ = to_monitor.send(ToMonitor::Signal(nix::libc::SIGKILL)).await;
                        }
                        input.abort();
                        return;
                    }
                };
                let out = match next {
                    Ok(Some(FromMonitor::Stdout(d))) => SessionOutput::Stdout(d),
                    Ok(Some(FromMonitor::Stderr(d))) => SessionOutput::Stderr(d),
                    Ok(Some(FromMonitor::Exit(e))) => {
                        tracing::info!(container = %container.id, exec = %exec_id, code = e.code, "exec exited");
                        let died = exec_event(&container, "exec_die", &exec_id).with("exitCode", e.code.to_string());
                        events.publish(died.with("signal", signal_name_of(&e)));
                        let _ = tx.send(Ok(SessionOutput::Exit(exit_record(&e)))).await;
                        // The session ends with the exit even if the client keeps sending.
                        input.abort();
                        return;
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => {
                        let _ = tx.send(Err(ContainerError::StoppedDuringExec(container.shown()))).await;
                        return;
                    }
                };
                if tx.send(Ok(out)).await.is_err() {
                    if kill_on_cancel {
                        let _ = to_monitor.send(ToMonitor::Signal(nix::libc::SIGKILL)).await;
                    }
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// Waits for an exec to end (at once if it has).
    pub async fn wait_exec(&self, c: &Arc<Container>, exec_id: &str) -> Result<ExitRecord, ContainerError> {
        let mut conn = self.connect(c).await?;
        conn.writer.send(ToMonitor::WaitExec(exec_id.to_string())).await.map_err(ContainerError::MonitorLost)?;
        loop {
            match conn.reader.next().await.map_err(ContainerError::MonitorLost)? {
                Some(FromMonitor::Exit(e)) => return Ok(exit_record(&e)),
                Some(FromMonitor::NoSuchExec(id)) => return Err(no_such_exec(c, &id)),
                Some(_) => continue,
                None => return Err(ContainerError::Stopped(c.shown())),
            }
        }
    }

    /// Signals an exec.
    pub async fn kill_exec(&self, c: &Arc<Container>, exec_id: &str, signal: &str) -> Result<(), ContainerError> {
        let signal = parse_signal(signal).map_err(ContainerError::Invalid)?;
        let mut conn = self.connect(c).await?;
        let frame = ToMonitor::SignalExec { exec_id: exec_id.to_string(), signal };
        conn.writer.send(frame).await.map_err(ContainerError::MonitorLost)?;
        loop {
            match conn.reader.next().await.map_err(ContainerError::MonitorLost)? {
                Some(FromMonitor::Started { .. }) => return Ok(()),
                Some(FromMonitor::NoSuchExec(id)) => return Err(no_such_exec(c, &id)),
                Some(_) => continue,
                None => return Err(ContainerError::Stopped(c.shown())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(argv: &[&str]) -> ExecRequest {
        ExecRequest { argv: argv.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn requests_with_a_nul_byte_are_refused_naming_the_field() {
        assert!(request(&["sh"]).validate().is_ok());
        let refusal = |r: ExecRequest| r.validate().unwrap_err().to_string();
        assert_eq!(refusal(request(&["sh", "-c\0x"])), "argv must not contain a NUL byte");
        assert_eq!(
            refusal(ExecRequest { env: vec!["A=b\0".into()], ..request(&["sh"]) }),
            "env must not contain a NUL byte"
        );
        assert_eq!(
            refusal(ExecRequest { workdir: "/\0".into(), ..request(&["sh"]) }),
            "workdir must not contain a NUL byte"
        );
        assert_eq!(refusal(ExecRequest { user: "r\0".into(), ..request(&["sh"]) }), "user must not contain a NUL byte");
        assert_eq!(refusal(request(&[])), "argv must name the command to run");
        assert!(refusal(ExecRequest { exec_id: "a b".into(), ..request(&["sh"]) }).contains("exec id"));
    }
}
