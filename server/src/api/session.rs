//! Attach and Exec streams as domain sessions: client frames after the start frame become session inputs,
//! session outputs become response frames.

use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::RpcStream;
use crate::containers::{InputBreak, SessionInput, SessionInputs, SessionOutput, SessionOutputs};

/// A client frame of either stream: the start frame, a session input, or a frame that says nothing.
pub enum ClientFrame {
    Start,
    Input(SessionInput),
    Nothing,
}

impl From<Option<cm_api::v1::attach_request::Frame>> for ClientFrame {
    fn from(frame: Option<cm_api::v1::attach_request::Frame>) -> Self {
        use cm_api::v1::attach_request::Frame;
        match frame {
            Some(Frame::Start(_)) => ClientFrame::Start,
            Some(Frame::Stdin(d)) => ClientFrame::Input(SessionInput::Stdin(d.data)),
            Some(Frame::CloseStdin(true)) => ClientFrame::Input(SessionInput::CloseStdin),
            Some(Frame::Resize(s)) => ClientFrame::Input(SessionInput::Resize { rows: s.rows, cols: s.cols }),
            Some(Frame::Signal(s)) => ClientFrame::Input(SessionInput::Signal(s)),
            Some(Frame::CloseStdin(false)) | None => ClientFrame::Nothing,
        }
    }
}

impl From<Option<cm_api::v1::exec_request::Frame>> for ClientFrame {
    fn from(frame: Option<cm_api::v1::exec_request::Frame>) -> Self {
        use cm_api::v1::exec_request::Frame;
        match frame {
            Some(Frame::Start(_)) => ClientFrame::Start,
            Some(Frame::Stdin(d)) => ClientFrame::Input(SessionInput::Stdin(d.data)),
            Some(Frame::CloseStdin(true)) => ClientFrame::Input(SessionInput::CloseStdin),
            Some(Frame::Resize(s)) => ClientFrame::Input(SessionInput::Resize { rows: s.rows, cols: s.cols }),
            Some(Frame::Signal(s)) => ClientFrame::Input(SessionInput::Signal(s)),
            Some(Frame::CloseStdin(false)) | None => ClientFrame::Nothing,
        }
    }
}

/// The client frames after the start frame as session inputs. A broken stream is a cancel; a second start
/// frame breaks the protocol.
pub fn inputs<T: Send + 'static>(requests: Streaming<T>, frame_of: fn(T) -> ClientFrame) -> SessionInputs {
    requests
        .filter_map(move |message| {
            let input = match message.map(frame_of) {
                Ok(ClientFrame::Input(input)) => Some(Ok(input)),
                Ok(ClientFrame::Nothing) => None,
                Ok(ClientFrame::Start) => {
                    Some(Err(InputBreak::Invalid("only the first message may be a start frame".into())))
                }
                Err(_) => Some(Err(InputBreak::Cancelled)),
            };
            std::future::ready(input)
        })
        .boxed()
}

/// A session's outputs as a response stream.
pub fn outputs<T: Send + 'static>(outputs: SessionOutputs, frame_of: fn(SessionOutput) -> T) -> RpcStream<T> {
    Box::pin(ReceiverStream::new(outputs).map(move |output| output.map(frame_of).map_err(Status::from)))
}
