//! Kubernetes CRI v1 (runtime.v1 RuntimeService and ImageService), a second thin API over the same domain as
//! cm.v1: pods ([`crate::pods`]), containers, the image store. Requests are converted here ([`convert`]),
//! domain errors become statuses through api/status.rs. Exec, Attach and PortForward answer URLs of the
//! streaming server ([`stream`]).

mod convert;
mod images;
pub mod stream;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cm_api::cri as pb;
use cm_api::cri::runtime_service_server::RuntimeService;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::containers::{
    AttachRequest, Container, ContainerError, ContainerStatus, Containers, CreateSpec, ExecRequest, Network,
    Privileges, Seccomp, Security, SessionOutput,
};
use crate::pods::{PodState, Pods};
pub use images::CriImages;
use stream::{Pending, StreamServer, Streams};

/// The CRI runtime service.
#[derive(Clone)]
pub struct CriRuntime {
    pods: Arc<Pods>,
    containers: Arc<Containers>,
    stream: Arc<StreamServer>,
}

impl CriRuntime {
    pub fn new(pods: Arc<Pods>, stream: Arc<StreamServer>) -> Self {
        CriRuntime { containers: pods.containers().clone(), pods, stream }
    }

    /// A running CRI container for a streaming request.
    fn running(&self, id: &str) -> Result<Arc<Container>, Status> {
        let c = self.container(id)?;
        if c.record().state.status != ContainerStatus::Running {
            return Err(Status::failed_precondition(format!("container {} is not running", c.id)));
        }
        Ok(c)
    }

    fn url(&self, request: Pending) -> Result<String, Status> {
        self.stream.issue(request).map_err(|e| Status::internal(format!("cannot make a streaming token: {e}")))
    }

    /// A pod is ready when recorded so and its holder runs.
    fn ready(&self, pod: &crate::pods::Pod) -> bool {
        pod.record().state == PodState::Ready
            && self.pods.holder(pod).is_some_and(|h| h.record().state.status == ContainerStatus::Running)
    }

