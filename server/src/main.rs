//! cm-server: the cm daemon. Runs as root, keeps its state under --root, serves cm.v1.ContainerService,
//! gRPC health and reflection on every --listen address.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use cm_api::Address;
use cm_api::cri::image_service_server::ImageServiceServer;
use cm_api::cri::runtime_service_server::RuntimeServiceServer;
use cm_api::v1::container_service_server::ContainerServiceServer;
use cm_server::{
    BRIDGE, BridgeNetwork, Cni, CniOptions, ContainerApi, Containers, CriImages, CriRuntime, Events, ImageStore,
    Ipv4Net, Limits, Listener, LogLimits, NetworkOptions, Networks, PodNetwork, Pods, RegistryMirror, RegistryOptions,
    RuntimeOptions, StreamServer, TlsFiles, bind, check_address, parse_cpus, parse_memory, unix_incoming,
};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Server, ServerTlsConfig};
use tower::limit::GlobalConcurrencyLimitLayer;

/// The cm container manager daemon.
#[derive(Parser, Debug)]
#[command(name = "cm-server", version, about)]
struct Args {
    /// Address to serve on: unix:/path, unix:///path or tcp://HOST:PORT (repeatable). TCP needs --tls-cert,
    /// --tls-key and --tls-ca: every TCP client must present a certificate signed by that CA.
    #[arg(long = "listen", value_name = "ADDR", default_value = cm_api::DEFAULT_ADDRESS)]
    listen: Vec<Address>,
    /// PEM certificate (chain) the server presents on TCP listeners.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): TCP clients must present a certificate signed by one of them.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Largest gRPC message a client may send, e.g. 4m (at least 2m: a stdin frame carries up to 1 MiB).
    #[arg(long, value_name = "SIZE", default_value = "4m", value_parser = parse_request_size)]
    max_request_size: u64,
    /// Concurrent HTTP/2 streams (calls) a client connection may open; more wait for one to end.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_streams_per_connection: u32,
    /// Requests being started at once on one connection before further ones are refused (UNAVAILABLE).
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_pending_per_connection: u32,
    /// Requests being started at once over all connections before further ones are refused (UNAVAILABLE).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_pending_requests: u32,
    /// Group allowed to use the unix sockets (they are root:GROUP, mode 0660).
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// Directory for all persistent state (images, containers).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/cm")]
    root: PathBuf,
    /// Registry (HOST or HOST:PORT) to reach over plain HTTP (repeatable). Loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
    /// Send pulls of HOST/... to the registry at URL instead, e.g. registry.k8s.io=http://127.0.0.1:5000
    /// (repeatable). HOST itself is then never contacted: if the mirror fails, the pull fails.
    #[arg(long = "registry-mirror", value_name = "HOST=URL")]
    registry_mirror: Vec<RegistryMirror>,
    /// Directory of the pods' CNI network configs (the first .conf, .conflist or .json by name is used).
    #[arg(long, value_name = "DIR", default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// Directory of CNI plugins (repeatable; searched in order). Default: /opt/cni/bin.
    #[arg(long = "cni-bin-dir", value_name = "DIR")]
    cni_bin_dir: Vec<PathBuf>,
    /// Memory limit for containers that set none, e.g. 256m (docker syntax).
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    default_memory: Option<u64>,
    /// CPU limit for containers that set none, e.g. 0.5.
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    default_cpus: Option<u64>,
    /// Process limit for containers that set none.
    #[arg(long, value_name = "N")]
    default_pids_limit: Option<u64>,
    /// Name of cm's cgroup directory (in every hierarchy).
    #[arg(long, value_name = "NAME", default_value = "cm")]
    cgroup_parent: String,
    /// Bridge for containers' default network, created if missing; "none" runs without one (containers then
    /// need --network none or host).
    #[arg(long, value_name = "NAME", default_value = "cm0")]
    bridge: String,
    /// Subnet of the bridge, e.g. 10.88.0.0/16. Default: the one used before, else the first private subnet
    /// that no address or route of the host overlaps.
    #[arg(long, value_name = "CIDR")]
    subnet: Option<Ipv4Net>,
    /// Name of cm's nftables table (family ip) holding its NAT and published-port rules.
    #[arg(long, value_name = "NAME", default_value = "cm")]
    nft_table: String,
    /// Rotate a container's output log before it grows past this size, e.g. 10m (docker syntax); 0 = never.
    #[arg(long, value_name = "SIZE", default_value = "10m", value_parser = parse_memory)]
    log_max_size: u64,
    /// Log files kept per container when rotating, the current one included.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    log_max_files: u32,
    /// The user whose subordinate ids in /etc/subuid and /etc/subgid `--userns auto` containers take their
    /// host ids from (65536 each, a range no other container has).
    #[arg(long, value_name = "USER", default_value = "cm")]
    subid_user: String,
    /// Also serve Kubernetes CRI v1 (RuntimeService and ImageService) on this address (unix:/path), e.g.
    /// unix:/run/cm/cri.sock. Off unless given.
    #[arg(long = "cri-listen", value_name = "ADDR")]
    cri_listen: Option<Address>,
    /// Where the CRI streaming server (the URLs of Exec, Attach and PortForward) listens, with --cri-listen:
    /// HOST:PORT over plain HTTP, so keep it on loopback (the kubelet runs on this host). Port 0: any free one.
    #[arg(long = "cri-stream-listen", value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
    cri_stream_listen: std::net::SocketAddr,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive such as cm_server=debug.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: String,
}

