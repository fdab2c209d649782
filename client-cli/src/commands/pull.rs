//! `pull` (and `image pull`): an image from a registry, with progress (see progress.rs).

use std::io::Read;

use cm_api::v1 as pb;

use crate::connect::Client;
use crate::error::status_error;
use crate::progress;

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// Image reference, e.g. alpine, 127.0.0.1:5000/app:v1 or app@sha256:...
    reference: String,
    /// User name for a private registry.
    #[arg(long, short = 'u')]
    username: Option<String>,
    /// Read the registry password from stdin.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// Print nothing but the image id.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// `pull`: prints the image id at the end.
pub async fn pull(client: &mut Client, args: PullArgs) -> anyhow::Result<i32> {
    let auth = match args.username {
        Some(username) => {
            let mut password = String::new();
            if args.password_stdin {
                std::io::stdin().read_to_string(&mut password)?;
            }
            Some(pb::RegistryAuth { username, password: password.trim_end_matches(['\r', '\n']).to_string() })
        }
        None => None,
    };
    if args.quiet {
        let mut stream = client
            .pull_image(pb::PullImageRequest { reference: args.reference, auth })
            .await
            .map_err(status_error)?
            .into_inner();
        while let Some(message) = stream.message().await.map_err(status_error)? {
            if let Some(pb::pull_image_response::Event::Done(done)) = message.event {
                println!("{}", done.image_id);
            }
        }
        return Ok(0);
    }
    let done = progress::pull(client, &args.reference, auth, progress::Output::Stdout).await?;
    println!("{}", done.image_id);
    Ok(0)
}
