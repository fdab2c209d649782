//! cm-client: a docker-like command line over cm.v1.ContainerService.

mod attach;
mod connect;
mod containers;
mod events;
mod exec;
mod format;
mod pull;
mod run;
mod spec;
mod stats;

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
    /// Create and run a new container from an image (pulling the image if it is missing).
    Run(RunArgs),
    /// Create a new container without starting it; prints its id.
    Create(CreateArgs),
    /// Start one or more created or stopped containers.
    Start(StartArgs),
    /// Attach the terminal's stdin, stdout and stderr to a running container.
    Attach(AttachArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// List containers.
    Ps(PsArgs),
    /// Print containers' full descriptions as JSON.
    Inspect {
        /// Container ids, id prefixes or names.
        #[arg(required = true, value_name = "CONTAINER")]
        containers: Vec<String>,
    },
    /// Stop one or more running containers: the stop signal, then SIGKILL after a grace period.
    Stop(StopArgs),
    /// Send a signal to one or more running containers (SIGKILL by default).
    Kill(KillArgs),
    /// Remove one or more containers.
    Rm(RmArgs),
    /// Wait for containers to stop, then print their exit codes.
    Wait {
        /// Container ids, id prefixes or names.
        #[arg(required = true, value_name = "CONTAINER")]
        containers: Vec<String>,
    },
    /// Print a container's log.
    Logs(LogsArgs),
    /// Show containers' resource usage (CPU, memory, network and block I/O, pids), refreshed every second.
    Stats(StatsArgs),
    /// Print the server's events (containers, execs, images) as they happen.
    Events(EventsArgs),
    /// List a container's published ports, or the host address of one of them.
    Port(PortArgs),
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

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Run the container in the background and print its id.
    #[arg(short, long)]
    detach: bool,
    #[command(flatten)]
    container: ContainerOptions,
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    #[command(flatten)]
    container: ContainerOptions,
}

/// What `run` and `create` turn into a ContainerSpec (see spec.rs).
#[derive(clap::Args, Debug)]
struct ContainerOptions {
    /// Keep stdin open (and attached, for run).
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Name the container.
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable; KEY alone takes its value from this shell (skipped when unset).
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file of KEY=VALUE lines (# comments).
    #[arg(long, value_name = "FILE")]
    env_file: Vec<std::path::PathBuf>,
    /// Working directory inside the container (absolute).
    #[arg(short, long, value_name = "DIR", value_parser = spec::parse_workdir)]
    workdir: Option<String>,
    /// User to run as: name or uid, optionally :group or :gid.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Override the image's entrypoint ("" clears it).
    #[arg(long, value_name = "COMMAND")]
    entrypoint: Option<String>,
    /// Container host name (default: the first 12 characters of the id).
    #[arg(long)]
    hostname: Option<String>,
    /// Memory limit: a number of bytes with an optional unit b, k, m or g (1024-based), e.g. 256m.
    #[arg(short, long, value_name = "BYTES", value_parser = cm_api::units::parse_memory)]
    memory: Option<u64>,
    /// Number of CPUs, e.g. 0.5 or 2.
    #[arg(long, value_name = "DECIMAL", value_parser = cm_api::units::parse_cpus)]
    cpus: Option<u64>,
    /// Maximum number of processes (-1 for no limit).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pids_limit: Option<i64>,
    /// Network mode.
    #[arg(long, value_enum, default_value_t = spec::Network::Bridge)]
    network: spec::Network,
    /// Publish a container port on the host; ranges like 8000-8001:80-81 publish each port.
    #[arg(
        short,
        long,
        value_name = "[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]",
        value_parser = spec::parse_publish
    )]
    publish: Vec<spec::Published>,
    /// Bind mount a host directory or file.
    #[arg(short, long, value_name = "HOST_PATH:CONTAINER_PATH[:ro]", value_parser = spec::parse_volume)]
    volume: Vec<pb::Mount>,
    /// Mount an empty tmpfs.
    #[arg(long, value_name = "PATH[:ro]", value_parser = spec::parse_tmpfs)]
    tmpfs: Vec<pb::Mount>,
    /// Set a label.
    #[arg(short, long, value_name = "KEY[=VALUE]", value_parser = spec::parse_label)]
    label: Vec<(String, String)>,
    /// Signal that stops the container, e.g. SIGINT (default: the image's, or SIGTERM).
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// Image reference or id, then the command and its arguments, which override the image's Cmd (everything
    /// after IMAGE is the command's, flags included).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_names = ["IMAGE", "COMMAND"])]
    image_and_command: Vec<String>,
}

