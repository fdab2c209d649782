//! `wait`: containers' exit codes, once they stop.

use cm_api::v1 as pb;

use crate::connect::Client;
use crate::each::for_each;

#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    /// Container ids, id prefixes or names.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `wait`: prints each container's exit code.
pub async fn wait(client: &Client, args: WaitArgs) -> i32 {
    for_each(args.containers, |container| {
        let mut client = client.clone();
        async move {
            let response = client.wait(pb::WaitRequest { container, exec_id: String::new() }).await?.into_inner();
            Ok(Some(response.status.unwrap_or_default().exit_code.to_string()))
        }
    })
    .await
}
