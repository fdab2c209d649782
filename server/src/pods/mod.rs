//! Pods (the CRI's pod sandboxes): a shared network, IPC and UTS namespace (optionally PID) held by a holder
//! container, its /etc files, its cgroup directory, and its network through a [`PodNetwork`]. A pod is a
//! directory `<root>/pods/<id>` with `pod.json` (written atomically), the files bound over its containers'
//! /etc, and `ns/<kind>`: bind mounts of the holder's namespaces, which the pod's containers join by path and
//! which outlive the holder so a teardown after a crash still finds the network namespace.
//!
//! The holder is a container of [`Containers`] (cm's own: no image, its init only holds the namespaces and
//! reaps), so its life, cgroup, monitor and re-adoption are the containers' own; the pod's containers are
//! plain containers with [`PodSettings`]. Errors are [`ContainerError`]s: the API maps them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::now_nanos;
use crate::containers::{
    ContainerError, ContainerStatus, Containers, CreateSpec, Network, PodSettings, new_id, no_nul,
};
use crate::network::pod::{PodNetwork, PodNetworkRequest, PodPortMapping};
use crate::runtime::bundle::NamespaceJoin;

pub const RECORD_FILE: &str = "pod.json";

/// DNS settings of a pod (its resolv.conf); all empty: the host's resolv.conf.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// A published port of a pod.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortMapping {
    pub protocol: String,
    pub container_port: u16,
    pub host_port: u16,
    pub host_ip: String,
}

/// What a pod is created with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub hostname: String,
    pub log_directory: String,
    pub dns: Dns,
    pub port_mappings: Vec<PortMapping>,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    /// The kubelet's cgroup parent (cgroupfs path); its last component names the pod's cgroup directory.
    pub cgroup_parent: String,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    /// One PID namespace for the whole pod (the holder is its PID 1).
    pub shared_pid: bool,
    pub runtime_handler: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    Ready,
    #[default]
    NotReady,
}

/// A pod's persisted record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub spec: PodSpec,
    pub state: PodState,
    pub created_unix_nanos: i64,
    /// The holder container's id (empty until it is created).
    pub holder: String,
    /// The cgroup directory of the pod's containers (empty: the server's).
    pub cgroup_dir: String,
    /// The pod's addresses (primary first) when its network was set up.
    pub ips: Vec<String>,
    /// The network was (or may have been: set before the ADD) set up and needs a teardown.
    pub network_pending: bool,
    /// Why the pod has no network beyond loopback, when it has none.
    pub network_note: String,
}

/// One pod.
pub struct Pod {
    pub id: String,
    dir: PathBuf,
    record: Mutex<PodRecord>,
    lifecycle: tokio::sync::Mutex<()>,
}

impl Pod {
    pub fn record(&self) -> PodRecord {
        self.record.lock().unwrap().clone()
    }

    fn update(&self, change: impl FnOnce(&mut PodRecord)) -> Result<(), ContainerError> {
        let mut record = self.record.lock().unwrap();
        change(&mut record);
        crate::store::write_json(&self.dir.join(RECORD_FILE), &*record)
            .map_err(|source| ContainerError::Io { what: "saving the pod", source })
    }

    fn ns_file(&self, kind: &str) -> PathBuf {
        self.dir.join("ns").join(kind)
    }
}

/// All pods of this server.
pub struct Pods {
    dir: PathBuf,
    containers: Arc<Containers>,
    network: Arc<dyn PodNetwork>,
    table: Mutex<HashMap<String, Arc<Pod>>>,
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> ContainerError {
    move |source| ContainerError::Io { what, source }
}

/// The namespaces a pod shares, by the file names under `ns/`.
const SHARED: [&str; 4] = ["net", "ipc", "uts", "pid"];

impl Pods {
    /// The pod's network namespace file, or None when the pod uses the host's network.
    pub fn netns(&self, pod: &Pod) -> Option<PathBuf> {
        (!pod.record().spec.host_network).then(|| pod.ns_file("net"))
    }

