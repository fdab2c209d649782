//! Containers: their records, names and lifecycle. A container is a directory under `<root>/containers/<id>`
//! holding `container.json` (its config and state, written atomically), its overlay upper/work dirs, the
//! files bind-mounted over /etc, the bundle for its monitor and the monitor's socket, log and exit status.
//!
//! The operations, by concern: `create` (specs to records, and Run), `lifecycle` (start, the exit watch, wait,
//! kill, stop, remove), `exec` and `attach` (sessions: typed inputs in, [`SessionOutput`]s out, as any API
//! feeds them), `images` (image removal while containers use them), `stats`. Errors are [`ContainerError`];
//! the API chooses their status codes.

mod attach;
mod create;
mod error;
mod etc;
mod exec;
mod images;
mod lifecycle;
mod privileges;
mod record;
mod session;
mod stats;
mod subids;
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
use crate::network::{Endpoint, NetError, NetworkDriver, Networks};
use crate::runtime::bundle::{self, ExitInfo, LogLimits};
use crate::runtime::client;
use crate::runtime::protocol::ToMonitor;
pub use attach::AttachRequest;
pub use create::CreateSpec;
use error::io;
pub use error::{ContainerError, no_nul};
pub use exec::ExecRequest;
pub use privileges::{Privileges, UserNamespace};
pub use record::validate_hostname;
pub use record::{
    Config, ContainerStatus, ExitRecord, IdMap, MAX_SECCOMP_PROFILE, MountConfig, Network, PodSettings, Record,
    Seccomp, Security, State, new_id, parse_signal, signal_name,
};
pub use session::{InputBreak, MAX_STDIN_FRAME, SessionInput, SessionInputs, SessionOutput, SessionOutputs};
pub use stats::{Sample, parse_net_dev};

/// The host's resolv.conf as a container gets it (loopback nameservers left out unless it shares the host's
/// network).
pub fn host_resolv_conf(host_network: bool) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if host_network { host } else { etc::resolv_conf(&host) }
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
    /// Bytes of output its log could not take (a full disk), as its monitor last reported.
    log_dropped: std::sync::atomic::AtomicU64,
}

impl Container {
    pub fn record(&self) -> Record {
        self.record.lock().unwrap().clone()
    }

    /// Bytes of the container's output its log could not take (the disk was full).
    pub fn log_dropped(&self) -> u64 {
        self.log_dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn update(&self, change: impl FnOnce(&mut Record)) -> Result<(), ContainerError> {
        let mut record = self.record.lock().unwrap();
        if record.state.status == ContainerStatus::Damaged {
            // What is on disk is all there is of it: never overwritten with the placeholder.
            return Err(ContainerError::Damaged { container: self.id.clone(), reason: record.state.damage.clone() });
        }
        change(&mut record);
        crate::store::write_json(&self.dir.join(record::RECORD_FILE), &*record).map_err(io("saving container state"))
    }

    /// Saves the record again every second until it is written: after a save failed because the disk is
    /// full, what the server knows (an exit status) reaches the disk once space returns. Stops when the
    /// directory is gone (the container was removed) or the error is not one that space would cure.
    fn save_later(self: &Arc<Self>) {
        let c = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let record = c.record();
                match crate::store::write_json(&c.dir.join(record::RECORD_FILE), &record) {
                    Ok(()) => {
                        tracing::info!(container = %c.id, "saved the container's record that a full disk held back");
                        return;
                    }
                    Err(e) if matches!(e.raw_os_error(), Some(nix::libc::ENOSPC | nix::libc::EDQUOT)) => {}
                    Err(_) => return,
                }
            }
        });
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
    /// The user whose subordinate ids (/etc/subuid, /etc/subgid) containers with their own user namespace
    /// get their host ids from.
    pub subid_user: String,
    /// The pods' network (CNI: --cni-conf-dir, --cni-bin-dir); the CRI makes its `network::cni::Cni` of it.
    pub cni: crate::network::cni::CniOptions,
}

