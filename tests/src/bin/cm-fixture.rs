//! Fixtures for shell scripts (demo, benchmarks): run a loopback registry, push test images to it.
//!
//! ```text
//! cm-fixture registry --dir /tmp/reg --port 5000 &
//! cm-fixture wait-registry --registry 127.0.0.1:5000
//! cm-fixture push --registry 127.0.0.1:5000 --image bench --mb 60 --layers 4 --name bench:latest
//! ```

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use cm_e2e::registry::{registry_command, wait_until_ready, write_config};
use cm_e2e::{
    bench_image, busybox_image, hostile_image, multiarch_index, multilayer_docker_image, multilayer_image, push_image,
    push_index,
};

#[derive(Parser)]
#[command(about = "Test fixtures for cm: a loopback registry and offline-built images")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run docker-registry in the foreground on 127.0.0.1:PORT, storing into DIR (config written to
    /// DIR/config.yml). The process becomes the registry: kill it to stop it.
    Registry {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        port: u16,
    },
    /// Build an image and push it; prints the manifest (or index) digest.
    Push {
        /// Registry address, 127.0.0.1:PORT.
        #[arg(long)]
        registry: String,
        #[arg(long, value_enum)]
        image: ImageKind,
        /// Repository and tag, REPO[:TAG] (tag defaults to latest).
        #[arg(long)]
        name: String,
        /// bench: total compressed size in MiB.
        #[arg(long, default_value_t = 60)]
        mb: usize,
        /// bench: number of data layers (on top of busybox).
        #[arg(long, default_value_t = 4)]
        layers: usize,
    },
    /// Wait until the registry answers GET /v2/.
    WaitRegistry {
        #[arg(long)]
        registry: String,
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ImageKind {
    Busybox,
    Multilayer,
    MultilayerDocker,
    Multiarch,
    Hostile,
    Bench,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Registry { dir, port } => run_registry(dir, port),
        Cmd::Push { registry, image, name, mb, layers } => {
            let (repo, tag) = split_name(&name);
            let digest = match image {
                ImageKind::Busybox => push_image(&registry, repo, tag, &busybox_image()),
                ImageKind::Multilayer => push_image(&registry, repo, tag, &multilayer_image()),
                ImageKind::MultilayerDocker => push_image(&registry, repo, tag, &multilayer_docker_image()),
                ImageKind::Multiarch => push_index(&registry, repo, tag, &multiarch_index()),
                ImageKind::Hostile => push_image(&registry, repo, tag, &hostile_image().image),
                ImageKind::Bench => push_image(&registry, repo, tag, &bench_image(mb, layers)),
            }
            .with_context(|| format!("pushing {name} to {registry}"))?;
            println!("{digest}");
            Ok(())
        }
        Cmd::WaitRegistry { registry, timeout_secs } => wait_until_ready(&registry, Duration::from_secs(timeout_secs)),
    }
}

/// Replaces this process with `docker-registry serve DIR/config.yml`.
fn run_registry(dir: PathBuf, port: u16) -> Result<()> {
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = write_config(&dir, &format!("127.0.0.1:{port}"))?;
    let error = registry_command(&config).exec();
    bail!("running docker-registry (install Debian's docker-registry package): {error}")
}

/// `REPO[:TAG]` into repository and tag; a colon before the last `/` belongs to the repository.
fn split_name(name: &str) -> (&str, &str) {
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (name, "latest"),
    }
}
