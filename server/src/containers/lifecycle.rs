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
        match record.state.status {
            ContainerStatus::Running => return Err(ContainerError::AlreadyRunning(c.shown())),
            ContainerStatus::Damaged => {
                return Err(ContainerError::Damaged { container: c.shown(), reason: record.state.damage });
            }
            _ => {}
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
        if config.privileges.privileged
            && let Err(e) = cgroup.allow_all_devices()
        {
            let _ = remove_cgroup(cgroup).await;
            return Err(ContainerError::Limits(e));
        }
        let result = self.launch(c, config, &*network, &cgroup, attach).await;
        match result {
            Ok((pid, ports, session, mut watcher)) => {
                // Running is recorded before the exit watcher starts: a process that exits at once must not
                // have its exit overwritten.
                let before = c.record().state;
                let saved = c.update(|r| {
                    r.state = State {
                        status: ContainerStatus::Running,
                        pid,
                        started_unix_nanos: now_nanos(),
                        exit: None,
                        ports: ports.clone(),
                        damage: String::new(),
                    };
                });
                if let Err(e) = saved {
                    // A start the record cannot say happened (a full disk) is undone: a restarted server
                    // must not find a running container its record says is stopped.
                    c.record.lock().unwrap().state = before;
                    end_monitor(&mut watcher).await;
                    let _ = remove_cgroup(cgroup).await;
                    network.detach(&c.id).await;
                    return Err(e);
                }
                let _ = c.exited.send_replace(None);
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
        // Docker's default set with CAP_MKNOD on v1 and v2 alike (the devices cgroup on v1, the device filter
        // program on v2, refuses the nodes a container must not use), then --cap-add and --cap-drop.
        // A pod's container (the CRI) starts from the set its pod gave it instead.
        let base = config.pod.capabilities.unwrap_or(bundle::DEFAULT_CAPABILITIES);
        let capabilities = config.privileges.capabilities(base).map_err(ContainerError::Invalid)?;
        // Compiled for the container's final capabilities, as docker's profile has groups for some; a
        // privileged container has no seccomp filter (as docker's --privileged).
        let seccomp = if config.privileges.privileged {
            Vec::new()
        } else {
            config.security.seccomp_filters(capabilities).map_err(ContainerError::Invalid)?
        };
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
            capabilities,
            cgroup_v2: matches!(self.layout, Layout::V2 { .. }),
            etc_files,
            mounts: config.mounts.iter().map(MountConfig::to_bundle).collect(),
            log: self.options.log_limits,
            seccomp,
            no_new_privileges: config.security.no_new_privileges,
            privileged: config.privileges.privileged,
            read_only_rootfs: config.privileges.read_only_rootfs,
            id_map: config.id_map,
            join_namespaces: config.pod.join_namespaces.clone(),
            holder: config.pod.holder,
            cri_log: config.pod.cri_log.clone(),
        };
        let bytes =
            serde_json::to_vec(&bundle).map_err(|e| ContainerError::Internal(format!("encoding the bundle: {e}")))?;
        crate::store::write_replace(&c.dir.join(bundle::BUNDLE_FILE), &bytes).map_err(io("writing the bundle"))?;
        let init_pid = client::spawn_monitor(&self.monitor, &c.dir).await.map_err(io("spawning the monitor"))?;
        // The watcher connects first so it sees the whole life of the process; if the start fails from here
        // on, it ends the monitor and waits until it is gone, so a failed start leaves no process behind.
        let mut watcher = client::connect(&c.dir).await.map_err(io("connecting to the monitor"))?;
        match self.go(c, config, network, init_pid, attach).await {
            Ok((pid, ports, session)) => Ok((pid, ports, session, watcher)),
            Err(e) => {
                end_monitor(&mut watcher).await;
                Err(e)
            }
        }
    }

    /// The second half of a start: the init (waiting in its namespaces) joins its network, then the monitor
    /// lets it run; the process's pid, the ports bound and, with `attach`, the session connection.
    async fn go(
        &self,
        c: &Arc<Container>,
        config: &Config,
        network: &dyn NetworkDriver,
        init_pid: i32,
        attach: Option<(u16, u16)>,
    ) -> Result<(i32, Vec<PortConfig>, Option<Connection>), ContainerError> {
        let endpoint = Endpoint { id: &c.id, pid: init_pid, address: config.address, ports: &config.ports };
        let ports = network.attach(endpoint).await?.ports;
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
        let pid = loop {
            match session.reader.next().await.map_err(io("starting"))? {
                Some(FromMonitor::Started { pid }) => break pid,
                Some(FromMonitor::LogDropped(_)) => continue,
                // The init's setup failed (a mount, the user, the working directory ...): the start did not.
                Some(FromMonitor::Exit(exit)) => {
                    return Err(ContainerError::SetupFailed { container: c.shown(), reason: exit.error });
                }
                other => return Err(ContainerError::Internal(format!("the monitor answered {other:?} to start"))),
            }
        };
        Ok((pid, ports, attach.map(|_| session)))
    }

    /// Waits (in a task) for the container's exit frame, then records it.
    pub(super) fn watch_exit(self: &Arc<Self>, c: Arc<Container>, mut conn: Connection) {
        let containers = self.clone();
        tokio::spawn(async move {
            let exit = loop {
                match conn.reader.next().await {
                    Ok(Some(FromMonitor::Exit(exit))) => break exit,
                    Ok(Some(FromMonitor::LogDropped(bytes))) => {
                        let before = c.log_dropped.swap(bytes, std::sync::atomic::Ordering::Relaxed);
                        if bytes > before {
                            tracing::warn!(container = %c.id, bytes, "output that the log could not take (disk full)");
                            containers.publish(&c, "log_dropped", |e| e.with("bytes", bytes.to_string()));
                        }
                    }
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
        if let Err(e) = c.update(|r| {
            r.state.status = ContainerStatus::Stopped;
            r.state.exit = Some(record.clone());
            r.state.ports.clear();
        }) {
            // Known here and shown by Inspect; on disk once there is space.
            tracing::warn!(container = %c.id, error = %e, "cannot save the exit status yet; retrying");
            c.save_later();
        }
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

    /// Removes a container and everything it made. A running (or damaged) one needs `force`; it is killed
    /// first. Crash-safe: a tombstone is written before anything goes, and the directory is renamed away
    /// before it is deleted, so a server killed at any point finishes the removal when it starts again.
    pub async fn remove(&self, c: &Arc<Container>, force: bool) -> Result<(), ContainerError> {
        let state = c.record().state;
        match state.status {
            ContainerStatus::Running | ContainerStatus::Damaged if !force => {
                return Err(match state.status {
                    ContainerStatus::Damaged => {
                        ContainerError::Damaged { container: c.shown(), reason: state.damage.clone() }
                    }
                    _ => ContainerError::RemoveRunning(c.shown()),
                });
            }
            ContainerStatus::Running => {
                let _ = self.kill(c, "SIGKILL").await;
                let _ = tokio::time::timeout(Duration::from_secs(10), self.wait(c)).await;
            }
            _ => {}
        }
        let _lifecycle = c.lifecycle.lock().await;
        // Listed until everything of it is gone: a container that `ps -a` no longer shows has no directory,
        // cgroup or address left (and a removal that fails leaves it listed, to be removed again).
        if !self.table.lock().unwrap().contains_key(&c.id) {
            return Ok(()); // removed meanwhile (auto-remove)
        }
        if let Err(e) = crate::store::write_atomic(&c.dir.join(record::TOMBSTONE_FILE), b"") {
            tracing::warn!(container = %c.id, error = %e, "cannot write the removal's tombstone; removing anyway");
        }
        self.finish_removal(&c.id, &c.dir).await?;
        self.table.lock().unwrap().remove(&c.id);
        tracing::info!(container = %c.id, "removed");
        self.publish(c, "destroy", |e| e);
        Ok(())
    }

    /// Takes away everything of container `id` (directory `dir`): a monitor still running (a damaged
    /// container's, or one left by a removal a server did not finish) and its processes, its cgroup, what
    /// any network holds for it, then the directory, renamed away first.
    pub(super) async fn finish_removal(&self, id: &str, dir: &std::path::Path) -> Result<(), ContainerError> {
        if let Ok(mut monitor) = client::connect(dir).await {
            end_monitor(&mut monitor).await;
        }
        // Its pod's cgroup directory, as its record says (the server's when the record is unreadable).
        let parent = match crate::store::read_json::<record::Record>(&dir.join(record::RECORD_FILE)) {
            Ok(Some(record)) => self.cgroup_parent_of(&record),
            _ => self.options.cgroup_parent.clone(),
        };
        let _ = remove_cgroup(Cgroup::open_with(self.cgroup_fs.clone(), &self.layout, &parent, id)).await;
        for network in self.options.networks.all() {
            network.detach(id).await;
            network.release(id);
        }
        let deleting = self.dir.join(format!("{}{id}", record::DELETING_PREFIX));
        std::fs::rename(dir, &deleting).map_err(io("renaming the container directory for deletion"))?;
        if let Ok(parent) = std::fs::File::open(&self.dir) {
            let _ = parent.sync_all();
        }
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&deleting))
            .await
            .map_err(|e| ContainerError::Internal(format!("removing the container directory: {e}")))?
            .map_err(io("removing the container directory"))
    }
}

/// Ends a monitor whose start failed: its init is killed (if it still runs) and the call returns once the
/// monitor has exited (its connections close), bounded in time.
async fn end_monitor(watcher: &mut Connection) {
    let _ = watcher.writer.send(ToMonitor::Signal(nix::libc::SIGKILL)).await;
    let drained = async { while let Ok(Some(_)) = watcher.reader.next().await {} };
    if tokio::time::timeout(Duration::from_secs(10), drained).await.is_err() {
        tracing::warn!("a monitor whose start failed did not exit within 10 s");
    }
}
