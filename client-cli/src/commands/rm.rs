//! `rm`: removes containers.

use cm_api::v1 as pb;

use crate::connect::Client;
use crate::each::for_each;

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Kill a running container before removing it.
    #[arg(short, long)]
    force: bool,
    /// Container ids, id prefixes or names.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `rm [-f]`: prints each container as given.
pub async fn rm(client: &Client, args: RmArgs) -> i32 {
    let force = args.force;
    for_each(args.containers, |container| {
        let mut client = client.clone();
        async move {
            client.remove(pb::RemoveRequest { container: container.clone(), force }).await?;
            Ok(Some(container))
        }
    })
    .await
}
