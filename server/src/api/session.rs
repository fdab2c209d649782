//! Attach and Exec streams as domain sessions: client frames after the start frame become session inputs,
//! session outputs become response frames.

use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::RpcStream;
use super::bounds::signal_frame;
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
/// frame, a signal frame past its bound or a message larger than the server takes (tonic's decoder refuses it
/// with OUT_OF_RANGE) breaks the protocol.
pub fn inputs<T: Send + 'static>(requests: Streaming<T>, frame_of: fn(T) -> ClientFrame) -> SessionInputs {
    requests
        .filter_map(move |message| {
            let input = match message.map(frame_of) {
                Ok(ClientFrame::Input(SessionInput::Signal(s))) if signal_frame(&s).is_err() => {
                    signal_frame(&s).err().map(|e| Err(InputBreak::Invalid(e)))
                }
                Ok(ClientFrame::Input(input)) => Some(Ok(input)),
                Ok(ClientFrame::Nothing) => None,
                Ok(ClientFrame::Start) => {
                    Some(Err(InputBreak::Invalid("only the first message may be a start frame".into())))
                }
                Err(status) => Some(Err(stream_break(&status))),
            };
            std::future::ready(input)
        })
        .boxed()
}

/// Why a client stream broke: a message the decoder refused (too large, not protobuf) is the client's error;
/// anything else (a reset, a dropped connection, a deadline) is a cancel.
fn stream_break(status: &Status) -> InputBreak {
    match status.code() {
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::Internal
            if !status.message().contains("h2 protocol error") =>
        {
            InputBreak::Invalid(format!("a client message was refused: {}", status.message()))
        }
        _ => InputBreak::Cancelled,
    }
}

/// A session's outputs as a response stream.
pub fn outputs<T: Send + 'static>(outputs: SessionOutputs, frame_of: fn(SessionOutput) -> T) -> RpcStream<T> {
    Box::pin(ReceiverStream::new(outputs).map(move |output| output.map(frame_of).map_err(Status::from)))
}
