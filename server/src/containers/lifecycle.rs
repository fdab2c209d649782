//! A container's life: start (bundle, monitor, network), the exit watch and its record, wait, kill, stop and
//! remove.

use std::sync::Arc;
use std::time::Duration;

use super::error::io;
use super::{
    Config, Container, ContainerError, ContainerStatus, Containers, ExitRecord, MountConfig, State, etc, record,
    recorded_exit, remove_cgroup, signal_name,
};
use crate::cgroups::{Cgroup, Layout};
use crate::clock::now_nanos;
use crate::network::{Endpoint, NetworkDriver, PortConfig};
use crate::runtime::bundle::{self, Bundle, ExitInfo, Process, Rootfs};
use crate::runtime::client::{self, Connection};
use crate::runtime::protocol::{FromMonitor, ToMonitor};

impl Containers {
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
            return Err(ContainerError::AlreadyRunning(c.shown()));
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
            &self.cgroup_parent_of(&record),
            &c.id,
            &config.limits,
        )
        .map_err(ContainerError::Limits)?;
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
        let etc_files = match &config.pod.etc_dir {
            // A pod's containers share its files.
            Some(dir) => ["hosts", "hostname", "resolv.conf"]
                .iter()
                .map(|name| (dir.join(name), format!("/etc/{name}")))
                .filter(|(file, _)| file.exists())
                .collect(),
            None => {
                etc::write_files(&c.dir, config, network.shares_host_namespace()).map_err(io("writing /etc files"))?
            }
        };
        let mut lower: Vec<String> =
            config.chain_ids.iter().rev().map(|id| id.trim_start_matches("sha256:").to_string()).collect();
        if lower.is_empty() {
            std::fs::create_dir_all(c.dir.join("empty")).map_err(io("creating an empty layer"))?;
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
            capabilities: match (config.pod.capabilities, &self.layout) {
                (Some(set), _) => set,
                (None, Layout::V1 { .. }) => bundle::DEFAULT_CAPABILITIES,
                (None, Layout::V2 { .. }) => bundle::DEFAULT_CAPABILITIES & !bundle::CAP_MKNOD,
            },
            cgroup_v2: matches!(self.layout, Layout::V2 { .. }),
            etc_files,
            mounts: config.mounts.iter().map(MountConfig::to_bundle).collect(),
            log: self.options.log_limits,
            join_namespaces: config.pod.join_namespaces.clone(),
            holder: config.pod.holder,
            cri_log: config.pod.cri_log.clone(),
        };
        let bytes =
            serde_json::to_vec(&bundle).map_err(|e| ContainerError::Internal(format!("encoding the bundle: {e}")))?;
        crate::store::write_replace(&c.dir.join(bundle::BUNDLE_FILE), &bytes).map_err(io("writing the bundle"))?;
        let init_pid = client::spawn_monitor(&self.monitor, &c.dir).await.map_err(io("spawning the monitor"))?;
        // The init exists in its namespaces and waits for Start: connect it to its network now.
        let endpoint = Endpoint { id: &c.id, pid: init_pid, address: config.address, ports: &config.ports };
        let ports = network.attach(endpoint).await?.ports;
        // The watcher connects first so it sees the whole life of the process.
        let watcher = client::connect(&c.dir).await.map_err(io("connecting to the monitor"))?;
        let mut session = client::connect(&c.dir).await.map_err(io("connecting to the monitor"))?;
        // A terminal is never 0x0: without a size from the client it starts at 24x80.
        let (rows, cols) = match attach {
            Some((r, c)) if r > 0 && c > 0 => (r, c),
            _ => (24, 80),
        };
        if attach.is_some() {
            session.writer.send(ToMonitor::Attach).await.map_err(io("attaching"))?;
        }
        session.writer.send(ToMonitor::Start { rows, cols }).await.map_err(io("starting"))?;
        let pid = match session.reader.next().await.map_err(io("starting"))? {
            Some(FromMonitor::Started { pid }) => pid,
            other => return Err(ContainerError::Internal(format!("the monitor answered {other:?} to start"))),
        };
        Ok((pid, ports, attach.map(|_| session), watcher))
    }

    /// Waits (in a task) for the container's exit frame, then records it.
    pub(super) fn watch_exit(self: &Arc<Self>, c: Arc<Container>, mut conn: Connection) {
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
    pub(super) async fn exited(self: &Arc<Self>, c: &Arc<Container>, exit: ExitInfo) {
        // Held until the network is taken down too, so a start cannot slip in between.
        let lifecycle = c.lifecycle.lock().await;
        let cgroup = self.cgroup(c);
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

    /// Changes a container's limits: recorded for its next start, and applied to its cgroup if it runs.
    pub async fn update_limits(
        &self,
        c: &Arc<Container>,
        limits: crate::cgroups::Limits,
    ) -> Result<(), ContainerError> {
        limits.validate().map_err(ContainerError::Invalid)?;
        let _lifecycle = c.lifecycle.lock().await;
        if c.record().state.status == ContainerStatus::Running {
            self.cgroup(c).update(&limits).map_err(ContainerError::Limits)?;
        }
        c.update(|r| {
            let l = &mut r.config.limits;
            l.memory_bytes = limits.memory_bytes.or(l.memory_bytes);
            l.cpu_millis = limits.cpu_millis.or(l.cpu_millis);
            l.pids = limits.pids.or(l.pids);
        })
    }

    /// Asks the monitor to open the container's CRI log file again (after the kubelet rotated it).
    pub async fn reopen_log(&self, c: &Arc<Container>) -> Result<(), ContainerError> {
        let mut conn = self.connect(c).await?;
        conn.writer.send(ToMonitor::ReopenLog).await.map_err(ContainerError::MonitorLost)?;
        loop {
            match conn.reader.next().await.map_err(ContainerError::MonitorLost)? {
                Some(FromMonitor::Started { .. }) => return Ok(()),
                Some(FromMonitor::Stderr(why)) => {
                    return Err(ContainerError::Internal(String::from_utf8_lossy(&why).into_owned()));
                }
                Some(_) => continue,
                None => return Err(ContainerError::Stopped(c.shown())),
            }
        }
    }

    /// Waits for the container's main process to exit; returns at once if it has.
    pub async fn wait(&self, c: &Arc<Container>) -> Result<ExitRecord, ContainerError> {
        let mut rx = c.exited.subscribe();
        if c.record().state.status == ContainerStatus::Created {
            return Err(ContainerError::NeverStarted(c.shown()));
        }
        let result = rx.wait_for(|e| e.is_some()).await;
        match result {
            Ok(exit) => Ok(exit.clone().expect("waited for some")),
            Err(_) => Err(ContainerError::WaitAborted),
        }
    }

    /// Connects to a running container's monitor.
    pub async fn connect(&self, c: &Arc<Container>) -> Result<Connection, ContainerError> {
        if c.record().state.status != ContainerStatus::Running {
            return Err(ContainerError::NotRunning(c.shown()));
        }
        client::connect(&c.dir).await.map_err(|source| ContainerError::Unreachable { container: c.shown(), source })
    }

    /// Sends a signal to the main process.
    pub async fn kill(&self, c: &Arc<Container>, signal: &str) -> Result<(), ContainerError> {
        let sig = record::parse_signal(signal).map_err(ContainerError::Invalid)?;
        let mut conn = self.connect(c).await?;
        conn.writer.send(ToMonitor::Signal(sig)).await.map_err(io("sending the signal"))?;
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
                return Err(ContainerError::RemoveRunning(c.shown()));
            }
            let _ = self.kill(c, "SIGKILL").await;
            let _ = tokio::time::timeout(Duration::from_secs(10), self.wait(c)).await;
        }
        let _lifecycle = c.lifecycle.lock().await;
        // Listed until everything of it is gone: a container that `ps -a` no longer shows has no directory,
        // cgroup or address left (and a removal that fails leaves it listed, to be removed again).
        if !self.table.lock().unwrap().contains_key(&c.id) {
            return Ok(()); // removed meanwhile (auto-remove)
        }
        let _ = remove_cgroup(self.cgroup(c)).await;
        if let Ok(network) = self.network_of(&c.record()) {
            network.release(&c.id);
        }
        let dir = c.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir))
            .await
            .map_err(|e| ContainerError::Internal(format!("removing the container directory: {e}")))?
            .map_err(io("removing the container directory"))?;
        self.table.lock().unwrap().remove(&c.id);
        tracing::info!(container = %c.id, "removed");
        self.publish(c, "destroy", |e| e);
        Ok(())
    }
}