fn main() {
    let args = Args::parse();
    // Before any thread exists, so that setting the environment is sound.
    let bundle = provide_ca_bundle(&args.root);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
    let runtime = runtime.unwrap_or_else(|e| {
        eprintln!("cm-server: cannot start the async runtime: {e}");
        std::process::exit(1)
    });
    runtime.block_on(async_main(args, bundle));
}

/// On a machine without CA certificates, writes cm's bundled roots to `<root>/tls/ca-bundle.pem` and sets
/// SSL_CERT_FILE to it: the default HTTP client that oci-client builds inside every registry client panics
/// without one. What happened, to be logged once logging is up.
fn provide_ca_bundle(root: &Path) -> Result<Option<PathBuf>, String> {
    let roots = cm_server::registry_trust_roots();
    if roots.system > 0 {
        return Ok(None);
    }
    let path = root.join("tls").join("ca-bundle.pem");
    std::fs::create_dir_all(root.join("tls"))
        .and_then(|()| std::fs::write(&path, cm_server::trust_roots_pem(roots)))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    // SAFETY: called from main before the runtime or any other thread is started.
    unsafe { std::env::set_var("SSL_CERT_FILE", &path) };
    Ok(Some(path))
}

async fn async_main(args: Args, bundle: Result<Option<PathBuf>, String>) {
    // One crypto provider for the whole process (TLS listeners); other dependencies may enable a second one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level).unwrap_or_else(|e| {
        eprintln!("cm-server: bad --log-level {:?}: {e}", args.log_level);
        std::process::exit(2)
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match bundle {
        Ok(Some(path)) => tracing::info!(path = %path.display(), "SSL_CERT_FILE points at cm's bundled roots"),
        Ok(None) => {}
        Err(e) => tracing::error!("{e}: pulls fail until the machine has CA certificates"),
    }
    if let Err(e) = serve(args).await {
        eprintln!("cm-server: {e:#}");
        std::process::exit(1);
    }
}

fn parse_request_size(s: &str) -> Result<u64, String> {
    let size = parse_memory(s)?;
    if size < 2 << 20 {
        return Err(format!("{s} is too small: at least 2m (a stdin frame carries up to 1 MiB)"));
    }
    Ok(size.min(u64::from(u32::MAX)))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    // Addresses first: a server that cannot take them changes nothing (no bridge, no rules, no state).
    let tls = TlsFiles::from_flags(args.tls_cert.clone(), args.tls_key.clone(), args.tls_ca.clone())?;
    for address in &args.listen {
        check_address(address, tls.is_some())?;
    }
    let tls = tls.map(|files| files.server_config()).transpose()?;
    let mut listeners = Vec::new();
    for address in &args.listen {
        listeners.push((address.clone(), bind(address, args.group.as_deref(), tls.is_some()).await?));
    }
    let cri_listener = match &args.cri_listen {
        Some(address) => {
            if let Some(dir) = address.to_string().strip_prefix("unix:").map(|p| p.trim_start_matches("//"))
                && let Some(parent) = std::path::Path::new(dir).parent()
            {
                let _ = std::fs::create_dir_all(parent);
            }
            Some((address.clone(), bind(address, None, false).await?))
        }
        None => None,
    };
    let sockets: Vec<PathBuf> = listeners
        .iter()
        .chain(cri_listener.iter())
        .filter_map(|(_, l)| if let Listener::Unix(_, path) = l { Some(path.clone()) } else { None })
        .collect();
    let result = serve_on(args, listeners, tls, cri_listener).await;
    for path in sockets {
        let _ = std::fs::remove_file(path);
    }
    result
}

