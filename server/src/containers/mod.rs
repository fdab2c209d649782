//! Containers: their records, names and lifecycle. A container is a directory under `<root>/containers/<id>`
//! holding `container.json` (its config and state, written atomically), its overlay upper/work dirs, the
//! files bind-mounted over /etc, the bundle for its monitor and the monitor's socket, log and exit status.

mod etc;
mod record;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::cgroups::{Cgroup, CgroupFs, HostFs, Layout, Limits};
use crate::clock::now_nanos;
use crate::events::{Event, Events};
use crate::image::ImageStore;
use crate::network::{Endpoint, NetError, NetworkDriver, Networks, PortConfig};
use crate::runtime::bundle::{self, Bundle, ExitInfo, LogLimits, Process, Rootfs};
use crate::runtime::client::{self, Connection};
use crate::runtime::protocol::{FromMonitor, ToMonitor};
pub use record::{
    Config, ContainerStatus, ExitRecord, MountConfig, Network, Record, State, new_id, parse_signal, signal_name,
};
pub use stats::{InterfaceCounters, Sample};

/// Errors of the container domain, each with its gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Internal(String),
}

impl ContainerError {
    pub fn code(&self) -> tonic::Code {
        match self {
            ContainerError::NotFound(_) => tonic::Code::NotFound,
            ContainerError::AlreadyExists(_) => tonic::Code::AlreadyExists,
            ContainerError::InvalidArgument(_) => tonic::Code::InvalidArgument,
            ContainerError::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            ContainerError::Internal(_) => tonic::Code::Internal,
        }
    }
}

fn internal(what: &str) -> impl Fn(std::io::Error) -> ContainerError + '_ {
    move |e| ContainerError::Internal(format!("{what}: {e}"))
}

/// What the user asks for when creating a container (the API's ContainerSpec as domain data).
#[derive(Debug, Clone, Default)]
pub struct CreateSpec {
    pub image: String,
    pub name: String,
    pub entrypoint: Option<Vec<String>>,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub hostname: String,
    pub tty: bool,
    pub stdin: bool,
    pub limits: Limits,
    pub network: Network,
    pub ports: Vec<PortConfig>,
    pub mounts: Vec<MountConfig>,
    pub auto_remove: bool,
    pub labels: Vec<(String, String)>,
    pub stop_signal: String,
}

/// One container, shared by the calls that use it.
pub struct Container {
    pub id: String,
    dir: PathBuf,
    record: Mutex<Record>,
    /// Some(exit) once the main process has exited (for Wait).
    exited: watch::Sender<Option<ExitRecord>>,
    /// Serializes start, stop and remove.
    lifecycle: tokio::sync::Mutex<()>,
    /// Keeps the image's snapshots from garbage collection while the container exists.
    _lease: crate::image::store::Lease,
}

impl Container {
    pub fn record(&self) -> Record {
        self.record.lock().unwrap().clone()
    }

    fn update(&self, change: impl FnOnce(&mut Record)) -> Result<(), ContainerError> {
        let mut record = self.record.lock().unwrap();
        change(&mut record);
        crate::store::write_json(&self.dir.join(record::RECORD_FILE), &*record)
            .map_err(internal("saving container state"))
    }

    /// The name if it has one, else the short id: how messages name a container.
    pub fn shown(&self) -> String {
        let r = self.record.lock().unwrap();
        if r.config.name.is_empty() { self.id[..12].to_string() } else { r.config.name.clone() }
    }
}

/// Server-wide settings of the container runtime.
pub struct RuntimeOptions {
    /// Limits applied when a container asks for none.
    pub default_limits: Limits,
    /// Name of cm's cgroup directory in every hierarchy.
    pub cgroup_parent: String,
    /// The networks containers can be on (bridge, none, host).
    pub networks: Networks,
    /// Rotation of the containers' output logs.
    pub log_limits: LogLimits,
}

impl From<NetError> for ContainerError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Invalid(m) => ContainerError::InvalidArgument(m),
            NetError::Unavailable(m) => ContainerError::FailedPrecondition(m),
            NetError::System(e) => ContainerError::Internal(format!("network setup failed: {e:#}")),
        }
    }
}

