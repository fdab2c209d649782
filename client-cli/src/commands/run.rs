//! `run`: create (pulling a missing image), then start detached, or attached.

use cm_api::v1 as pb;

use super::create::create_container;
use crate::connect::Client;
use crate::error::{daemon_error, status_error};
use crate::session::{self, Session, Target};
use crate::spec::ContainerOptions;
use crate::tty;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Run the container in the background and print its id.
    #[arg(short, long)]
    detach: bool,
    #[command(flatten)]
    pub container: ContainerOptions,
}

/// `run`: detached, prints the id; attached, exits with the container's exit code (attached with start, so no
/// output is lost).
pub async fn run(client: &mut Client, args: RunArgs) -> anyhow::Result<i32> {
    let RunArgs { detach, container: options } = args;
    let attach_stdin = options.interactive && !detach;
    tty::check_stdin(attach_stdin, options.tty)?;
    let (id, tty) = match create_container(client, options).await {
        Ok(created) => created,
        Err(e) => return daemon_error(e),
    };
    if detach {
        if let Err(status) = client.start(pb::StartRequest { container: id.clone() }).await {
            return daemon_error(status_error(status));
        }
        println!("{id}");
        return Ok(0);
    }
    let session = Session { target: Target::Attach { container: id, start: true }, stdin: attach_stdin, tty };
    session::session(client, session).await.or_else(daemon_error)
}
