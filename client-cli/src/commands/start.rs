//! `start`: starts containers, or one attached.

use cm_api::v1 as pb;

use super::inspect::container;
use crate::connect::Client;
use crate::each::for_each;
use crate::session::{self, Session, Target};
use crate::tty;

#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// Attach stdout and stderr and wait for the container to exit, with its exit code.
    #[arg(short, long)]
    attach: bool,
    /// Attach stdin too (implies --attach).
    #[arg(short, long)]
    interactive: bool,
    /// Container ids, id prefixes or names.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `start`: starts each container and prints its name as given; with -a or -i, attaches to the only one.
pub async fn start(client: &mut Client, args: StartArgs) -> anyhow::Result<i32> {
    let StartArgs { attach: attach_output, interactive, containers } = args;
    if !(attach_output || interactive) {
        return Ok(for_each(containers, |container| {
            let mut client = client.clone();
            async move {
                client.start(pb::StartRequest { container: container.clone() }).await?;
                Ok(Some(container))
            }
        })
        .await);
    }
    let [name] = <[String; 1]>::try_from(containers)
        .map_err(|_| anyhow::anyhow!("you cannot start and attach multiple containers at once"))?;
    let c = container(client, &name).await?;
    let spec = c.spec.unwrap_or_default();
    let stdin = interactive && spec.stdin;
    tty::check_stdin(stdin, spec.tty)?;
    // Starting a running container is a no-op for docker: attach to it.
    let running = c.state == pb::ContainerState::Running as i32;
    let session = Session { target: Target::Attach { container: name, start: !running }, stdin, tty: spec.tty };
    session::session(client, session).await
}
