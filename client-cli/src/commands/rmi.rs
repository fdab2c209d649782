//! `rmi` (and `image rm`): removes images.

use cm_api::v1 as pb;

use crate::connect::Client;
use crate::error::{FAILURE, report_status};

#[derive(clap::Args, Debug)]
pub struct RmiArgs {
    /// Image references or ids.
    #[arg(required = true)]
    images: Vec<String>,
    /// Remove even if containers use the image.
    #[arg(long, short = 'f')]
    force: bool,
}

/// `rmi`: prints what was untagged and deleted; goes on after a failure, exiting with 1.
pub async fn rmi(client: &mut Client, args: RmiArgs) -> anyhow::Result<i32> {
    let mut code = 0;
    for image in args.images {
        match client.remove_image(pb::RemoveImageRequest { image: image.clone(), force: args.force }).await {
            Ok(response) => {
                let r = response.into_inner();
                for name in r.untagged {
                    println!("Untagged: {name}");
                }
                for id in r.deleted {
                    println!("Deleted: {id}");
                }
            }
            Err(status) => {
                report_status(status);
                code = FAILURE;
            }
        }
    }
    Ok(code)
}