async fn serve_on(
    args: Args,
    listeners: Vec<(Address, Listener)>,
    tls: Option<ServerTlsConfig>,
    cri_listener: Option<(Address, Listener)>,
) -> anyhow::Result<()> {
    let registry = RegistryOptions { insecure: args.insecure_registry.clone(), mirrors: args.registry_mirror.clone() };
    // Loaded now rather than at the first pull, so that what the trust store lacks is said at start.
    let roots = cm_server::registry_trust_roots();
    if roots.system == 0 {
        tracing::warn!(
            bundled = roots.bundled,
            problems = ?roots.problems,
            "no CA certificates on this machine (SSL_CERT_FILE, SSL_CERT_DIR, /etc/ssl): TLS registries are \
             verified against cm's bundled Mozilla roots only"
        );
    } else {
        tracing::info!(system = roots.system, bundled = roots.bundled, "registry TLS roots loaded");
    }
    registry.validate().map_err(|e| anyhow::anyhow!("bad --registry-mirror: {e}"))?;
    let images_root = args.root.join("images");
    let images = tokio::task::spawn_blocking(move || ImageStore::open(&images_root))
        .await?
        .with_context(|| format!("cannot open the image store under {}", args.root.display()))?;
    let images = Arc::new(images);
    let default_limits =
        Limits { memory_bytes: args.default_memory, cpu_millis: args.default_cpus, pids: args.default_pids_limit };
    default_limits.validate().map_err(|e| anyhow::anyhow!("bad default limits: {e}"))?;
    let mut networks = Networks::default();
    match args.bridge.as_str() {
        "none" => {
            networks.disable(BRIDGE, "this cm-server runs without a bridge (--bridge none); use --network none or host")
        }
        _ => {
            let options =
                NetworkOptions { bridge: args.bridge.clone(), subnet: args.subnet, nft_table: args.nft_table.clone() };
            let bridge = BridgeNetwork::open(&args.root, options)
                .await
                .with_context(|| format!("cannot set up the bridge network on {}", args.bridge))?;
            networks.add(Arc::new(bridge));
        }
    }
    let log_limits = LogLimits { max_size: args.log_max_size, max_files: args.log_max_files };
    let cni = CniOptions::new(&args.root, Some(args.cni_conf_dir.clone()), args.cni_bin_dir.clone());
    let options = RuntimeOptions {
        default_limits,
        cgroup_parent: args.cgroup_parent.clone(),
        networks,
        log_limits,
        subid_user: args.subid_user.clone(),
        cni: cni.clone(),
    };
    let events = Arc::new(Events::default());
    let containers = Containers::open(&args.root, images.clone(), options, events)
        .await
        .with_context(|| format!("cannot load the containers under {}", args.root.display()))?;
    // Containers hold their images' snapshots now; collect what a killed pull left behind.
    let reclaimed = images.gc()?;
    if reclaimed > 0 {
        tracing::info!(reclaimed, "removed content left by an interrupted pull");
    }
    // The CRI: pods over the same containers and images.
    let mut streaming = None;
    let cri = match cri_listener {
        Some(listener) => {
            // CNI: without a config in --cni-conf-dir pods get loopback only and Status says why.
            let network: Arc<dyn PodNetwork> = Arc::new(Cni::new(cni));
            let pods = Pods::open(&args.root, containers.clone(), network)
                .await
                .with_context(|| format!("cannot load the pods under {}", args.root.display()))?;
            let (stream, stream_listener) = StreamServer::bind(args.cri_stream_listen, containers.clone())
                .await
                .with_context(|| format!("cannot listen on --cri-stream-listen {}", args.cri_stream_listen))?;
            if !stream.address().ip().is_loopback() {
                tracing::warn!(address = %stream.address(), "the CRI streaming server is not on loopback");
            }
            tracing::info!(address = %stream.address(), "CRI streaming server listening");
            streaming = Some(tokio::spawn(stream.clone().serve(stream_listener)));
            let runtime = RuntimeServiceServer::new(CriRuntime::new(pods, stream));
            let images = ImageServiceServer::new(CriImages::new(images.clone(), registry.clone(), containers.clone()));
            Some((listener, runtime, images))
        }
        None => None,
    };
    let api = ContainerApi::new(images, registry, containers);
    let max_request = args.max_request_size as usize;
    let api = ContainerServiceServer::new(api).max_decoding_message_size(max_request);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ContainerServiceServer<ContainerApi>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cm_api::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cm_api::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    // Request limits, the same on every listener: HTTP/2 streams per connection, requests being started per
    // connection and over all of them (refused with UNAVAILABLE beyond, not queued), message size (above).
    let pending = Arc::new(tokio::sync::Semaphore::new(args.max_pending_requests as usize));
    let builder = || {
        Server::builder()
            .max_concurrent_streams(args.max_streams_per_connection)
            .concurrency_limit_per_connection(args.max_pending_per_connection as usize)
            .load_shed(true)
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_to_status))
            .layer(GlobalConcurrencyLimitLayer::with_semaphore(pending.clone()))
    };
    let routes = |mut builder: Server<_>| {
        builder
            .add_service(health_service.clone())
            .add_service(reflection_v1.clone())
            .add_service(reflection_v1alpha.clone())
            .add_service(api.clone())
    };
    let router = routes(builder());
    let tls_router = match tls {
        Some(config) => Some(routes(builder().tls_config(config).context("TLS configuration")?)),
        None => None,
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for (address, listener) in listeners {
        let router = router.clone();
        let mut stop = shutdown_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match listener {
            Listener::Unix(l, _) => {
                servers.spawn(router.serve_with_incoming_shutdown(unix_incoming(l), shutdown));
            }
            Listener::Tcp(l) => {
                // bind() refuses TCP without TLS.
                let Some(router) = tls_router.clone() else { anyhow::bail!("{address} has no TLS configuration") };
                servers.spawn(router.serve_with_incoming_shutdown(TcpListenerStream::new(l), shutdown));
            }
        }
        tracing::info!(%address, "listening");
    }
    if let Some(((address, listener), runtime, images)) = cri {
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cm_api::cri::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let router = Server::builder()
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_to_status))
            .add_service(reflection)
            .add_service(runtime)
            .add_service(images);
        let mut stop = shutdown_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match listener {
            Listener::Unix(l, _) => {
                servers.spawn(router.serve_with_incoming_shutdown(unix_incoming(l), shutdown));
            }
            Listener::Tcp(l) => {
                servers.spawn(router.serve_with_incoming_shutdown(TcpListenerStream::new(l), shutdown));
            }
        }
        tracing::info!(%address, "CRI listening");
    }
    tracing::info!(root = %args.root.display(), "cm-server ready");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        Some(result) = servers.join_next() => {
            result?.context("server stopped")?;
        }
    }
    let _ = shutdown_tx.send(true);
    if let Some(streaming) = streaming {
        streaming.abort();
    }
    // Streams in flight (a pull) get a moment to end; then we go.
    let drain = async {
        while let Some(result) = servers.join_next().await {
            if let Ok(Err(e)) = result {
                tracing::warn!(error = %e, "server error during shutdown");
            }
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(5), drain).await.is_err() {
        tracing::warn!("streams still open after 5 s; exiting anyway");
    }
    Ok(())
}

/// A request handler that panicked answers INTERNAL with the panic's message (logged too), rather than
/// dropping the client's connection with every other call on it.
fn panic_to_status(panic: Box<dyn std::any::Any + Send + 'static>) -> http::Response<tonic::body::Body> {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(%message, "a request handler panicked");
    tonic::Status::internal(format!("cm-server failed on this request (a bug, please report it): {message}"))
        .into_http()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_panic_is_an_internal_status_with_its_message() {
        let response = super::panic_to_status(Box::new(String::from("index out of bounds")));
        let status = tonic::Status::from_header_map(response.headers()).expect("a grpc-status header");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().contains("index out of bounds"), "{}", status.message());
        let status = tonic::Status::from_header_map(super::panic_to_status(Box::new("static")).headers()).unwrap();
        assert!(status.message().contains("static"));
    }
}
