//! What Attach and Exec share: a session's input after its start, checked and forwarded to the monitor, and
//! the frames a session sends out. Any API (cm.v1, CRI) feeds the same types.

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use super::{ContainerError, ExitRecord, parse_signal};
use crate::runtime::client::Writer;
use crate::runtime::protocol::ToMonitor;

/// Largest stdin frame a client may send.
pub const MAX_STDIN_FRAME: usize = 1 << 20;

/// An input of a session after its start. A terminal size is clamped to what a terminal can have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionInput {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize {
        rows: u32,
        cols: u32,
    },
    /// A signal by name or number ("SIGTERM", "15").
    Signal(String),
}

/// Why a session's input broke off (the input stream yields it instead of an input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputBreak {
    /// The client cancelled or disconnected.
    Cancelled,
    /// The client broke the session's protocol (the message says how).
    Invalid(String),
}

/// A session's inputs; the end of the stream is the client's half-close.
pub type SessionInputs = BoxStream<'static, Result<SessionInput, InputBreak>>;

/// What a session sends out: started first, an exit (or an error) last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutput {
    /// The process runs; the exec id is empty for the main process.
    Started {
        exec_id: String,
        pid: i32,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitRecord),
}

/// A session's outputs as they come.
pub type SessionOutputs = mpsc::Receiver<Result<SessionOutput, ContainerError>>;

/// A terminal size as the monitor takes it.
pub(super) fn clamp_size(rows: u32, cols: u32) -> (u16, u16) {
    (rows.min(u16::MAX as u32) as u16, cols.min(u16::MAX as u32) as u16)
}

/// Sends everything for the monitor through one task, so several producers can share the connection.
pub(super) fn spawn_writer(mut writer: Writer) -> mpsc::Sender<ToMonitor> {
    let (tx, mut rx) = mpsc::channel::<ToMonitor>(16);
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if writer.send(frame).await.is_err() {
                break;
            }
        }
    });
    tx
}

/// How a session's input ended.
pub(super) enum InputEnd {
    /// The client half-closed (stdin was closed if wanted) or the monitor went away.
    Closed,
    /// The stream broke: the client cancelled or disconnected.
    Cancelled,
    /// An input broke the protocol; end the session with this error.
    Invalid(ContainerError),
}

/// The monitor frame for an input, or why the input is refused.
fn to_monitor_frame(input: SessionInput, want_stdin: bool) -> Result<ToMonitor, ContainerError> {
    Ok(match input {
        SessionInput::Stdin(d) if d.len() > MAX_STDIN_FRAME => {
            return Err(ContainerError::Invalid(format!("stdin frames are limited to {MAX_STDIN_FRAME} bytes")));
        }
        SessionInput::Stdin(d) if want_stdin => ToMonitor::Stdin(d),
        SessionInput::Stdin(_) => {
            return Err(ContainerError::Invalid("stdin frame on a session started without stdin".into()));
        }
        SessionInput::CloseStdin => ToMonitor::CloseStdin,
        SessionInput::Resize { rows, cols } => {
            let (rows, cols) = clamp_size(rows, cols);
            ToMonitor::Resize { rows, cols }
        }
        SessionInput::Signal(sig) => ToMonitor::Signal(parse_signal(&sig).map_err(ContainerError::Invalid)?),
    })
}

/// Forwards a session's inputs to the monitor until the input ends. A half-close closes stdin.
pub(super) async fn forward_input(
    mut input: SessionInputs,
    want_stdin: bool,
    to_monitor: &mpsc::Sender<ToMonitor>,
) -> InputEnd {
    loop {
        let frame = match input.next().await {
            None => {
                if want_stdin {
                    let _ = to_monitor.send(ToMonitor::CloseStdin).await;
                }
                return InputEnd::Closed;
            }
            Some(Err(InputBreak::Cancelled)) => return InputEnd::Cancelled,
            Some(Err(InputBreak::Invalid(message))) => return InputEnd::Invalid(ContainerError::Invalid(message)),
            Some(Ok(input)) => match to_monitor_frame(input, want_stdin) {
                Ok(frame) => frame,
                Err(e) => return InputEnd::Invalid(e),
            },
        };
        if to_monitor.send(frame).await.is_err() {
            return InputEnd::Closed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_become_monitor_frames_or_refusals() {
        assert!(matches!(to_monitor_frame(SessionInput::Stdin(vec![1]), true), Ok(ToMonitor::Stdin(d)) if d == [1]));
        let refused = to_monitor_frame(SessionInput::Stdin(vec![1]), false).unwrap_err();
        assert_eq!(refused.to_string(), "stdin frame on a session started without stdin");
        assert!(to_monitor_frame(SessionInput::Stdin(vec![0; MAX_STDIN_FRAME + 1]), true).is_err());
        let resize = to_monitor_frame(SessionInput::Resize { rows: 1 << 20, cols: 80 }, false);
        assert!(matches!(resize, Ok(ToMonitor::Resize { rows: u16::MAX, cols: 80 })));
        assert!(matches!(to_monitor_frame(SessionInput::Signal("TERM".into()), false), Ok(ToMonitor::Signal(15))));
        assert!(to_monitor_frame(SessionInput::Signal("NOPE".into()), false).is_err());
    }
}
