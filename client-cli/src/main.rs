//! cm-client: a docker-like command line over cm.v1.ContainerService. This file is the command tree and the
//! process around it (parsing, the runtime, the exit code); each command lives in commands/.

mod commands;
mod connect;
mod each;
mod error;
mod format;
mod parse;
mod progress;
mod session;
mod spec;
mod tty;

use clap::{Parser, Subcommand};
use cm_api::Address;

use commands::{
    attach, create, events, exec, image_inspect, images, inspect, kill, logs, port, ps, pull, rm, rmi, run, start,
    stats, stop, wait,
};

/// Command line client for cm-server.
#[derive(Parser, Debug)]
#[command(name = "cm-client", version, about)]
struct Cli {
    /// cm-server address: unix:/path, unix:///path or tcp://host:port (TCP needs the --tls-* options).
    #[arg(long, global = true, env = "CM_HOST", value_name = "ADDR", default_value = cm_api::DEFAULT_ADDRESS,
          value_parser = |s: &str| Address::parse(s).map(|_| s.to_string()))]
    host: String,
    #[command(flatten)]
    tls: connect::TlsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create and run a new container from an image (pulling the image if it is missing).
    Run(run::RunArgs),
    /// Create a new container without starting it; prints its id.
    Create(create::CreateArgs),
    /// Start one or more created or stopped containers.
    Start(start::StartArgs),
    /// Attach the terminal's stdin, stdout and stderr to a running container.
    Attach(attach::AttachArgs),
    /// Run a command in a running container.
    Exec(exec::ExecArgs),
    /// List containers.
    Ps(ps::PsArgs),
    /// Print containers' full descriptions as JSON.
    Inspect(inspect::InspectArgs),
    /// Stop one or more running containers: the stop signal, then SIGKILL after a grace period.
    Stop(stop::StopArgs),
    /// Send a signal to one or more running containers (SIGKILL by default).
    Kill(kill::KillArgs),
    /// Remove one or more containers.
    Rm(rm::RmArgs),
    /// Wait for containers to stop, then print their exit codes.
    Wait(wait::WaitArgs),
    /// Print a container's log.
    Logs(logs::LogsArgs),
    /// Show containers' resource usage (CPU, memory, network and block I/O, pids), refreshed every second.
    Stats(stats::StatsArgs),
    /// Print the server's events (containers, execs, images) as they happen.
    Events(events::EventsArgs),
    /// List a container's published ports, or the host address of one of them.
    Port(port::PortArgs),
    /// Pull an image from a registry, showing progress.
    Pull(pull::PullArgs),
    /// List images.
    Images(images::ImagesArgs),
    /// Remove one or more images.
    Rmi(rmi::RmiArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Pull an image from a registry.
    Pull(pull::PullArgs),
    /// List images.
    #[command(alias = "list")]
    Ls(images::ImagesArgs),
    /// Remove one or more images.
    Rm(rmi::RmiArgs),
    /// Print an image's config as JSON.
    Inspect(image_inspect::ImageInspectArgs),
}

impl Command {
    /// The subcommand and its first operand when that operand takes hyphen values (IMAGE of run and create,
    /// CONTAINER of exec), so that the command after it can have flags.
    fn hyphen_operand(&self) -> Option<(&'static str, &String)> {
        match self {
            Command::Run(args) => Some(("run", args.container.image_and_command.first()?)),
            Command::Create(args) => Some(("create", args.container.image_and_command.first()?)),
            Command::Exec(args) => Some(("exec", args.container_and_command.first()?)),
            _ => None,
        }
    }
}

/// A hyphen-value operand also lets an unknown flag before it pass for the operand: refuse it here, as clap
/// would.
fn refuse_flag_for_operand(command: &Command) -> Result<(), clap::Error> {
    match command.hyphen_operand() {
        Some((subcommand, operand)) if operand.starts_with('-') => {
            let mut cli = <Cli as clap::CommandFactory>::command();
            cli.build();
            let command = cli.find_subcommand_mut(subcommand).expect("a subcommand of cm-client");
            Err(command
                .error(clap::error::ErrorKind::UnknownArgument, format!("unexpected argument '{operand}' found")))
        }
        _ => Ok(()),
    }
}

fn main() {
    // Like other command line tools, end quietly when stdout is a closed pipe (`cm-client ps | head -1`).
    // SAFETY: restoring the default SIGPIPE action before anything else runs.
    unsafe { nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_DFL) };
    let cli = Cli::parse();
    refuse_flag_for_operand(&cli.command).unwrap_or_else(|e| e.exit());
    // One thread is plenty for a client, and starts faster than a multi-threaded runtime (no workers, no
    // CPU count from /proc/self/mountinfo and the cgroup files): exec's latency budget is a few ms. Blocking
    // work (reading stdin) runs on threads of its own.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(dispatch(cli)),
        Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    std::process::exit(error::exit_code(result));
}

/// Connects and runs the command; returns its exit code.
async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let address: Address = cli.host.parse().map_err(|e| anyhow::anyhow!("--host: {e}"))?;
    let mut client = connect::connect(&address, &cli.host, &cli.tls).await?;
    match cli.command {
        Command::Run(args) => run::run(&mut client, args).await,
        Command::Create(args) => create::create(&mut client, args).await,
        Command::Start(args) => start::start(&mut client, args).await,
        Command::Attach(args) => attach::attach(&mut client, args).await,
        Command::Exec(args) => exec::exec(&mut client, args).await,
        Command::Ps(args) => ps::ps(&mut client, args).await,
        Command::Inspect(args) => inspect::inspect(&mut client, args).await,
        Command::Stop(args) => Ok(stop::stop(&client, args).await),
        Command::Kill(args) => Ok(kill::kill(&client, args).await),
        Command::Rm(args) => Ok(rm::rm(&client, args).await),
        Command::Wait(args) => Ok(wait::wait(&client, args).await),
        Command::Logs(args) => logs::logs(&mut client, args).await,
        Command::Stats(args) => stats::stats(&mut client, args).await,
        Command::Events(args) => events::events(&mut client, args).await,
        Command::Port(args) => port::port(&mut client, args).await,
        Command::Pull(args) | Command::Image(ImageCommand::Pull(args)) => pull::pull(&mut client, args).await,
        Command::Images(args) | Command::Image(ImageCommand::Ls(args)) => images::images(&mut client, args).await,
        Command::Rmi(args) | Command::Image(ImageCommand::Rm(args)) => rmi::rmi(&mut client, args).await,
        Command::Image(ImageCommand::Inspect(args)) => image_inspect::inspect_image(&mut client, args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    fn refused(args: &[&str]) -> ErrorKind {
        let cli = Cli::try_parse_from(["cm-client"].iter().chain(args)).unwrap();
        refuse_flag_for_operand(&cli.command).unwrap_err().kind()
    }

    #[test]
    fn the_command_tree_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn an_unknown_flag_before_the_image_is_refused() {
        assert_eq!(refused(&["run", "--bogus", "alpine"]), ErrorKind::UnknownArgument);
        assert_eq!(refused(&["create", "--bogus", "alpine"]), ErrorKind::UnknownArgument);
    }

    #[test]
    fn an_unknown_flag_before_the_container_is_refused() {
        assert_eq!(refused(&["exec", "--bogus", "c", "ls"]), ErrorKind::UnknownArgument);
    }

    #[test]
    fn flags_after_the_operand_are_the_commands() {
        let cli = Cli::try_parse_from(["cm-client", "exec", "c", "ls", "--bogus"]).unwrap();
        assert!(refuse_flag_for_operand(&cli.command).is_ok());
    }
}