/// All containers of this server.
pub struct Containers {
    dir: PathBuf,
    images: Arc<ImageStore>,
    layout: Layout,
    /// The cgroup filesystem containers' cgroups are made in (the host's; a fake one in unit tests).
    cgroup_fs: Arc<dyn CgroupFs>,
    options: RuntimeOptions,
    monitor: PathBuf,
    table: Mutex<HashMap<String, Arc<Container>>>,
    events: Arc<Events>,
}

/// The exit status the monitor recorded in the container's directory, or, when it recorded none, code 255
/// with `reason`.
fn recorded_exit(dir: &Path, reason: &str) -> ExitInfo {
    let recorded = crate::store::read_json::<ExitInfo>(&dir.join(bundle::EXIT_FILE)).ok().flatten();
    recorded.unwrap_or_else(|| ExitInfo {
        code: 255,
        error: reason.into(),
        finished_unix_nanos: now_nanos(),
        ..Default::default()
    })
}

/// Kills what is left in a cgroup and removes it, off the async threads (both may wait a little).
async fn remove_cgroup(cgroup: Cgroup) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        let _ = cgroup.kill_all();
        cgroup.destroy()
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Default grace period of Stop.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl Containers {
    /// Loads the containers under `root/containers`, re-adopting those whose monitor still runs.
    pub async fn open(
        root: &Path,
        images: Arc<ImageStore>,
        options: RuntimeOptions,
        events: Arc<Events>,
    ) -> anyhow::Result<Arc<Containers>> {
        let cgroups = (Layout::detect()?, Arc::new(HostFs) as Arc<dyn CgroupFs>);
        Self::open_with(root, images, options, events, cgroups, client::monitor_binary()?).await
    }

    /// [`Containers::open`] with the cgroup layout and filesystem and the monitor binary given.
    pub(crate) async fn open_with(
        root: &Path,
        images: Arc<ImageStore>,
        options: RuntimeOptions,
        events: Arc<Events>,
        (layout, cgroup_fs): (Layout, Arc<dyn CgroupFs>),
        monitor: PathBuf,
    ) -> anyhow::Result<Arc<Containers>> {
        let dir = root.join("containers");
        std::fs::create_dir_all(&dir)?;
        let containers = Arc::new(Containers {
            dir: dir.clone(),
            images,
            layout,
            cgroup_fs,
            options,
            monitor,
            table: Mutex::new(HashMap::new()),
            events,
        });
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let Ok(Some(record)) = crate::store::read_json::<Record>(&path.join(record::RECORD_FILE)) else {
                tracing::warn!(dir = %path.display(), "skipping a container directory without a readable record");
                continue;
            };
            if let (Ok(network), Some(address)) = (containers.network_of(&record), record.config.address)
                && let Err(e) = network.claim(&record.config.id, address)
            {
                tracing::warn!(container = %record.config.id, error = %e, "its address is taken; it gets a new one at start");
            }
            let container = containers.insert(record, path);
            containers.readopt(container).await;
        }
        for network in containers.options.networks.all() {
            let running: HashSet<String> = containers
                .list()
                .iter()
                .map(|c| c.record())
                .filter(|r| r.state.status == ContainerStatus::Running && r.config.network.name() == network.name())
                .map(|r| r.config.id)
                .collect();
            network.reconcile(&running).await?;
        }
        Ok(containers)
    }

    /// The driver of the network a container is on.
    fn network_of(&self, record: &Record) -> Result<&Arc<dyn NetworkDriver>, NetError> {
        self.options.networks.get(record.config.network.name())
    }

    /// A container's cgroup as it is (it may not exist).
    fn cgroup(&self, id: &str) -> Cgroup {
        Cgroup::open_with(self.cgroup_fs.clone(), &self.layout, &self.options.cgroup_parent, id)
    }

    fn insert(&self, record: Record, dir: PathBuf) -> Arc<Container> {
        let container = self.container(record, dir);
        self.table.lock().unwrap().insert(container.id.clone(), container.clone());
        container
    }

    /// A container object for a record; it holds its image's snapshots from now on.
    fn container(&self, record: Record, dir: PathBuf) -> Arc<Container> {
        let chain_ids = record.config.chain_ids.clone();
        let exited = record.state.exit.clone().filter(|_| record.state.status == ContainerStatus::Stopped);
        Arc::new(Container {
            id: record.config.id.clone(),
            dir,
            record: Mutex::new(record),
            exited: watch::channel(exited).0,
            lifecycle: tokio::sync::Mutex::new(()),
            _lease: self.images.lease(chain_ids),
        })
    }

    /// After a server restart: watch a running container again, or record that it ended while we were away.
    async fn readopt(self: &Arc<Self>, c: Arc<Container>) {
        if c.record().state.status != ContainerStatus::Running {
            // A monitor answering for a container not recorded as running was spawned by a server that died
            // before it recorded the start: its init still waits for the go-ahead. End both.
            if let Ok(mut conn) = client::connect(&c.dir).await {
                tracing::warn!(container = %c.id, "ending a start that a server left unfinished when it died");
                let _ = conn.writer.send(ToMonitor::Signal(nix::libc::SIGKILL)).await;
                let drained = async { while let Ok(Some(_)) = conn.reader.next().await {} };
                let _ = tokio::time::timeout(Duration::from_secs(5), drained).await;
                let _ = remove_cgroup(self.cgroup(&c.id)).await;
            }
            return;
        }
        match client::connect(&c.dir).await {
            Ok(conn) => {
                tracing::info!(container = %c.id, "re-adopted running container");
                let record = c.record();
                if let Ok(network) = self.network_of(&record) {
                    let endpoint = Endpoint {
                        id: &c.id,
                        pid: record.state.pid,
                        address: record.config.address,
                        ports: &record.state.ports,
                    };
                    network.readopt(endpoint).await;
                }
                self.watch_exit(c, conn);
            }
            Err(_) => {
                let exit = recorded_exit(&c.dir, "the container's monitor ended without recording an exit status");
                self.exited(&c, exit).await;
            }
        }
    }

    /// Finds a container by id, unique id prefix, or name.
    pub fn get(&self, name: &str) -> Result<Arc<Container>, ContainerError> {
        let table = self.table.lock().unwrap();
        if name.is_empty() {
            return Err(ContainerError::InvalidArgument("a container id or name is required".into()));
        }
        if let Some(c) = table.get(name) {
            return Ok(c.clone());
        }
        if let Some(c) = table.values().find(|c| c.record.lock().unwrap().config.name == name) {
            return Ok(c.clone());
        }
        let matches: Vec<&Arc<Container>> = table.values().filter(|c| c.id.starts_with(name)).collect();
        match matches.len() {
            1 => Ok(matches[0].clone()),
            0 => Err(ContainerError::NotFound(format!("no such container: {name}"))),
            n => Err(ContainerError::InvalidArgument(format!("{name:?} matches {n} containers; give more of the id"))),
        }
    }

    pub fn list(&self) -> Vec<Arc<Container>> {
        let mut all: Vec<Arc<Container>> = self.table.lock().unwrap().values().cloned().collect();
        all.sort_by_key(|c| std::cmp::Reverse(c.record.lock().unwrap().config.created_unix_nanos));
        all
    }

    /// Whether any container was created from `image_id`.
    pub fn uses_image(&self, image_id: &str) -> bool {
        self.table.lock().unwrap().values().any(|c| c.record.lock().unwrap().config.image_id == image_id)
    }

    /// Creates a container (not started).
    pub fn create(&self, spec: CreateSpec) -> Result<Arc<Container>, ContainerError> {
        if !spec.name.is_empty() {
            record::validate_name(&spec.name).map_err(ContainerError::InvalidArgument)?;
        }
        let limits = Limits {
            memory_bytes: spec.limits.memory_bytes.or(self.options.default_limits.memory_bytes),
            cpu_millis: spec.limits.cpu_millis.or(self.options.default_limits.cpu_millis),
            pids: spec.limits.pids.or(self.options.default_limits.pids),
        };
        limits.validate().map_err(ContainerError::InvalidArgument)?;
        let image = self.images.resolve(&spec.image).map_err(|e| match e {
            crate::image::ImageError::NotFound(_) => {
                ContainerError::NotFound(format!("image {:?} is not in the store; pull it first", spec.image))
            }
            other => ContainerError::InvalidArgument(other.to_string()),
        })?;
        let image_config = self
            .images
            .read_blob(&image.id)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<crate::image::manifest::ImageConfig>(&b).ok())
            .and_then(|c| c.config)
            .unwrap_or_default();
        let args = record::command_line(&spec, &image_config);
        if args.is_empty() {
            return Err(ContainerError::InvalidArgument(format!(
                "no command given and image {} has neither Entrypoint nor Cmd",
                spec.image
            )));
        }
        for m in &spec.mounts {
            m.validate().map_err(ContainerError::InvalidArgument)?;
        }
        let network = self.options.networks.get(spec.network.name());
        if !spec.ports.is_empty() && network.as_ref().is_ok_and(|n| !n.publishes_ports()) {
            return Err(ContainerError::InvalidArgument(
                "published ports need the bridge network (--network bridge)".into(),
            ));
        }
        PortConfig::check_unique(&spec.ports).map_err(ContainerError::InvalidArgument)?;
        let network = network?;
        let id = record::new_id().map_err(internal("making an id"))?;
        let config = Config {
            name: spec.name.clone(),
            image: spec.image.clone(),
            image_id: image.id.clone(),
            chain_ids: image.layers.iter().map(|l| l.chain_id.clone()).collect(),
            args,
            env: record::merge_env(image_config.env.as_deref().unwrap_or_default(), &spec.env),
            workdir: if spec.workdir.is_empty() {
                image_config.working_dir.clone().unwrap_or_default()
            } else {
                spec.workdir.clone()
            },
            user: if spec.user.is_empty() { image_config.user.clone().unwrap_or_default() } else { spec.user.clone() },
            hostname: if spec.hostname.is_empty() { id[..12].to_string() } else { spec.hostname.clone() },
            tty: spec.tty,
            stdin: spec.stdin,
            limits,
            network: spec.network,
            address: None,
            ports: spec.ports.clone(),
            mounts: spec.mounts.clone(),
            auto_remove: spec.auto_remove,
            labels: spec.labels.clone(),
            stop_signal: if spec.stop_signal.is_empty() {
                image_config.stop_signal.clone().unwrap_or_else(|| "SIGTERM".into())
            } else {
                spec.stop_signal.clone()
            },
            entrypoint: spec.entrypoint.clone(),
            command: spec.command.clone(),
            created_unix_nanos: now_nanos(),
            id,
        };
        record::parse_signal(&config.stop_signal).map_err(ContainerError::InvalidArgument)?;
        // The name check and the insertion happen under one lock: two creates cannot take the same name.
        let mut table = self.table.lock().unwrap();
        if !config.name.is_empty() && table.values().any(|c| c.record.lock().unwrap().config.name == config.name) {
            return Err(ContainerError::AlreadyExists(format!(
                "the name {:?} is already in use by another container; remove it or pick another name",
                config.name
            )));
        }
        let mut config = config;
        config.address = network.allocate(&config.id)?;
        let dir = self.dir.join(&config.id);
        let record = Record { config, state: State::default() };
        let saved = ["upper", "work", "merged"]
            .iter()
            .try_for_each(|sub| std::fs::create_dir_all(dir.join(sub)))
            .and_then(|()| crate::store::write_json(&dir.join(record::RECORD_FILE), &record));
        if let Err(e) = saved {
            network.release(&record.config.id);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(ContainerError::Internal(format!("saving the container: {e}")));
        }
        let container = self.container(record, dir);
        table.insert(container.id.clone(), container.clone());
        drop(table);
        tracing::info!(container = %container.id, "created");
        self.publish(&container, "create", |e| e);
        Ok(container)
    }

    /// Starts a created or stopped container. With `attach`, output is connected before the process starts
    /// and the connection is returned for the caller to stream.
    pub async fn start(
        self: &Arc<Self>,
        c: &Arc<Container>,
        attach: Option<(u16, u16)>,
    ) -> Result<Option<Connection>, ContainerError> {
        let result = self.start_locked(c, attach).await;
        // Like docker: a --rm container that could not start is not left behind.
        if let Err(e) = &result
            && c.record().config.auto_remove
            && c.record().state.status != ContainerStatus::Running
        {
            tracing::info!(container = %c.id, error = %e, "removing an auto-remove container that failed to start");
            let _ = self.remove(c, true).await;
        }
        result
    }

    async fn start_locked(
        self: &Arc<Self>,
        c: &Arc<Container>,
        attach: Option<(u16, u16)>,
    ) -> Result<Option<Connection>, ContainerError> {
        let _lifecycle = c.lifecycle.lock().await;
        let record = c.record();
        if record.state.status == ContainerStatus::Running {
            return Err(ContainerError::FailedPrecondition(format!("container {} is already running", c.shown())));
        }
        let network = self.network_of(&record)?.clone();
        // A container whose address was taken while the server was away (see open) gets a new one.
        let address = network.allocate(&c.id)?;
        if address != record.config.address {
            c.update(|r| r.config.address = address)?;
        }
        let record = c.record();
        let config = &record.config;
        let cgroup = Cgroup::create_with(
            self.cgroup_fs.clone(),
            &self.layout,
            &self.options.cgroup_parent,
            &c.id,
            &config.limits,
        )
        .map_err(|e| ContainerError::InvalidArgument(format!("cannot apply the container's limits: {e}")))?;
        let result = self.launch(c, config, &*network, &cgroup, attach).await;
        match result {
            Ok((pid, ports, session, watcher)) => {
                // Running is recorded before the exit watcher starts: a process that exits at once must not
                // have its exit overwritten.
                let _ = c.exited.send_replace(None);
                c.update(|r| {
                    r.state = State {
                        status: ContainerStatus::Running,
                        pid,
                        started_unix_nanos: now_nanos(),
                        exit: None,
                        ports: ports.clone(),
                    };
                })?;
                tracing::info!(container = %c.id, pid, "started");
                self.publish(c, "start", |e| e);
                self.watch_exit(c.clone(), watcher);
                Ok(session)
            }
            Err(e) => {
                let _ = remove_cgroup(cgroup).await;
                network.detach(&c.id).await;
                Err(e)
            }
        }
    }

    async fn launch(
        self: &Arc<Self>,
        c: &Arc<Container>,
        config: &Config,
        network: &dyn NetworkDriver,
        cgroup: &Cgroup,
        attach: Option<(u16, u16)>,
    ) -> Result<(i32, Vec<PortConfig>, Option<Connection>, Connection), ContainerError> {
        for stale in [bundle::EXIT_FILE, bundle::MONITOR_FILE] {
            let _ = std::fs::remove_file(c.dir.join(stale));
        }
        let etc_files = etc::write_files(&c.dir, config, network.shares_host_namespace())
            .map_err(internal("writing /etc files"))?;
        let mut lower: Vec<String> =
            config.chain_ids.iter().rev().map(|id| id.trim_start_matches("sha256:").to_string()).collect();
        if lower.is_empty() {
            std::fs::create_dir_all(c.dir.join("empty")).map_err(internal("creating an empty layer"))?;
            lower.push(c.dir.join("empty").display().to_string());
        }
        let bundle = Bundle {
            id: c.id.clone(),
            rootfs: Rootfs {
                snapshots_dir: self.images.snapshots_dir(),
                lower,
                upper: c.dir.join("upper"),
                work: c.dir.join("work"),
                merged: c.dir.join("merged"),
            },
            process: Process {
                args: config.args.clone(),
                env: config.env.clone(),
                cwd: config.workdir.clone(),
                user: config.user.clone(),
                tty: config.tty,
                stdin: config.stdin,
            },
            hostname: config.hostname.clone(),
            host_network: network.shares_host_namespace(),
            cgroup_join: cgroup.join_files(),
            cgroup_clone_into: cgroup.v2_dir(),
            // cgroup v2 refuses devices only through a BPF program, which cm does not load yet: there a
            // container gets no CAP_MKNOD, so it cannot make the nodes the v1 devices cgroup refuses.
            capabilities: match self.layout {
                Layout::V1 { .. } => bundle::DEFAULT_CAPABILITIES,
                Layout::V2 { .. } => bundle::DEFAULT_CAPABILITIES & !bundle::CAP_MKNOD,
            },
            cgroup_v2: matches!(self.layout, Layout::V2 { .. }),
            etc_files,
            mounts: config.mounts.iter().map(MountConfig::to_bundle).collect(),
            log: self.options.log_limits,
        };
        let bytes = serde_json::to_vec(&bundle).map_err(|e| ContainerError::Internal(e.to_string()))?;
        crate::store::write_replace(&c.dir.join(bundle::BUNDLE_FILE), &bytes)
            .map_err(internal("writing the bundle"))?;
        let init_pid =
            client::spawn_monitor(&self.monitor, &c.dir).await.map_err(|e| ContainerError::Internal(e.to_string()))?;
        // The init exists in its namespaces and waits for Start: connect it to its network now.
        let endpoint = Endpoint { id: &c.id, pid: init_pid, address: config.address, ports: &config.ports };
        let ports = network.attach(endpoint).await?.ports;
        // The watcher connects first so it sees the whole life of the process.
        let watcher = client::connect(&c.dir).await.map_err(internal("connecting to the monitor"))?;
        let mut session = client::connect(&c.dir).await.map_err(internal("connecting to the monitor"))?;
        // A terminal is never 0x0: without a size from the client it starts at 24x80.
        let (rows, cols) = match attach {
            Some((r, c)) if r > 0 && c > 0 => (r, c),
            _ => (24, 80),
        };
        if attach.is_some() {
            session.writer.send(ToMonitor::Attach).await.map_err(internal("attaching"))?;
        }
        session.writer.send(ToMonitor::Start { rows, cols }).await.map_err(internal("starting"))?;
        let pid = match session.reader.next().await.map_err(internal("starting"))? {
            Some(FromMonitor::Started { pid }) => pid,
            other => return Err(ContainerError::Internal(format!("the monitor answered {other:?} to start"))),
        };
        Ok((pid, ports, attach.map(|_| session), watcher))
    }

    /// Waits (in a task) for the container's exit frame, then records it.
    fn watch_exit(self: &Arc<Self>, c: Arc<Container>, mut conn: Connection) {
        let containers = self.clone();
        tokio::spawn(async move {
            let exit = loop {
                match conn.reader.next().await {
                    Ok(Some(FromMonitor::Exit(exit))) => break exit,
                    Ok(Some(_)) => continue,
                    end => {
                        tracing::warn!(container = %c.id, ?end, "lost the monitor connection before the exit status");
                        // The monitor went away without a frame; it may still have written the file.
                        break recorded_exit(&c.dir, "the container's monitor died");
                    }
                }
            };
            containers.exited(&c, exit).await;
        });
    }

    /// Records an exit: OOM from the cgroup, cgroup removed, waiters told, auto-remove done.
    async fn exited(self: &Arc<Self>, c: &Arc<Container>, exit: ExitInfo) {
        // Held until the network is taken down too, so a start cannot slip in between.
        let lifecycle = c.lifecycle.lock().await;
        let cgroup = self.cgroup(&c.id);
        let oom_killed = cgroup.oom_kills() > 0;
        if let Err(e) = remove_cgroup(cgroup).await {
            tracing::warn!(container = %c.id, error = %e, "cannot remove the cgroup");
        }
        let record = ExitRecord::from_info(&exit, oom_killed);
        tracing::info!(container = %c.id, code = record.code, oom_killed, "exited");
        let _ = c.update(|r| {
            r.state.status = ContainerStatus::Stopped;
            r.state.exit = Some(record.clone());
            r.state.ports.clear();
        });
        if oom_killed {
            self.publish(c, "oom", |e| e);
        }
        self.publish(c, "die", |e| e.with("exitCode", record.code.to_string()).with("signal", record.signal.clone()));
        let _ = c.exited.send_replace(Some(record));
        // After the exit is reported: deleting a veth waits for the kernel (an RCU grace period, ~10 ms).
        if let Ok(network) = self.network_of(&c.record()) {
            network.detach(&c.id).await;
        }
        drop(lifecycle);
        if c.record().config.auto_remove
            && let Err(e) = self.remove(c, true).await
        {
            tracing::warn!(container = %c.id, error = %e, "auto-remove failed");
        }
    }

    /// Waits for the container's main process to exit; returns at once if it has.
    pub async fn wait(&self, c: &Arc<Container>) -> Result<ExitRecord, ContainerError> {
        let mut rx = c.exited.subscribe();
        if c.record().state.status == ContainerStatus::Created {
            return Err(ContainerError::FailedPrecondition(format!("container {} was never started", c.shown())));
        }
        let result = rx.wait_for(|e| e.is_some()).await;
        match result {
            Ok(exit) => Ok(exit.clone().expect("waited for some")),
            Err(_) => Err(ContainerError::Internal("the container went away while waiting".into())),
        }
    }

    /// Connects to a running container's monitor.
    pub async fn connect(&self, c: &Arc<Container>) -> Result<Connection, ContainerError> {
        if c.record().state.status != ContainerStatus::Running {
            return Err(ContainerError::FailedPrecondition(format!("container {} is not running", c.shown())));
        }
        client::connect(&c.dir)
            .await
            .map_err(|e| ContainerError::FailedPrecondition(format!("container {} is not running ({e})", c.shown())))
    }

    /// Sends a signal to the main process.
    pub async fn kill(&self, c: &Arc<Container>, signal: &str) -> Result<(), ContainerError> {
        let sig = record::parse_signal(signal).map_err(ContainerError::InvalidArgument)?;
        let mut conn = self.connect(c).await?;
        conn.writer.send(ToMonitor::Signal(sig)).await.map_err(internal("sending the signal"))?;
        self.publish(c, "kill", |e| e.with("signal", signal_name(sig)));
        Ok(())
    }

    /// The stop signal, then after `timeout` SIGKILL; returns when the process has exited.
    pub async fn stop(&self, c: &Arc<Container>, timeout: Duration) -> Result<(), ContainerError> {
        if c.record().state.status != ContainerStatus::Running {
            return Ok(());
        }
        let signal = c.record().config.stop_signal;
        if !(self.kill(c, &signal).await.is_ok() && tokio::time::timeout(timeout, self.wait(c)).await.is_ok()) {
            let _ = self.kill(c, "SIGKILL").await;
            self.wait(c).await?;
        }
        self.publish(c, "stop", |e| e);
        Ok(())
    }

    /// Removes a container and everything it made. A running one needs `force` (it is killed first).
    pub async fn remove(&self, c: &Arc<Container>, force: bool) -> Result<(), ContainerError> {
        if c.record().state.status == ContainerStatus::Running {
            if !force {
                return Err(ContainerError::FailedPrecondition(format!(
                    "container {} is running: stop it first or remove it with force",
                    c.shown()
                )));
            }
            let _ = self.kill(c, "SIGKILL").await;
            let _ = tokio::time::timeout(Duration::from_secs(10), self.wait(c)).await;
        }
        let _lifecycle = c.lifecycle.lock().await;
        if self.table.lock().unwrap().remove(&c.id).is_none() {
            return Ok(()); // removed meanwhile (auto-remove)
        }
        let _ = remove_cgroup(self.cgroup(&c.id)).await;
        if let Ok(network) = self.network_of(&c.record()) {
            network.release(&c.id);
        }
        let dir = c.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir))
            .await
            .map_err(|e| ContainerError::Internal(e.to_string()))?
            .map_err(internal("removing the container directory"))?;
        tracing::info!(container = %c.id, "removed");
        self.publish(c, "destroy", |e| e);
        Ok(())
    }

    /// The directory holding a container's output log (`container.log` and its rotated files).
    pub fn log_dir(&self, c: &Container) -> PathBuf {
        c.dir.clone()
    }

    /// The event hub.
    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    /// Publishes a container event with the name and image attributes, plus those `more` adds.
    fn publish(&self, c: &Container, action: &'static str, more: impl FnOnce(Event) -> Event) {
        let config = c.record().config;
        let event = Event::new("container", action, &c.id).with("name", config.name).with("image", config.image);
        self.events.publish(more(event));
    }
}
