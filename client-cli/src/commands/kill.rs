//! `kill`: a signal to containers' main processes.

use cm_api::v1 as pb;

use crate::connect::Client;
use crate::each::for_each;

#[derive(clap::Args, Debug)]
pub struct KillArgs {
    /// Signal to send: a name (SIGHUP, HUP) or a number.
    #[arg(short, long)]
    signal: Option<String>,
    /// Container ids, id prefixes or names.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `kill [-s SIGNAL]`: prints each container as given.
pub async fn kill(client: &Client, args: KillArgs) -> i32 {
    let signal = args.signal;
    for_each(args.containers, |container| {
        let mut client = client.clone();
        let signal = signal.clone().unwrap_or_default();
        async move {
            client.kill(pb::KillRequest { container: container.clone(), signal, exec_id: String::new() }).await?;
            Ok(Some(container))
        }
    })
    .await
}
