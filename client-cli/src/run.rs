//! `create`, `run`, `start` and `attach`: making containers and connecting the terminal to them.

use std::io::IsTerminal;

use anyhow::bail;
use cm_api::v1 as pb;

use crate::ContainerOptions;
use crate::attach::{self, Session, Target};
use crate::connect::Client;
use crate::{pull, spec, status_error};

/// Docker's exit code when the client or the server failed before the container's own exit code was known.
pub(crate) const DAEMON_ERROR: i32 = 125;

/// `create`: prints the new container's id.
pub async fn create(client: &mut Client, options: ContainerOptions) -> anyhow::Result<i32> {
    match create_container(client, options).await {
        Ok((id, _)) => {
            println!("{id}");
            Ok(0)
        }
        Err(e) => daemon_error(e),
    }
}

/// `run`: create (pulling a missing image), then start detached, or attach with start so no output is lost.
pub async fn run(client: &mut Client, options: ContainerOptions, detach: bool) -> anyhow::Result<i32> {
    let attach_stdin = options.interactive && !detach;
    if attach_stdin && options.tty && !std::io::stdin().is_terminal() {
        bail!("the input device is not a TTY");
    }
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
    attach::session(client, session).await.or_else(daemon_error)
}

/// `start`: starts each container and prints its name as given; with -a or -i, attaches to the only one.
pub async fn start(
    client: &mut Client,
    containers: Vec<String>,
    attach_output: bool,
    interactive: bool,
) -> anyhow::Result<i32> {
    if !(attach_output || interactive) {
        return Ok(crate::containers::for_each(containers, |container| {
            let mut client = client.clone();
            async move {
                client.start(pb::StartRequest { container: container.clone() }).await?;
                Ok(Some(container))
            }
        })
        .await);
    }
    let [container] = <[String; 1]>::try_from(containers)
        .map_err(|_| anyhow::anyhow!("you cannot start and attach multiple containers at once"))?;
    let c = inspect(client, &container).await?;
    let spec = c.spec.unwrap_or_default();
    let stdin = interactive && spec.stdin;
    if stdin && spec.tty && !std::io::stdin().is_terminal() {
        bail!("the input device is not a TTY");
    }
    // Starting a running container is a no-op for docker: attach to it.
    let running = c.state == pb::ContainerState::Running as i32;
    let session = Session { target: Target::Attach { container, start: !running }, stdin, tty: spec.tty };
    attach::session(client, session).await
}

/// `attach`: connects to a running container's main process, until it exits.
pub async fn attach(client: &mut Client, container: String, want_stdin: bool) -> anyhow::Result<i32> {
    let c = inspect(client, &container).await?;
    if c.state != pb::ContainerState::Running as i32 {
        bail!("you cannot attach to a stopped container, start it first");
    }
    let spec = c.spec.unwrap_or_default();
    // As docker: stdin is attached only when the container was created with it open (-i).
    let stdin = want_stdin && spec.stdin;
    if stdin && spec.tty && !std::io::stdin().is_terminal() {
        bail!("the input device is not a TTY");
    }
    attach::session(client, Session { target: Target::Attach { container, start: false }, stdin, tty: spec.tty }).await
}

/// Creates the container from the flags; when the image is not in the store, pulls it (progress on stderr, as
/// docker) and creates again. Returns the id and whether it has a tty.
async fn create_container(client: &mut Client, options: ContainerOptions) -> anyhow::Result<(String, bool)> {
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
    pull::pull(client, image, None, pull::Output::Stderr).await?;
    let id = client.create(request).await.map_err(status_error)?.into_inner().id;
    Ok((id, tty))
}

async fn image_missing(client: &mut Client, image: &str) -> bool {
    let request = pb::InspectImageRequest { image: image.to_string() };
    matches!(client.inspect_image(request).await, Err(status) if status.code() == tonic::Code::NotFound)
}

async fn inspect(client: &mut Client, container: &str) -> anyhow::Result<pb::Container> {
    let request = pb::InspectRequest { container: container.to_string() };
    let response = client.inspect(request).await.map_err(status_error)?.into_inner();
    response.container.ok_or_else(|| anyhow::anyhow!("the server described no container for {container}"))
}

/// Reports an error that happened before the container's exit code was known, with docker's exit code.
pub(crate) fn daemon_error(e: anyhow::Error) -> anyhow::Result<i32> {
    eprintln!("cm-client: {e:#}");
    Ok(DAEMON_ERROR)
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