    /// Loads the pods under `root/pods`. A pod whose holder is gone (it died, or the server crashed between
    /// steps) is made NotReady and its network torn down and namespace files released: nothing of it outlives
    /// its holder but the record, until RemovePodSandbox.
    pub async fn open(
        root: &Path,
        containers: Arc<Containers>,
        network: Arc<dyn PodNetwork>,
    ) -> anyhow::Result<Arc<Pods>> {
        let dir = root.join("pods");
        std::fs::create_dir_all(&dir)?;
        let pods = Arc::new(Pods { dir: dir.clone(), containers, network, table: Mutex::new(HashMap::new()) });
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let Ok(Some(record)) = crate::store::read_json::<PodRecord>(&path.join(RECORD_FILE)) else {
                tracing::warn!(dir = %path.display(), "removing a pod directory without a readable record");
                unmount_ns(&path);
                let _ = std::fs::remove_dir_all(&path);
                continue;
            };
            let pod = Arc::new(Pod {
                id: record.id.clone(),
                dir: path,
                record: Mutex::new(record),
                lifecycle: tokio::sync::Mutex::new(()),
            });
            if !pods.holder_running(&pod) {
                tracing::info!(pod = %pod.id, "its holder is gone: releasing its network");
                pods.release(&pod).await;
            }
            pods.table.lock().unwrap().insert(pod.id.clone(), pod);
        }
        Ok(pods)
    }

    /// Whether pods can be networked now (Err: why not).
    pub fn network_ready(&self) -> Result<(), String> {
        self.network.ready()
    }

    pub fn containers(&self) -> &Arc<Containers> {
        &self.containers
    }

    fn holder_running(&self, pod: &Pod) -> bool {
        let holder = pod.record().holder;
        !holder.is_empty()
            && self.containers.get(&holder).is_ok_and(|c| c.record().state.status == ContainerStatus::Running)
    }

    /// A pod by id or unique id prefix.
    pub fn get(&self, id: &str) -> Result<Arc<Pod>, ContainerError> {
        if id.is_empty() {
            return Err(ContainerError::Invalid("a pod sandbox id is required".into()));
        }
        let table = self.table.lock().unwrap();
        if let Some(p) = table.get(id) {
            return Ok(p.clone());
        }
        let matches: Vec<&Arc<Pod>> = table.values().filter(|p| p.id.starts_with(id)).collect();
        match matches.len() {
            1 => Ok(matches[0].clone()),
            0 => Err(ContainerError::NoSuchPod(id.to_string())),
            count => Err(ContainerError::Ambiguous { name: id.to_string(), count }),
        }
    }

    pub fn list(&self) -> Vec<Arc<Pod>> {
        let mut all: Vec<Arc<Pod>> = self.table.lock().unwrap().values().cloned().collect();
        all.sort_by_key(|p| std::cmp::Reverse(p.record().created_unix_nanos));
        all
    }

    /// The pod's network request for the PodNetwork.
    fn network_request(&self, pod: &Pod) -> PodNetworkRequest {
        let spec = pod.record().spec;
        PodNetworkRequest {
            pod_id: pod.id.clone(),
            netns: pod.ns_file("net"),
            ifname: "eth0".into(),
            pod_name: spec.name.clone(),
            pod_namespace: spec.namespace.clone(),
            pod_uid: spec.uid.clone(),
            port_mappings: spec
                .port_mappings
                .iter()
                .filter(|p| p.host_port > 0)
                .map(|p| PodPortMapping {
                    host_port: p.host_port,
                    container_port: p.container_port,
                    protocol: p.protocol.clone(),
                    host_ip: p.host_ip.parse().ok(),
                })
                .collect(),
        }
    }

    /// Creates and starts a pod: its holder, its namespace files, its network. On failure nothing is left.
    pub async fn run(self: &Arc<Self>, spec: PodSpec) -> Result<Arc<Pod>, ContainerError> {
        validate(&spec)?;
        let id = new_id().map_err(io("making an id"))?;
        let dir = self.dir.join(&id);
        std::fs::create_dir_all(dir.join("ns")).map_err(io("creating the pod directory"))?;
        let cgroup_dir = cgroup_dir(&spec.cgroup_parent);
        let record = PodRecord {
            id: id.clone(),
            spec,
            state: PodState::NotReady,
            created_unix_nanos: now_nanos(),
            holder: String::new(),
            cgroup_dir,
            ips: vec![],
            network_pending: false,
            network_note: String::new(),
        };
        let pod = Arc::new(Pod { id: id.clone(), dir, record: Mutex::new(record), lifecycle: Default::default() });
        let started = self.start_pod(&pod).await;
        if let Err(e) = started {
            tracing::warn!(pod = %id, error = %e, "pod could not start; removing what it made");
            self.release(&pod).await;
            if let Ok(holder) = self.containers.get(&pod.record().holder) {
                let _ = self.containers.remove(&holder, true).await;
            }
            let _ = std::fs::remove_dir_all(&pod.dir);
            return Err(e);
        }
        self.table.lock().unwrap().insert(id.clone(), pod.clone());
        tracing::info!(pod = %id, "pod ready");
        Ok(pod)
    }

