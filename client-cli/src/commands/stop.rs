//! `stop`: the stop signal, then SIGKILL after a grace period.

use cm_api::v1 as pb;

use crate::connect::Client;
use crate::each::for_each;

#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing (default 10).
    #[arg(short, long = "time", visible_alias = "timeout", value_name = "SECONDS")]
    time: Option<u32>,
    /// Container ids, id prefixes or names.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `stop [-t SECONDS]`: prints each container as given.
pub async fn stop(client: &Client, args: StopArgs) -> i32 {
    let seconds = args.time;
    for_each(args.containers, |container| {
        let mut client = client.clone();
        let timeout = seconds.map(|s| prost_types::Duration { seconds: s.into(), nanos: 0 });
        async move {
            client.stop(pb::StopRequest { container: container.clone(), timeout }).await?;
            Ok(Some(container))
        }
    })
    .await
}