    /// A container of some pod, by id or unique prefix (holders and plain cm containers are not CRI's).
    fn container(&self, id: &str) -> Result<Arc<Container>, Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument("a container id is required"));
        }
        let c = self.containers.get(id)?;
        let r = c.record();
        if r.config.pod.pod_id.is_empty() || r.config.pod.holder {
            return Err(ContainerError::NoSuchContainer(id.to_string()).into());
        }
        Ok(c)
    }

    /// Like [`Self::container`], but Ok(None) for one that does not exist (idempotent stop and remove).
    fn existing(&self, id: &str) -> Result<Option<Arc<Container>>, Status> {
        match self.container(id) {
            Ok(c) => Ok(Some(c)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }

    fn cri_containers(&self) -> Vec<Arc<Container>> {
        self.containers
            .list()
            .into_iter()
            .filter(|c| {
                let r = c.record();
                !r.config.pod.pod_id.is_empty() && !r.config.pod.holder
            })
            .collect()
    }

    fn stats_of(&self, c: &Arc<Container>) -> pb::ContainerStats {
        let r = c.record();
        let attributes = Some(pb::ContainerAttributes {
            id: c.id.clone(),
            metadata: Some(convert::container_metadata(&r)),
            labels: convert::map(&r.config.labels),
            annotations: convert::map(&r.config.pod.annotations),
        });
        let now = crate::clock::now_nanos();
        let upper = self.containers.log_dir(c).join("upper");
        let writable_layer = Some(pb::FilesystemUsage {
            timestamp: now,
            fs_id: Some(pb::FilesystemIdentifier { mountpoint: upper.display().to_string() }),
            used_bytes: Some(pb::UInt64Value { value: crate::image::store::disk_usage(&upper) }),
            inodes_used: Some(pb::UInt64Value { value: 0 }),
        });
        let Ok(sample) = self.containers.sample(c) else {
            return pb::ContainerStats { attributes, writable_layer, ..Default::default() };
        };
        let u = &sample.usage;
        pb::ContainerStats {
            attributes,
            cpu: Some(pb::CpuUsage {
                timestamp: sample.unix_nanos,
                usage_core_nano_seconds: Some(pb::UInt64Value { value: u.cpu.total_ns }),
                ..Default::default()
            }),
            memory: Some(pb::MemoryUsage {
                timestamp: sample.unix_nanos,
                working_set_bytes: Some(pb::UInt64Value { value: u.memory.working_set_bytes }),
                usage_bytes: Some(pb::UInt64Value { value: u.memory.usage_bytes }),
                rss_bytes: Some(pb::UInt64Value { value: u.memory.rss_bytes }),
                available_bytes: Some(pb::UInt64Value {
                    value: u.memory.limit_bytes.saturating_sub(u.memory.working_set_bytes),
                }),
                ..Default::default()
            }),
            writable_layer,
            ..Default::default()
        }
    }

    fn pod_stats(&self, pod: &crate::pods::Pod) -> pb::PodSandboxStats {
        let r = pod.record();
        let members = self.pods.members(pod);
        let containers: Vec<pb::ContainerStats> = members.iter().map(|c| self.stats_of(c)).collect();
        let now = crate::clock::now_nanos();
        let cpu: u64 =
            containers.iter().filter_map(|s| s.cpu.as_ref()?.usage_core_nano_seconds.as_ref()).map(|v| v.value).sum();
        let working_set: u64 =
            containers.iter().filter_map(|s| s.memory.as_ref()?.working_set_bytes.as_ref()).map(|v| v.value).sum();
        let holder = self.pods.holder(pod);
        let interfaces: Vec<pb::NetworkInterfaceUsage> = holder
            .filter(|h| h.record().state.status == ContainerStatus::Running && !r.spec.host_network)
            .and_then(|h| std::fs::read_to_string(format!("/proc/{}/net/dev", h.record().state.pid)).ok())
            .map(|text| crate::containers::parse_net_dev(&text))
            .unwrap_or_default()
            .into_iter()
            .map(|i| pb::NetworkInterfaceUsage {
                name: i.name,
                rx_bytes: Some(pb::UInt64Value { value: i.rx_bytes }),
                rx_errors: Some(pb::UInt64Value { value: i.rx_errors }),
                tx_bytes: Some(pb::UInt64Value { value: i.tx_bytes }),
                tx_errors: Some(pb::UInt64Value { value: i.tx_errors }),
            })
            .collect();
        pb::PodSandboxStats {
            attributes: Some(pb::PodSandboxAttributes {
                id: pod.id.clone(),
                metadata: Some(convert::pod_metadata(&r.spec)),
                labels: convert::map(&r.spec.labels),
                annotations: convert::map(&r.spec.annotations),
            }),
            linux: Some(pb::LinuxPodSandboxStats {
                cpu: Some(pb::CpuUsage {
                    timestamp: now,
                    usage_core_nano_seconds: Some(pb::UInt64Value { value: cpu }),
                    ..Default::default()
                }),
                memory: Some(pb::MemoryUsage {
                    timestamp: now,
                    working_set_bytes: Some(pb::UInt64Value { value: working_set }),
                    ..Default::default()
                }),
                network: Some(pb::NetworkUsage {
                    timestamp: now,
                    default_interface: interfaces.iter().find(|i| i.name == "eth0").cloned(),
                    interfaces,
                }),
                process: Some(pb::ProcessUsage {
                    timestamp: now,
                    process_count: Some(pb::UInt64Value {
                        value: members.iter().filter(|c| c.record().state.status == ContainerStatus::Running).count()
                            as u64,
                    }),
                }),
                containers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

type CriStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The standard streams of a streaming request, checked as the kubelet does.
fn streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<Streams, Status> {
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument("one of stdin, stdout and stderr must be set"));
    }
    if tty && stderr {
        return Err(Status::invalid_argument("tty and stderr cannot both be set (a terminal has no stderr)"));
    }
    Ok(Streams { stdin, stdout, stderr, tty })
}

fn not_supported(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not supported by cm"))
}

#[tonic::async_trait]
impl RuntimeService for CriRuntime {
    type StreamPodSandboxesStream = CriStream<pb::StreamPodSandboxesResponse>;
    type StreamContainersStream = CriStream<pb::StreamContainersResponse>;
    type StreamContainerStatsStream = CriStream<pb::StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = CriStream<pb::StreamPodSandboxStatsResponse>;
    type GetContainerEventsStream = CriStream<pb::ContainerEventResponse>;
    type StreamPodSandboxMetricsStream = CriStream<pb::StreamPodSandboxMetricsResponse>;

    async fn version(&self, _r: Request<pb::VersionRequest>) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "cm".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<pb::RunPodSandboxRequest>,
    ) -> Result<Response<pb::RunPodSandboxResponse>, Status> {
        let request = request.into_inner();
        let config = request.config.ok_or_else(|| Status::invalid_argument("RunPodSandbox needs a config"))?;
        let spec = convert::pod_spec(config, request.runtime_handler)?;
        let pod = self.pods.run(spec).await?;
        Ok(Response::new(pb::RunPodSandboxResponse { pod_sandbox_id: pod.id.clone() }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<pb::StopPodSandboxRequest>,
    ) -> Result<Response<pb::StopPodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        match self.pods.get(&id) {
            Ok(pod) => self.pods.stop(&pod).await?,
            Err(ContainerError::NoSuchPod(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Response::new(pb::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<pb::RemovePodSandboxRequest>,
    ) -> Result<Response<pb::RemovePodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        match self.pods.get(&id) {
            Ok(pod) => self.pods.remove(&pod).await?,
            Err(ContainerError::NoSuchPod(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Response::new(pb::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<pb::PodSandboxStatusRequest>,
    ) -> Result<Response<pb::PodSandboxStatusResponse>, Status> {
        let request = request.into_inner();
        let pod = self.pods.get(&request.pod_sandbox_id)?;
        let mut info = HashMap::new();
        let record = pod.record();
        if request.verbose {
            info.insert("info".into(), serde_json::to_string(&record).unwrap_or_default());
        }
        let containers_statuses = self.pods.members(&pod).iter().map(|c| convert::container_status(c)).collect();
        Ok(Response::new(pb::PodSandboxStatusResponse {
            status: Some(convert::pod_status(&pod, self.ready(&pod))),
            info,
            containers_statuses,
            timestamp: crate::clock::now_nanos(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<pb::ListPodSandboxRequest>,
    ) -> Result<Response<pb::ListPodSandboxResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let items = self
            .pods
            .list()
            .iter()
            .filter(|p| filter.id.is_empty() || p.id.starts_with(&filter.id))
            .map(|p| convert::pod_to_proto(p, self.ready(p)))
            .filter(|p| filter.state.as_ref().is_none_or(|s| s.state == p.state))
            .filter(|p| filter.label_selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            .collect();
        Ok(Response::new(pb::ListPodSandboxResponse { items }))
    }

    async fn stream_pod_sandboxes(
        &self,
        _r: Request<pb::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        Err(not_supported("StreamPodSandboxes"))
    }

    async fn create_container(
        &self,
        request: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        let request = request.into_inner();
        let pod = self.pods.get(&request.pod_sandbox_id)?;
        let config = request.config.ok_or_else(|| Status::invalid_argument("CreateContainer needs a config"))?;
        let metadata =
            config.metadata.ok_or_else(|| Status::invalid_argument("the container config needs metadata"))?;
        if metadata.name.is_empty() {
            return Err(Status::invalid_argument("the container config needs metadata.name"));
        }
        let image = config.image.map(|i| i.image).unwrap_or_default();
        if image.trim().is_empty() {
            return Err(Status::invalid_argument("the container config needs an image"));
        }
        if !config.devices.is_empty() {
            return Err(Status::invalid_argument("devices are not supported by cm yet"));
        }
        let mut settings = self.pods.member_settings(&pod)?;
        let pod_record = pod.record();
        let linux = config.linux.unwrap_or_default();
        let sc = linux.security_context.unwrap_or_default();
        let user = convert::user(&sc)?;
        let base = if sc.privileged { convert::ALL_CAPABILITIES } else { crate::runtime::bundle::DEFAULT_CAPABILITIES };
        if sc.privileged || sc.capabilities.is_some() {
            settings.capabilities = Some(convert::capabilities(base, &sc.capabilities.clone().unwrap_or_default())?);
        }
        let ns = sc.namespace_options.clone().unwrap_or_default();
        if ns.pid == pb::NamespaceMode::Container as i32 {
            // Its own PID namespace, even in a pod that shares one.
            settings.join_namespaces.retain(|j| j.kind != "pid" || pod_record.spec.host_pid);
        }
        settings.member_name = metadata.name.clone();
        settings.attempt = metadata.attempt;
        settings.annotations = convert::pairs(config.annotations);
        if !config.log_path.is_empty() {
            if pod_record.spec.log_directory.is_empty() {
                return Err(Status::invalid_argument("log_path needs the pod sandbox's log_directory"));
            }
            let path = std::path::Path::new(&pod_record.spec.log_directory).join(&config.log_path);
            if std::path::Path::new(&config.log_path).components().any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(Status::invalid_argument(format!(
                    "log_path {:?} must stay in the log directory",
                    config.log_path
                )));
            }
            settings.cri_log = Some(path);
        }
        let limits = linux.resources.as_ref().map(convert::limits).transpose()?.unwrap_or_default();
        let s = &pod_record.spec;
        let spec = CreateSpec {
            image: image.trim().to_string(),
            // Unique per pod, name and attempt, as the CRI wants; the pod's short id keeps it short.
            name: format!("k8s_{}_{}_{}", metadata.name, &pod.id[..12], metadata.attempt),
            entrypoint: (!config.command.is_empty()).then(|| config.command.clone()),
            command: config.args,
            env: config.envs.iter().map(|kv| format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value))).collect(),
            workdir: config.working_dir,
            user,
            tty: config.tty,
            stdin: config.stdin,
            limits,
            network: if s.host_network { Network::Host } else { Network::None },
            mounts: convert::mounts(&config.mounts)?,
            labels: convert::pairs(config.labels),
            privileges: Privileges {
                privileged: sc.privileged,
                read_only_rootfs: sc.readonly_rootfs,
                ..Default::default()
            },
            security: Security { seccomp: seccomp(sc.seccomp.as_ref())?, no_new_privileges: sc.no_new_privs },
            pod: settings,
            ..Default::default()
        };
        let c = self.containers.create(spec)?;
        Ok(Response::new(pb::CreateContainerResponse { container_id: c.id.clone() }))
    }

    async fn start_container(
        &self,
        request: Request<pb::StartContainerRequest>,
    ) -> Result<Response<pb::StartContainerResponse>, Status> {
        let c = self.container(&request.into_inner().container_id)?;
        let pod = self.pods.get(&c.record().config.pod.pod_id)?;
        self.pods.member_settings(&pod)?;
        if c.record().state.status == ContainerStatus::Stopped {
            return Err(Status::failed_precondition(format!(
                "container {} has exited; CRI containers start once",
                c.id
            )));
        }
        self.containers.start(&c, None).await?;
        Ok(Response::new(pb::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<pb::StopContainerRequest>,
    ) -> Result<Response<pb::StopContainerResponse>, Status> {
        let request = request.into_inner();
        if let Some(c) = self.existing(&request.container_id)? {
            let timeout = Duration::from_secs(request.timeout.max(0) as u64);
            self.containers.stop(&c, timeout).await?;
        }
        Ok(Response::new(pb::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<pb::RemoveContainerRequest>,
    ) -> Result<Response<pb::RemoveContainerResponse>, Status> {
        if let Some(c) = self.existing(&request.into_inner().container_id)? {
            self.containers.remove(&c, true).await?;
        }
        Ok(Response::new(pb::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let containers = self
            .cri_containers()
            .iter()
            .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
            .map(|c| convert::container_to_proto(c))
            .filter(|c| filter.pod_sandbox_id.is_empty() || c.pod_sandbox_id.starts_with(&filter.pod_sandbox_id))
            .filter(|c| filter.state.as_ref().is_none_or(|s| s.state == c.state))
            .filter(|c| filter.label_selector.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
            .collect();
        Ok(Response::new(pb::ListContainersResponse { containers }))
    }

    async fn stream_containers(
        &self,
        _r: Request<pb::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        Err(not_supported("StreamContainers"))
    }

    async fn container_status(
        &self,
        request: Request<pb::ContainerStatusRequest>,
    ) -> Result<Response<pb::ContainerStatusResponse>, Status> {
        let c = self.container(&request.into_inner().container_id)?;
        Ok(Response::new(pb::ContainerStatusResponse {
            status: Some(convert::container_status(&c)),
            info: HashMap::new(),
        }))
    }

    async fn update_container_resources(
        &self,
        request: Request<pb::UpdateContainerResourcesRequest>,
    ) -> Result<Response<pb::UpdateContainerResourcesResponse>, Status> {
        let request = request.into_inner();
        let c = self.container(&request.container_id)?;
        let limits = convert::limits(&request.linux.unwrap_or_default())?;
        self.containers.update_limits(&c, limits).await?;
        Ok(Response::new(pb::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        request: Request<pb::ReopenContainerLogRequest>,
    ) -> Result<Response<pb::ReopenContainerLogResponse>, Status> {
        let c = self.container(&request.into_inner().container_id)?;
        if c.record().state.status != ContainerStatus::Running {
            return Err(Status::failed_precondition(format!("container {} is not running", c.id)));
        }
        self.containers.reopen_log(&c).await?;
        Ok(Response::new(pb::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, request: Request<pb::ExecSyncRequest>) -> Result<Response<pb::ExecSyncResponse>, Status> {
        let request = request.into_inner();
        let c = self.container(&request.container_id)?;
        if request.timeout < 0 {
            return Err(Status::invalid_argument("the ExecSync timeout must not be negative"));
        }
        // The input stream ends the exec at the timeout: a cancelled session kills its process.
        let timed_out = Arc::new(AtomicBool::new(false));
        let input = if request.timeout > 0 {
            let (timeout, flag) = (Duration::from_secs(request.timeout as u64), timed_out.clone());
            futures::stream::once(async move {
                tokio::time::sleep(timeout).await;
                flag.store(true, Ordering::SeqCst);
                Err(crate::containers::InputBreak::Cancelled)
            })
            .chain(futures::stream::pending())
            .boxed()
        } else {
            futures::stream::pending().boxed()
        };
        let exec = ExecRequest { container: c.id.clone(), argv: request.cmd, ..Default::default() };
        let mut outputs = self.containers.exec(exec, input).await?;
        let (mut stdout, mut stderr, mut exit_code) = (Vec::new(), Vec::new(), None);
        while let Some(out) = outputs.recv().await {
            match out? {
                SessionOutput::Stdout(d) => stdout.extend(d),
                SessionOutput::Stderr(d) => stderr.extend(d),
                SessionOutput::Exit(e) => {
                    exit_code = Some(e.code);
                    break;
                }
                SessionOutput::Started { .. } => {}
            }
        }
        if timed_out.load(Ordering::SeqCst) {
            return Err(Status::deadline_exceeded(format!(
                "command timed out after {}s and was killed",
                request.timeout
            )));
        }
        let exit_code = exit_code.ok_or_else(|| Status::aborted("the exec ended without an exit status"))?;
        Ok(Response::new(pb::ExecSyncResponse { stdout, stderr, exit_code }))
    }

    async fn exec(&self, request: Request<pb::ExecRequest>) -> Result<Response<pb::ExecResponse>, Status> {
        let r = request.into_inner();
        let c = self.running(&r.container_id)?;
        if r.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd must name the command to run"));
        }
        let streams = streams(r.stdin, r.stdout, r.stderr, r.tty)?;
        let exec =
            ExecRequest { container: c.id.clone(), argv: r.cmd, tty: r.tty, stdin: r.stdin, ..Default::default() };
        exec.validate()?;
        Ok(Response::new(pb::ExecResponse { url: self.url(Pending::Exec(exec, streams))? }))
    }

    async fn attach(&self, request: Request<pb::AttachRequest>) -> Result<Response<pb::AttachResponse>, Status> {
        let r = request.into_inner();
        let c = self.running(&r.container_id)?;
        let streams = streams(r.stdin, r.stdout, r.stderr, r.tty)?;
        if r.stdin && !c.record().config.stdin {
            return Err(Status::failed_precondition(format!(
                "container {} was not created with stdin: there is nothing to attach stdin to",
                c.id
            )));
        }
        let attach = AttachRequest { container: c.id.clone(), stdin: r.stdin, ..Default::default() };
        Ok(Response::new(pb::AttachResponse { url: self.url(Pending::Attach(attach, streams))? }))
    }

    async fn port_forward(
        &self,
        request: Request<pb::PortForwardRequest>,
    ) -> Result<Response<pb::PortForwardResponse>, Status> {
        let r = request.into_inner();
        if r.pod_sandbox_id.is_empty() {
            return Err(Status::invalid_argument("a pod sandbox id is required"));
        }
        let pod = self.pods.get(&r.pod_sandbox_id)?;
        if !self.ready(&pod) {
            return Err(Status::failed_precondition(format!("pod {} is not ready", pod.id)));
        }
        let netns = self.pods.netns(&pod);
        Ok(Response::new(pb::PortForwardResponse {
            url: self.url(Pending::PortForward { pod: pod.id.clone(), netns })?,
        }))
    }

    async fn container_stats(
        &self,
        request: Request<pb::ContainerStatsRequest>,
    ) -> Result<Response<pb::ContainerStatsResponse>, Status> {
        let c = self.container(&request.into_inner().container_id)?;
        Ok(Response::new(pb::ContainerStatsResponse { stats: Some(self.stats_of(&c)) }))
    }

    async fn list_container_stats(
        &self,
        request: Request<pb::ListContainerStatsRequest>,
    ) -> Result<Response<pb::ListContainerStatsResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let stats = self
            .cri_containers()
            .iter()
            .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
            .filter(|c| {
                filter.pod_sandbox_id.is_empty() || c.record().config.pod.pod_id.starts_with(&filter.pod_sandbox_id)
            })
            .filter(|c| convert::selects(&filter.label_selector, &c.record().config.labels))
            .map(|c| self.stats_of(c))
            .collect();
        Ok(Response::new(pb::ListContainerStatsResponse { stats }))
    }

    async fn stream_container_stats(
        &self,
        _r: Request<pb::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        Err(not_supported("StreamContainerStats"))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<pb::PodSandboxStatsRequest>,
    ) -> Result<Response<pb::PodSandboxStatsResponse>, Status> {
        let pod = self.pods.get(&request.into_inner().pod_sandbox_id)?;
        Ok(Response::new(pb::PodSandboxStatsResponse { stats: Some(self.pod_stats(&pod)) }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<pb::ListPodSandboxStatsRequest>,
    ) -> Result<Response<pb::ListPodSandboxStatsResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let stats = self
            .pods
            .list()
            .iter()
            .filter(|p| filter.id.is_empty() || p.id.starts_with(&filter.id))
            .filter(|p| convert::selects(&filter.label_selector, &p.record().spec.labels))
            .map(|p| self.pod_stats(p))
            .collect();
        Ok(Response::new(pb::ListPodSandboxStatsResponse { stats }))
    }

    async fn stream_pod_sandbox_stats(
        &self,
        _r: Request<pb::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        Err(not_supported("StreamPodSandboxStats"))
    }

    async fn update_runtime_config(
        &self,
        request: Request<pb::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<pb::UpdateRuntimeConfigResponse>, Status> {
        // The pod CIDR belongs to the CNI configuration, which cm reads from the CNI config directory.
        let cidr = request.into_inner().runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr);
        tracing::info!(pod_cidr = ?cidr, "UpdateRuntimeConfig (the CNI config decides pod addresses)");
        Ok(Response::new(pb::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let network = self.pods.network_ready();
        let conditions = vec![
            pb::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            pb::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: network.is_ok(),
                reason: if network.is_ok() { String::new() } else { "NetworkPluginNotReady".into() },
                message: network.err().unwrap_or_default(),
            },
        ];
        let mut info = HashMap::new();
        if request.into_inner().verbose {
            info.insert("config".into(), r#"{"runtime":"cm","cgroupDriver":"cgroupfs"}"#.into());
        }
        Ok(Response::new(pb::StatusResponse {
            status: Some(pb::RuntimeStatus { conditions }),
            info,
            runtime_handlers: vec![pb::RuntimeHandler {
                name: String::new(),
                features: Some(pb::RuntimeHandlerFeatures::default()),
            }],
            features: Some(pb::RuntimeFeatures::default()),
        }))
    }

    async fn checkpoint_container(
        &self,
        _r: Request<pb::CheckpointContainerRequest>,
    ) -> Result<Response<pb::CheckpointContainerResponse>, Status> {
        Err(not_supported("CheckpointContainer"))
    }

    async fn checkpoint_pod(
        &self,
        _r: Request<pb::CheckpointPodRequest>,
    ) -> Result<Response<pb::CheckpointPodResponse>, Status> {
        Err(not_supported("CheckpointPod"))
    }

    async fn restore_pod(
        &self,
        _r: Request<pb::RestorePodRequest>,
    ) -> Result<Response<pb::RestorePodResponse>, Status> {
        Err(not_supported("RestorePod"))
    }

    async fn get_container_events(
        &self,
        _r: Request<pb::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Err(not_supported("GetContainerEvents"))
    }

    async fn list_metric_descriptors(
        &self,
        _r: Request<pb::ListMetricDescriptorsRequest>,
    ) -> Result<Response<pb::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(pb::ListMetricDescriptorsResponse { descriptors: vec![] }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _r: Request<pb::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<pb::ListPodSandboxMetricsResponse>, Status> {
        Ok(Response::new(pb::ListPodSandboxMetricsResponse { pod_metrics: vec![] }))
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _r: Request<pb::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        Err(not_supported("StreamPodSandboxMetrics"))
    }

    async fn runtime_config(
        &self,
        _r: Request<pb::RuntimeConfigRequest>,
    ) -> Result<Response<pb::RuntimeConfigResponse>, Status> {
        Ok(Response::new(pb::RuntimeConfigResponse {
            linux: Some(pb::LinuxRuntimeConfiguration { cgroup_driver: pb::CgroupDriver::Cgroupfs as i32 }),
        }))
    }

    async fn update_pod_sandbox_resources(
        &self,
        _r: Request<pb::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<pb::UpdatePodSandboxResourcesResponse>, Status> {
        Err(not_supported("UpdatePodSandboxResources"))
    }
}

/// The CRI's seccomp profile as cm's: unset is unconfined (the kubelet's default, as containerd reads it),
/// RuntimeDefault docker's default profile, Localhost a profile file on the node in docker's format.
fn seccomp(profile: Option<&pb::SecurityProfile>) -> Result<Seccomp, Status> {
    use pb::security_profile::ProfileType;
    let Some(profile) = profile else { return Ok(Seccomp::Unconfined) };
    match ProfileType::try_from(profile.profile_type) {
        Ok(ProfileType::RuntimeDefault) => Ok(Seccomp::Default),
        Ok(ProfileType::Unconfined) => Ok(Seccomp::Unconfined),
        Ok(ProfileType::Localhost) => {
            let path = &profile.localhost_ref;
            let meta = std::fs::metadata(path)
                .map_err(|e| Status::invalid_argument(format!("seccomp profile {path:?}: {e}")))?;
            if meta.len() > crate::containers::MAX_SECCOMP_PROFILE as u64 {
                return Err(Status::invalid_argument(format!("seccomp profile {path:?} is larger than 1 MiB")));
            }
            std::fs::read_to_string(path)
                .map(Seccomp::Profile)
                .map_err(|e| Status::invalid_argument(format!("seccomp profile {path:?}: {e}")))
        }
        Err(_) => Err(Status::invalid_argument(format!("unknown seccomp profile type {}", profile.profile_type))),
    }
}