    async fn start_pod(self: &Arc<Self>, pod: &Arc<Pod>) -> Result<(), ContainerError> {
        let record = pod.record();
        let spec = &record.spec;
        write_etc(&pod.dir, spec, &pod.id, None).map_err(io("writing the pod's /etc files"))?;
        pod.update(|_| {})?;
        let mut join = Vec::new();
        if spec.host_pid {
            join.push(NamespaceJoin { kind: "pid".into(), path: "/proc/1/ns/pid".into() });
        }
        if spec.host_ipc {
            join.push(NamespaceJoin { kind: "ipc".into(), path: "/proc/1/ns/ipc".into() });
        }
        // A host-network pod has the node's hostname too, as the kubelet expects.
        if spec.host_network {
            join.push(NamespaceJoin { kind: "uts".into(), path: "/proc/1/ns/uts".into() });
        }
        let holder = self.containers.create(CreateSpec {
            // Short enough for any pod metadata (cm names are at most 128 characters); the record has the rest.
            name: format!("k8s_POD_{}", &pod.id[..12]),
            hostname: hostname(spec, &pod.id),
            network: if spec.host_network { Network::Host } else { Network::None },
            stop_signal: "SIGKILL".into(),
            labels: spec.labels.clone(),
            pod: PodSettings {
                pod_id: pod.id.clone(),
                holder: true,
                join_namespaces: join,
                cgroup_parent: (!record.cgroup_dir.is_empty()).then(|| record.cgroup_dir.clone()),
                etc_dir: Some(pod.dir.clone()),
                ..Default::default()
            },
            ..Default::default()
        })?;
        pod.update(|r| r.holder = holder.id.clone())?;
        self.containers.start(&holder, None).await?;
        let pid = holder.record().state.pid;
        for kind in SHARED {
            let shared = match kind {
                "net" => !spec.host_network,
                "ipc" => !spec.host_ipc,
                "pid" => spec.shared_pid && !spec.host_pid,
                _ => true,
            };
            if shared {
                bind_ns(pid, kind, &pod.ns_file(kind)).map_err(io("holding the pod's namespaces"))?;
            }
        }
        if !spec.host_network {
            match self.network.ready() {
                Ok(()) => {
                    pod.update(|r| r.network_pending = true)?;
                    let status = self.network.setup(&self.network_request(pod)).await?;
                    let ips: Vec<String> = status.ips.iter().map(|ip| ip.to_string()).collect();
                    write_etc(&pod.dir, spec, &pod.id, ips.first().map(String::as_str))
                        .map_err(io("writing the pod's /etc files"))?;
                    pod.update(|r| r.ips = ips)?;
                }
                Err(why) => {
                    tracing::info!(pod = %pod.id, reason = %why, "no pod network: the pod has loopback only");
                    pod.update(|r| r.network_note = why)?;
                }
            }
        }
        pod.update(|r| r.state = PodState::Ready)
    }

    /// Tears the network down (if it was set up) and releases the namespace files. Idempotent.
    async fn release(&self, pod: &Pod) {
        if pod.record().network_pending {
            match self.network.teardown(&self.network_request(pod)).await {
                Ok(()) => {
                    let _ = pod.update(|r| r.network_pending = false);
                }
                Err(e) => tracing::warn!(pod = %pod.id, error = %e, "pod network teardown failed"),
            }
        }
        unmount_ns(&pod.dir);
        let _ = pod.update(|r| r.state = PodState::NotReady);
    }

    /// The containers of a pod (its holder left out).
    pub fn members(&self, pod: &Pod) -> Vec<Arc<crate::containers::Container>> {
        self.containers
            .list()
            .into_iter()
            .filter(|c| {
                let r = c.record();
                r.config.pod.pod_id == pod.id && !r.config.pod.holder
            })
            .collect()
    }