/// All containers of this server.
pub struct Containers {
    dir: PathBuf,
    images: Arc<ImageStore>,
    layout: Layout,
    /// The cgroup filesystem containers' cgroups are made in (the host's; a fake one in unit tests).
    cgroup_fs: Arc<dyn CgroupFs>,
    options: RuntimeOptions,
    monitor: client::MonitorBinary,
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
        let layout = Layout::detect()?;
        tracing::info!("cgroups: {}", layout.describe());
        let cgroups = (layout, Arc::new(HostFs) as Arc<dyn CgroupFs>);
        Self::open_with(root, images, options, events, cgroups, client::MonitorBinary::beside_server()?).await
    }

    /// [`Containers::open`] with the cgroup layout and filesystem and the monitor binary given.
    pub(crate) async fn open_with(
        root: &Path,
        images: Arc<ImageStore>,
        options: RuntimeOptions,
        events: Arc<Events>,
        (layout, cgroup_fs): (Layout, Arc<dyn CgroupFs>),
        monitor: client::MonitorBinary,
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
        let mut auto_remove = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if name.starts_with(record::DELETING_PREFIX) {
                // A removal a dead server was deleting: finish it.
                tracing::info!(dir = %path.display(), "finishing the deletion of a removed container's directory");
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(dir = %path.display(), error = %e, "cannot delete a removed container's directory");
                }
                continue;
            }
            if record::check_id(&name).is_err() {
                tracing::warn!(dir = %path.display(), "skipping an entry that is not a container directory (its name is not an id)");
                continue;
            }
            if path.join(record::TOMBSTONE_FILE).exists() {
                tracing::info!(container = %name, "finishing a removal that a server left unfinished when it died");
                if let Err(e) = containers.finish_removal(&name, &path).await {
                    tracing::warn!(container = %name, error = %e, "cannot finish the removal");
                }
                continue;
            }
            let record = match crate::store::read_json::<Record>(&path.join(record::RECORD_FILE)) {
                Ok(Some(record)) if record.config.id == name => record,
                Ok(Some(record)) => Record::damaged(
                    &name,
                    format!("{} names container {:?}, not its directory's id", record::RECORD_FILE, record.config.id),
                ),
                Ok(None) => Record::damaged(&name, format!("{} is missing", record::RECORD_FILE)),
                Err(e) => Record::damaged(&name, format!("cannot read {}: {e}", record::RECORD_FILE)),
            };
            if record.state.status == ContainerStatus::Damaged {
                // Listed, so that it can be inspected and removed; nothing of it is torn down until then.
                tracing::warn!(container = %name, damage = %record.state.damage, "a damaged container: listed as such; rm -f removes it");
                containers.insert(record, path);
                continue;
            }
            if let (Ok(network), Some(address)) = (containers.network_of(&record), record.config.address)
                && let Err(e) = network.claim(&record.config.id, address)
            {
                tracing::warn!(container = %record.config.id, error = %e, "its address is taken; it gets a new one at start");
            }
            let container = containers.insert(record, path);
            containers.readopt(container.clone()).await;
            let r = container.record();
            // Docker's rule: a --rm container that is not running (its server died before it could remove it,
            // or before it started) is removed at the next start.
            if r.config.auto_remove && r.state.status != ContainerStatus::Running {
                auto_remove.push(container);
            }
        }
        for c in auto_remove {
            tracing::info!(container = %c.id, "removing an auto-remove container that is not running");
            if let Err(e) = containers.remove(&c, true).await {
                tracing::warn!(container = %c.id, error = %e, "auto-remove failed");
            }
        }
        for network in containers.options.networks.all() {
            let running: HashSet<String> = containers
                .list()
                .iter()
                .map(|c| c.record())
                // A damaged container's network may be any: what it has is kept until it is removed.
                .filter(|r| {
                    r.state.status == ContainerStatus::Damaged
                        || (r.state.status == ContainerStatus::Running && r.config.network.name() == network.name())
                })
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
    fn cgroup(&self, c: &Container) -> Cgroup {
        Cgroup::open_with(self.cgroup_fs.clone(), &self.layout, &self.cgroup_parent_of(&c.record()), &c.id)
    }

    /// The cgroup directory a container's cgroup is in: its pod's, else the server's.
    fn cgroup_parent_of(&self, record: &Record) -> String {
        record.config.pod.cgroup_parent.clone().unwrap_or_else(|| self.options.cgroup_parent.clone())
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
            log_dropped: Default::default(),
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
                let _ = remove_cgroup(self.cgroup(&c)).await;
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
            return Err(ContainerError::NameRequired);
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
            0 => Err(ContainerError::NoSuchContainer(name.to_string())),
            count => Err(ContainerError::Ambiguous { name: name.to_string(), count }),
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
