//! cm-client: a docker-like command line over cm.v1.ContainerService.

mod connect;
mod format;
mod pull;

use std::io::Read;

use clap::{Parser, Subcommand};
use cm_api::Address;
use cm_api::v1 as pb;

/// Command line client for cm-server.
#[derive(Parser, Debug)]
#[command(name = "cm-client", version, about)]
struct Cli {
    /// cm-server address: unix:/path, unix:///path or tcp://host:port.
    #[arg(long, global = true, env = "CM_HOST", value_name = "ADDR", default_value = cm_api::DEFAULT_ADDRESS)]
    host: Address,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pull an image from a registry, showing progress.
    Pull(PullArgs),
    /// List images.
    Images(ImagesArgs),
    /// Remove one or more images.
    Rmi(RmiArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove one or more images.
    Rm(RmiArgs),
    /// Print an image's config as JSON.
    Inspect {
        /// Image reference or id.
        #[arg(required = true)]
        images: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
struct PullArgs {
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

#[derive(clap::Args, Debug)]
struct ImagesArgs {
    /// Only show image ids.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Don't truncate ids.
    #[arg(long)]
    no_trunc: bool,
}

#[derive(clap::Args, Debug)]
struct RmiArgs {
    /// Image references or ids.
    #[arg(required = true)]
    images: Vec<String>,
    /// Remove even if containers use the image.
    #[arg(long, short = 'f')]
    force: bool,
}

/// Turns a gRPC status into an error line a person can act on.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    let code = match status.code() {
        tonic::Code::NotFound => "not found",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::DataLoss => "data loss",
        tonic::Code::FailedPrecondition => "failed precondition",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::Unimplemented => "not implemented",
        tonic::Code::Cancelled => "cancelled",
        _ => "error",
    };
    anyhow::anyhow!("{code}: {}", status.message())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("cm-client: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let mut client = connect::connect(&cli.host).await?;
    match cli.command {
        Command::Pull(args) | Command::Image(ImageCommand::Pull(args)) => pull_cmd(&mut client, args).await,
        Command::Images(args) | Command::Image(ImageCommand::Ls(args)) => images(&mut client, args).await,
        Command::Rmi(args) | Command::Image(ImageCommand::Rm(args)) => rmi(&mut client, args).await,
        Command::Image(ImageCommand::Inspect { images }) => inspect_image(&mut client, images).await,
    }
}

async fn pull_cmd(client: &mut connect::Client, args: PullArgs) -> anyhow::Result<i32> {
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
    pull::pull(client, &args.reference, auth).await?;
    Ok(0)
}

async fn images(client: &mut connect::Client, args: ImagesArgs) -> anyhow::Result<i32> {
    let mut images = client.list_images(pb::ListImagesRequest {}).await.map_err(status_error)?.into_inner().images;
    images.sort_by(|a, b| b.pulled.as_ref().map(|t| t.seconds).cmp(&a.pulled.as_ref().map(|t| t.seconds)));
    let id = |i: &pb::Image| if args.no_trunc { i.id.clone() } else { format::short_id(&i.id).to_string() };
    if args.quiet {
        for image in &images {
            println!("{}", id(image));
        }
        return Ok(0);
    }
    let mut rows = Vec::new();
    for image in &images {
        for reference in &image.references {
            let (repo, tag) = format::repo_and_tag(reference);
            let mut row = vec![repo, tag];
            if args.digests {
                row.push(image.manifest_digest.clone());
            }
            row.extend([id(image), format::size(image.size), format::ago(image.created.as_ref().map(|t| t.seconds))]);
            rows.push(row);
        }
    }
    let header: &[&str] = if args.digests {
        &["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "SIZE", "CREATED"]
    } else {
        &["REPOSITORY", "TAG", "IMAGE ID", "SIZE", "CREATED"]
    };
    print!("{}", format::table(header, &rows));
    Ok(0)
}

async fn rmi(client: &mut connect::Client, args: RmiArgs) -> anyhow::Result<i32> {
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
                eprintln!("cm-client: {}", status_error(status));
                code = 1;
            }
        }
    }
    Ok(code)
}

async fn inspect_image(client: &mut connect::Client, images: Vec<String>) -> anyhow::Result<i32> {
    let mut out = Vec::new();
    for image in images {
        let r = client.inspect_image(pb::InspectImageRequest { image }).await.map_err(status_error)?.into_inner();
        let config: serde_json::Value = serde_json::from_str(&r.config_json)?;
        let image = r.image.unwrap_or_default();
        out.push(serde_json::json!({
            "Id": image.id,
            "RepoTags": image.references,
            "ManifestDigest": image.manifest_digest,
            "Size": image.size,
            "Layers": image.layers,
            "Config": config,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}
