//! Exec: the cm.v1 stream as a domain exec session.

use std::sync::Arc;

use cm_api::v1 as pb;
use tonic::{Status, Streaming};

use super::RpcStream;
use super::bounds::Bounded;
use super::containers::exit_to_proto;
use super::session::{ClientFrame, inputs, outputs};
use crate::containers::{Containers, ExecRequest, SessionOutput};

fn response(output: SessionOutput) -> pb::ExecResponse {
    use pb::exec_response::Frame;
    let frame = match output {
        SessionOutput::Started { exec_id, pid } => Frame::Started(pb::ProcessStarted { exec_id, pid }),
        SessionOutput::Stdout(d) => Frame::Stdout(d),
        SessionOutput::Stderr(d) => Frame::Stderr(d),
        SessionOutput::Exit(e) => Frame::Exit(exit_to_proto(&e)),
    };
    pb::ExecResponse { frame: Some(frame) }
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
    start.check_bounds()?;
    let size = start.tty_size.unwrap_or_default();
    let request = ExecRequest {
        container: start.container,
        exec_id: start.exec_id,
        argv: start.argv,
        env: start.env,
        workdir: start.workdir,
        user: start.user,
        tty: start.tty,
        stdin: start.stdin,
        tty_size: (size.rows, size.cols),
        detach_on_disconnect: start.detach_on_disconnect,
    };
    let input = inputs(requests, |m: pb::ExecRequest| ClientFrame::from(m.frame));
    let session = containers.exec(request, input).await?;
    Ok(outputs(session, response))
}