impl ContainerOptions {
    fn check(&self, subcommand: &str) -> Result<(), clap::Error> {
        refuse_flag_for_operand(subcommand, self.image_and_command.first())
    }
}

/// IMAGE (CONTAINER for exec) takes hyphen values so that the command after it can have flags, which also lets
/// an unknown flag before it pass for the operand: refuse it here, as clap would.
fn refuse_flag_for_operand(subcommand: &str, operand: Option<&String>) -> Result<(), clap::Error> {
    match operand {
        Some(operand) if operand.starts_with('-') => {
            let mut cli = <Cli as clap::CommandFactory>::command();
            cli.build();
            let command = cli.find_subcommand_mut(subcommand).expect("a subcommand of cm-client");
            Err(command
                .error(clap::error::ErrorKind::UnknownArgument, format!("unexpected argument '{operand}' found")))
        }
        _ => Ok(()),
    }
}

#[derive(clap::Args, Debug)]
struct StartArgs {
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

#[derive(clap::Args, Debug)]
struct AttachArgs {
    /// Do not attach stdin.
    #[arg(long)]
    no_stdin: bool,
    /// Container id, id prefix or name.
    container: String,
}

#[derive(clap::Args, Debug)]
struct ExecArgs {
    /// Run the command in the background; print nothing.
    #[arg(short, long)]
    detach: bool,
    /// Attach stdin.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable; KEY alone takes its value from this shell (skipped when unset).
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file of KEY=VALUE lines (# comments).
    #[arg(long, value_name = "FILE")]
    env_file: Vec<std::path::PathBuf>,
    /// User to run as: name or uid, optionally :group or :gid (default: the container's).
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Working directory inside the container (absolute; default: the container's).
    #[arg(short, long, value_name = "DIR", value_parser = spec::parse_workdir)]
    workdir: Option<String>,
    /// Container id, id prefix or name, then the command and its arguments (everything after CONTAINER is the
    /// command's, flags included).
    #[arg(
        required = true,
        num_args = 2..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_names = ["CONTAINER", "COMMAND"]
    )]
    container_and_command: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct PsArgs {
    /// Show all containers (default: running ones).
    #[arg(short, long)]
    all: bool,
    /// Only show ids.
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate ids and commands.
    #[arg(long)]
    no_trunc: bool,
}

#[derive(clap::Args, Debug)]
struct StopArgs {
    /// Seconds to wait before killing (default 10).
    #[arg(short, long = "time", visible_alias = "timeout", value_name = "SECONDS")]
    time: Option<u32>,
    /// Container ids, id prefixes or names.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct KillArgs {
    /// Signal to send: a name (SIGHUP, HUP) or a number.
    #[arg(short, long)]
    signal: Option<String>,
    /// Container ids, id prefixes or names.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct RmArgs {
    /// Kill a running container before removing it.
    #[arg(short, long)]
    force: bool,
    /// Container ids, id prefixes or names.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct LogsArgs {
    /// Keep printing new lines until the container exits.
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end, or "all".
    #[arg(short = 'n', long, value_name = "N", default_value = "all", value_parser = containers::parse_tail)]
    tail: containers::Tail,
    /// Only lines since a time: RFC 3339 (2024-05-01T10:00:00Z), a duration ago (10m, 1h30m) or unix seconds.
    #[arg(long, value_name = "TIME", value_parser = containers::parse_since_now)]
    since: Option<prost_types::Timestamp>,
    /// Prefix each line with its time (RFC 3339, nanoseconds).
    #[arg(short, long)]
    timestamps: bool,
    /// Container id, id prefix or name.
    container: String,
}

#[derive(clap::Args, Debug)]
struct StatsArgs {
    /// Show all containers (default: running ones); stopped ones get a row of zeros.
    #[arg(short, long)]
    all: bool,
    /// Print one sample (taken over one second) and exit.
    #[arg(long)]
    no_stream: bool,
    /// Output: a table, or json (one object per sample and line; stopped containers are left out).
    #[arg(long, value_enum, default_value_t = stats::Format::Table)]
    format: stats::Format,
    /// Don't truncate ids.
    #[arg(long)]
    no_trunc: bool,
    /// Container ids, id prefixes or names (default: all running containers, those started later too).
    #[arg(value_name = "CONTAINER")]
    containers: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct EventsArgs {
    /// Only events matching KEY=VALUE; keys: type (container, exec, image), action, id, container, image. The
    /// same key twice: either; different keys: both.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// First the events kept since a time (RFC 3339, a duration ago like 10m, or unix seconds); the server keeps
    /// the last 1000.
    #[arg(long, value_name = "TIME", value_parser = containers::parse_since_now)]
    since: Option<prost_types::Timestamp>,
    /// Output: text lines, or json (one object per line).
    #[arg(long, value_enum, default_value_t = events::Format::Text)]
    format: events::Format,
}

#[derive(clap::Args, Debug)]
struct PortArgs {
    /// Container id, id prefix or name.
    container: String,
    /// Only this container port, e.g. 80 or 53/udp.
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    port: Option<String>,
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

fn main() {
    // Like other command line tools, end quietly when stdout is a closed pipe (`cm-client ps | head -1`).
    // SAFETY: restoring the default SIGPIPE action before anything else runs.
    unsafe { nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_DFL) };
    let cli = Cli::parse();
    match &cli.command {
        Command::Run(RunArgs { container, .. }) => container.check("run"),
        Command::Create(CreateArgs { container }) => container.check("create"),
        Command::Exec(args) => refuse_flag_for_operand("exec", args.container_and_command.first()),
        _ => Ok(()),
    }
    .unwrap_or_else(|e| e.exit());
    // One thread is plenty for a client, and starts faster than a multi-threaded runtime (no workers, no
    // CPU count from /proc/self/mountinfo and the cgroup files): exec's latency budget is a few ms. Blocking
    // work (reading stdin) runs on threads of its own.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match result {
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
        Command::Run(args) => run::run(&mut client, args.container, args.detach).await,
        Command::Create(args) => run::create(&mut client, args.container).await,
        Command::Start(args) => run::start(&mut client, args.containers, args.attach, args.interactive).await,
        Command::Attach(args) => run::attach(&mut client, args.container, !args.no_stdin).await,
        Command::Exec(args) => exec::exec(&mut client, args).await,
        Command::Ps(args) => containers::ps(&mut client, args.all, args.quiet, args.no_trunc).await,
        Command::Inspect { containers } => containers::inspect(&mut client, containers).await,
        Command::Stop(args) => Ok(containers::stop(&client, args.containers, args.time).await),
        Command::Kill(args) => Ok(containers::kill(&client, args.containers, args.signal).await),
        Command::Rm(args) => Ok(containers::rm(&client, args.containers, args.force).await),
        Command::Wait { containers } => Ok(containers::wait(&client, containers).await),
        Command::Logs(args) => {
            let options = containers::LogsOptions {
                follow: args.follow,
                tail: args.tail,
                since: args.since,
                timestamps: args.timestamps,
            };
            containers::logs(&mut client, args.container, options).await
        }
        Command::Stats(args) => {
            let options = stats::StatsOptions {
                all: args.all,
                no_stream: args.no_stream,
                format: args.format,
                no_trunc: args.no_trunc,
            };
            stats::stats(&mut client, args.containers, options).await
        }
        Command::Events(args) => events::events(&mut client, args.filter, args.since, args.format).await,
        Command::Port(args) => containers::port(&mut client, args.container, args.port).await,
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
    let done = pull::pull(client, &args.reference, auth, pull::Output::Stdout).await?;
    println!("{}", done.image_id);
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
