//! `create`, and the container creation `run` shares: pulling a missing image on the way.

use cm_api::v1 as pb;

use crate::connect::Client;
use crate::error::{daemon_error, status_error};
use crate::progress;
use crate::spec::{self, ContainerOptions};

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub container: ContainerOptions,
}

/// `create`: prints the new container's id.
pub async fn create(client: &mut Client, args: CreateArgs) -> anyhow::Result<i32> {
    match create_container(client, args.container).await {
        Ok((id, _)) => {
            println!("{id}");
            Ok(0)
        }
        Err(e) => daemon_error(e),
    }
}

/// Creates the container from the flags; when the image is not in the store, pulls it (progress on stderr, as
/// docker) and creates again. Returns the id and whether it has a tty.
pub async fn create_container(client: &mut Client, options: ContainerOptions) -> anyhow::Result<(String, bool)> {
    let spec = spec::build(options, |key| std::env::var(key).ok())?;
    let tty = spec.tty;
    let request = pb::CreateRequest { spec: Some(spec) };
    let status = match client.create(request.clone()).await {
        Ok(response) => return Ok((response.into_inner().id, tty)),
        Err(status) => status,
    };
    let image = &request.spec.as_ref().expect("set above").image;
    // NOT_FOUND may be about something else than the image (a bind mount source, say): pull only when the
    // image is the missing thing.
    if status.code() != tonic::Code::NotFound || !image_missing(client, image).await {
        return Err(status_error(status));
    }
    eprintln!("Unable to find image '{}' locally", with_default_tag(image));
    progress::pull(client, image, None, progress::Output::Stderr).await?;
    let id = client.create(request).await.map_err(status_error)?.into_inner().id;
    Ok((id, tty))
}

async fn image_missing(client: &mut Client, image: &str) -> bool {
    let request = pb::InspectImageRequest { image: image.to_string() };
    matches!(client.inspect_image(request).await, Err(status) if status.code() == tonic::Code::NotFound)
}

/// "alpine" -> "alpine:latest", as docker names an image it is about to pull.
fn with_default_tag(image: &str) -> String {
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    if image.contains('@') || image[name_start..].contains(':') { image.to_string() } else { format!("{image}:latest") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulled_images_are_named_with_their_default_tag() {
        assert_eq!(with_default_tag("alpine"), "alpine:latest");
        assert_eq!(with_default_tag("alpine:3.20"), "alpine:3.20");
        assert_eq!(with_default_tag("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(with_default_tag("app@sha256:ab"), "app@sha256:ab");
    }
}
