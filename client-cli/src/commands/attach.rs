//! `attach`: connects the terminal to a running container's main process.

use anyhow::bail;
use cm_api::v1 as pb;

use super::inspect::container;
use crate::connect::Client;
use crate::session::{self, Session, Target};
use crate::tty;

#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    /// Do not attach stdin.
    #[arg(long)]
    no_stdin: bool,
    /// Container id, id prefix or name.
    container: String,
}

/// `attach`: until the process exits, with its exit code.
pub async fn attach(client: &mut Client, args: AttachArgs) -> anyhow::Result<i32> {
    let c = container(client, &args.container).await?;
    if c.state != pb::ContainerState::Running as i32 {
        bail!("you cannot attach to a stopped container, start it first");
    }
    let spec = c.spec.unwrap_or_default();
    // As docker: stdin is attached only when the container was created with it open (-i).
    let stdin = !args.no_stdin && spec.stdin;
    tty::check_stdin(stdin, spec.tty)?;
    let session = Session { target: Target::Attach { container: args.container, start: false }, stdin, tty: spec.tty };
    session::session(client, session).await
}
