//! What Attach and Exec share: a session's client frames after the start frame, checked and forwarded to the
//! monitor.

use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::containers::parse_signal;
use crate::runtime::client::Writer;
use crate::runtime::protocol::ToMonitor;

/// Largest stdin frame a client may send.
pub const MAX_STDIN_FRAME: usize = 1 << 20;

/// A client frame of either stream.
pub enum ClientFrame {
    Start,
    Stdin(Vec<u8>),
    CloseStdin,
    Resize { rows: u32, cols: u32 },
    Signal(String),
    Nothing,
}

impl From<Option<cm_api::v1::attach_request::Frame>> for ClientFrame {
    fn from(frame: Option<cm_api::v1::attach_request::Frame>) -> Self {
        use cm_api::v1::attach_request::Frame;
        match frame {
            Some(Frame::Start(_)) => ClientFrame::Start,
            Some(Frame::Stdin(d)) => ClientFrame::Stdin(d.data),
            Some(Frame::CloseStdin(true)) => ClientFrame::CloseStdin,
            Some(Frame::Resize(s)) => ClientFrame::Resize { rows: s.rows, cols: s.cols },
            Some(Frame::Signal(s)) => ClientFrame::Signal(s),
            Some(Frame::CloseStdin(false)) | None => ClientFrame::Nothing,
        }
    }
}

impl From<Option<cm_api::v1::exec_request::Frame>> for ClientFrame {
    fn from(frame: Option<cm_api::v1::exec_request::Frame>) -> Self {
        use cm_api::v1::exec_request::Frame;
        match frame {
            Some(Frame::Start(_)) => ClientFrame::Start,
            Some(Frame::Stdin(d)) => ClientFrame::Stdin(d.data),
            Some(Frame::CloseStdin(true)) => ClientFrame::CloseStdin,
            Some(Frame::Resize(s)) => ClientFrame::Resize { rows: s.rows, cols: s.cols },
            Some(Frame::Signal(s)) => ClientFrame::Signal(s),
            Some(Frame::CloseStdin(false)) | None => ClientFrame::Nothing,
        }
    }
}

/// Sends everything for the monitor through one task, so several producers can share the connection.
pub fn spawn_writer(mut writer: Writer) -> mpsc::Sender<ToMonitor> {
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
pub enum InputEnd {
    /// The client half-closed (stdin was closed if wanted) or the monitor went away.
    Closed,
    /// The stream broke: the client cancelled or disconnected.
    Cancelled,
    /// A frame broke the protocol; end the stream with this status.
    Invalid(Status),
}

/// Forwards a session's client frames to the monitor until the input ends. A half-close closes stdin.
pub async fn forward_input<T>(
    mut requests: Streaming<T>,
    frame_of: impl Fn(T) -> ClientFrame,
    want_stdin: bool,
    to_monitor: &mpsc::Sender<ToMonitor>,
) -> InputEnd {
    loop {
        let message = match requests.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                if want_stdin {
                    let _ = to_monitor.send(ToMonitor::CloseStdin).await;
                }
                return InputEnd::Closed;
            }
            Err(_) => return InputEnd::Cancelled,
        };
        let frame = match frame_of(message) {
            ClientFrame::Stdin(d) if d.len() > MAX_STDIN_FRAME => {
                return InputEnd::Invalid(Status::invalid_argument(format!(
                    "stdin frames are limited to {MAX_STDIN_FRAME} bytes"
                )));
            }
            ClientFrame::Stdin(d) if want_stdin => ToMonitor::Stdin(d),
            ClientFrame::Stdin(_) => {
                return InputEnd::Invalid(Status::invalid_argument("stdin frame on a session started without stdin"));
            }
            ClientFrame::CloseStdin => ToMonitor::CloseStdin,
            ClientFrame::Resize { rows, cols } => {
                ToMonitor::Resize { rows: rows.min(u16::MAX as u32) as u16, cols: cols.min(u16::MAX as u32) as u16 }
            }
            ClientFrame::Signal(sig) => match parse_signal(&sig) {
                Ok(n) => ToMonitor::Signal(n),
                Err(e) => return InputEnd::Invalid(Status::invalid_argument(e)),
            },
            ClientFrame::Start => {
                return InputEnd::Invalid(Status::invalid_argument("only the first message may be a start frame"));
            }
            ClientFrame::Nothing => continue,
        };
        if to_monitor.send(frame).await.is_err() {
            return InputEnd::Closed;
        }
    }
}