    /// Stops a pod: its containers are killed, its network torn down, its holder stopped. Idempotent.
    pub async fn stop(&self, pod: &Arc<Pod>) -> Result<(), ContainerError> {
        let _lifecycle = pod.lifecycle.lock().await;
        for c in self.members(pod) {
            self.containers.stop(&c, Duration::ZERO).await?;
        }
        if pod.record().network_pending || pod.record().state == PodState::Ready {
            self.release(pod).await;
        }
        if let Ok(holder) = self.containers.get(&pod.record().holder) {
            self.containers.stop(&holder, Duration::ZERO).await?;
        }
        unmount_ns(&pod.dir);
        pod.update(|r| r.state = PodState::NotReady)
    }

    /// Removes a pod and its containers (stopping it first). Idempotent for a pod already gone.
    pub async fn remove(&self, pod: &Arc<Pod>) -> Result<(), ContainerError> {
        self.stop(pod).await?;
        let _lifecycle = pod.lifecycle.lock().await;
        for c in self.members(pod) {
            self.containers.remove(&c, true).await?;
        }
        if let Ok(holder) = self.containers.get(&pod.record().holder) {
            self.containers.remove(&holder, true).await?;
        }
        std::fs::remove_dir_all(&pod.dir)
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
            .map_err(io("removing the pod directory"))?;
        self.table.lock().unwrap().remove(&pod.id);
        tracing::info!(pod = %pod.id, "pod removed");
        Ok(())
    }

    /// What a new container of the pod is created with. FAILED_PRECONDITION-like error when the pod is not
    /// ready (stopped).
    pub fn member_settings(&self, pod: &Pod) -> Result<PodSettings, ContainerError> {
        let record = pod.record();
        if record.state != PodState::Ready || !self.holder_running(pod) {
            return Err(ContainerError::PodNotReady(pod.id.clone()));
        }
        let spec = &record.spec;
        let mut join = Vec::new();
        for kind in SHARED {
            let file = pod.ns_file(kind);
            if file.exists() {
                join.push(NamespaceJoin { kind: kind.into(), path: file });
            }
        }
        if spec.host_pid {
            join.push(NamespaceJoin { kind: "pid".into(), path: "/proc/1/ns/pid".into() });
        }
        if spec.host_ipc {
            join.push(NamespaceJoin { kind: "ipc".into(), path: "/proc/1/ns/ipc".into() });
        }
        Ok(PodSettings {
            pod_id: pod.id.clone(),
            join_namespaces: join,
            cgroup_parent: (!record.cgroup_dir.is_empty()).then(|| record.cgroup_dir.clone()),
            etc_dir: Some(pod.dir.clone()),
            ..Default::default()
        })
    }

    /// The holder container of a pod, if it exists.
    pub fn holder(&self, pod: &Pod) -> Option<Arc<crate::containers::Container>> {
        self.containers.get(&pod.record().holder).ok()
    }
}

/// Refuses a pod spec that cannot be set up.
fn validate(spec: &PodSpec) -> Result<(), ContainerError> {
    for (what, value) in [("metadata.name", &spec.name), ("metadata.namespace", &spec.namespace)] {
        if value.is_empty() {
            return Err(ContainerError::Invalid(format!("the pod sandbox needs a {what}")));
        }
        if !value.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) || value.len() > 253 {
            return Err(ContainerError::Invalid(format!(
                "pod sandbox {what} {value:?} must be up to 253 of [A-Za-z0-9-._]"
            )));
        }
    }
    if !spec.uid.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) || spec.uid.len() > 128 {
        return Err(ContainerError::Invalid(format!("pod sandbox metadata.uid {:?} must be [A-Za-z0-9-._]", spec.uid)));
    }
    no_nul(
        "dns_config",
        spec.dns.servers.iter().chain(&spec.dns.searches).chain(&spec.dns.options).map(|s| s.as_str()),
    )?;
    if let Some(bad) = spec.dns.servers.iter().find(|s| s.parse::<std::net::IpAddr>().is_err()) {
        return Err(ContainerError::Invalid(format!("dns_config server {bad:?} is not an IP address")));
    }
    if let Some(bad) =
        spec.dns.searches.iter().chain(&spec.dns.options).find(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        return Err(ContainerError::Invalid(format!("dns_config entry {bad:?} must be one word")));
    }
    if !spec.hostname.is_empty() {
        crate::containers::validate_hostname(&spec.hostname).map_err(ContainerError::Invalid)?;
    }
    Ok(())
}

/// The pod's cgroup directory (one component): the last component of the kubelet's cgroup parent, else empty
/// (the server's own cgroup parent).
fn cgroup_dir(parent: &str) -> String {
    parent
        .rsplit('/')
        .find(|c| !c.is_empty() && *c != "." && *c != "..")
        .filter(|c| c.chars().all(|ch| ch.is_ascii_alphanumeric() || "-._".contains(ch)))
        .unwrap_or_default()
        .to_string()
}

/// The pod's hostname: the one asked for, else the pod's name if it is a valid hostname, else its short id.
fn hostname(spec: &PodSpec, id: &str) -> String {
    if !spec.hostname.is_empty() {
        spec.hostname.clone()
    } else if crate::containers::validate_hostname(&spec.name).is_ok() {
        spec.name.clone()
    } else {
        id[..12].to_string()
    }
}

/// The pod's hostname, hosts and resolv.conf.
fn write_etc(dir: &Path, spec: &PodSpec, id: &str, ip: Option<&str>) -> std::io::Result<()> {
    let hostname = hostname(spec, id);
    let hosts = if spec.host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{hostname}\n",
            ip.unwrap_or("127.0.1.1")
        )
    };
    let dns = &spec.dns;
    let resolv = if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        crate::containers::host_resolv_conf(spec.host_network)
    } else {
        let mut text = String::new();
        for s in &dns.servers {
            text.push_str(&format!("nameserver {s}\n"));
        }
        if !dns.searches.is_empty() {
            text.push_str(&format!("search {}\n", dns.searches.join(" ")));
        }
        if !dns.options.is_empty() {
            text.push_str(&format!("options {}\n", dns.options.join(" ")));
        }
        text
    };
    crate::store::write_replace_readable(&dir.join("hostname"), format!("{hostname}\n").as_bytes())?;
    crate::store::write_replace_readable(&dir.join("hosts"), hosts.as_bytes())?;
    crate::store::write_replace_readable(&dir.join("resolv.conf"), resolv.as_bytes())
}

/// Bind-mounts the holder's namespace `kind` onto `file` (made empty first).
fn bind_ns(pid: i32, kind: &str, file: &Path) -> std::io::Result<()> {
    std::fs::File::create(file)?;
    let source = PathBuf::from(format!("/proc/{pid}/ns/{kind}"));
    nix::mount::mount(Some(&source), file, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| std::io::Error::other(format!("bind-mounting {} onto {}: {e}", source.display(), file.display())))
}

/// Unmounts and removes the namespace files of a pod directory (those that are there).
fn unmount_ns(dir: &Path) {
    for kind in SHARED {
        let file = dir.join("ns").join(kind);
        if file.exists() {
            let _ = nix::mount::umount2(&file, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_cgroup_is_the_last_component_of_the_parent() {
        assert_eq!(cgroup_dir("/kubepods/besteffort/pod1234"), "pod1234");
        assert_eq!(cgroup_dir(""), "");
        assert_eq!(cgroup_dir("/.."), "");
        assert_eq!(cgroup_dir("/kubepods/a b"), "");
    }

    #[test]
    fn bad_pod_specs_are_refused_naming_the_field() {
        let good = PodSpec { name: "web".into(), namespace: "default".into(), uid: "u-1".into(), ..Default::default() };
        assert!(validate(&good).is_ok());
        let e = validate(&PodSpec { name: String::new(), ..good.clone() }).unwrap_err().to_string();
        assert!(e.contains("metadata.name"), "{e}");
        let dns = Dns { servers: vec!["not-an-ip".into()], ..Default::default() };
        let e = validate(&PodSpec { dns, ..good.clone() }).unwrap_err().to_string();
        assert!(e.contains("not an IP address"), "{e}");
        let e = validate(&PodSpec { hostname: "a b".into(), ..good }).unwrap_err().to_string();
        assert!(e.contains("invalid hostname"), "{e}");
    }
}
