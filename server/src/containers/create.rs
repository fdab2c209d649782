//! Creating a container from a spec (image defaults, server defaults and the rules applied), and Run: create
//! and start, removing what could not start.

use std::sync::Arc;

use super::error::io;
use super::{
    Config, Container, ContainerError, Containers, MountConfig, Network, PodSettings, Privileges, Record, State,
    no_nul, record,
};
use crate::cgroups::Limits;
use crate::clock::now_nanos;
use crate::network::PortConfig;

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
    pub security: super::Security,
    /// Capabilities, privileged mode, read-only root, user namespace.
    pub privileges: Privileges,
    /// Pod membership (the CRI): namespaces joined, the pod's cgroup, /etc files and log.
    pub pod: PodSettings,
}

impl CreateSpec {
    /// Refuses text no process, path or host name can carry.
    pub fn validate(&self) -> Result<(), ContainerError> {
        no_nul("entrypoint", self.entrypoint.iter().flatten().map(String::as_str))?;
        no_nul("command", self.command.iter().map(String::as_str))?;
        no_nul("env", self.env.iter().map(String::as_str))?;
        no_nul("workdir", [self.workdir.as_str()])?;
        no_nul("user", [self.user.as_str()])?;
        no_nul("hostname", [self.hostname.as_str()])?;
        no_nul("mounts.source", self.mounts.iter().map(|m| m.source.to_str().unwrap_or_default()))?;
        no_nul("mounts.target", self.mounts.iter().map(|m| m.target.as_str()))?;
        crate::runtime::user::check_spec(&self.user).map_err(ContainerError::Invalid)?;
        self.security.validate().map_err(ContainerError::Invalid)?;
        if !self.hostname.is_empty() {
            record::validate_hostname(&self.hostname).map_err(ContainerError::Invalid)?;
        }
        self.privileges.validate().map_err(ContainerError::Invalid)?;
        if self.privileges.user_namespace == super::UserNamespace::Auto && self.network == Network::Host {
            // As docker: the host's network namespace belongs to the host's user namespace.
            return Err(ContainerError::Invalid(
                "a container with its own user namespace (--userns auto) cannot use --network host".into(),
            ));
        }
        if let Some(parent) = &self.pod.cgroup_parent
            && (parent.is_empty() || parent == "." || parent == ".." || parent.contains(['/', '\0']))
        {
            return Err(ContainerError::Invalid(format!(
                "cgroup parent {parent:?} must be a single non-empty path component"
            )));
        }
        if let Some(bad) = self.pod.join_namespaces.iter().find(|j| j.flag().is_none()) {
            return Err(ContainerError::Invalid(format!(
                "cannot join a {:?} namespace (net, ipc, uts or pid)",
                bad.kind
            )));
        }
        Ok(())
    }
}

impl Containers {
    /// Creates a container (not started).
    pub fn create(&self, spec: CreateSpec) -> Result<Arc<Container>, ContainerError> {
        spec.validate()?;
        if !spec.name.is_empty() {
            record::validate_name(&spec.name).map_err(ContainerError::Invalid)?;
        }
        let limits = Limits {
            memory_bytes: spec.limits.memory_bytes.or(self.options.default_limits.memory_bytes),
            cpu_millis: spec.limits.cpu_millis.or(self.options.default_limits.cpu_millis),
            pids: spec.limits.pids.or(self.options.default_limits.pids),
        };
        limits.validate().map_err(ContainerError::Invalid)?;
        // A pod's holder runs no image: its root is an empty layer and its init only holds the namespaces.
        let (image_id, chain_ids, image_config) = if spec.pod.holder {
            (String::new(), Vec::new(), Default::default())
        } else {
            let image = self.images.resolve(&spec.image).map_err(|e| match e {
                source @ crate::image::ImageError::NotFound(_) => {
                    ContainerError::ImageNotPulled { image: spec.image.clone(), source }
                }
                other => ContainerError::Image(other),
            })?;
            let config = self
                .images
                .read_blob(&image.id)
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice::<crate::image::manifest::ImageConfig>(&b).ok())
                .and_then(|c| c.config)
                .unwrap_or_default();
            (image.id.clone(), image.layers.iter().map(|l| l.chain_id.clone()).collect(), config)
        };
        let image_config: crate::image::manifest::RunConfig = image_config;
        let args = record::command_line(&spec, &image_config);
        if args.is_empty() && !spec.pod.holder {
            return Err(ContainerError::Invalid(format!(
                "no command given and image {} has neither Entrypoint nor Cmd",
                spec.image
            )));
        }
        for m in &spec.mounts {
            m.validate().map_err(ContainerError::Invalid)?;
        }
        let network = self.options.networks.get(spec.network.name());
        if !spec.ports.is_empty() && network.as_ref().is_ok_and(|n| !n.publishes_ports()) {
            return Err(ContainerError::Invalid("published ports need the bridge network (--network bridge)".into()));
        }
        PortConfig::check_unique(&spec.ports).map_err(ContainerError::Invalid)?;
        let network = network?;
        let id = record::new_id().map_err(io("making an id"))?;
        let config = Config {
            name: spec.name.clone(),
            image: spec.image.clone(),
            image_id,
            chain_ids,
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
            privileges: spec.privileges.clone(),
            id_map: None,
            created_unix_nanos: now_nanos(),
            security: spec.security.clone(),
            pod: spec.pod.clone(),
            id,
        };
        record::parse_signal(&config.stop_signal).map_err(ContainerError::Invalid)?;
        // The name check and the insertion happen under one lock: two creates cannot take the same name.
        let mut table = self.table.lock().unwrap();
        if !config.name.is_empty() && table.values().any(|c| c.record.lock().unwrap().config.name == config.name) {
            return Err(ContainerError::NameInUse(config.name.clone()));
        }
        let mut config = config;
        if config.privileges.user_namespace == super::UserNamespace::Auto {
            let used: Vec<super::IdMap> =
                table.values().filter_map(|c| c.record.lock().unwrap().config.id_map).collect();
            config.id_map =
                Some(super::subids::allocate_map(&self.options.subid_user, &used).map_err(ContainerError::Invalid)?);
        }
        config.address = network.allocate(&config.id)?;
        let dir = self.dir.join(&config.id);
        let record = Record { config, state: State::default() };
        let saved = ["upper", "work", "merged"]
            .iter()
            .try_for_each(|sub| std::fs::create_dir_all(dir.join(sub)))
            // The root filesystem's own files (the upper dir) belong to the container's root.
            .and_then(|()| match record.config.id_map {
                Some(map) => ["upper", "work"]
                    .iter()
                    .try_for_each(|sub| std::os::unix::fs::chown(dir.join(sub), Some(map.uid), Some(map.gid))),
                None => Ok(()),
            })
            .and_then(|()| crate::store::write_json(&dir.join(record::RECORD_FILE), &record));
        if let Err(e) = saved {
            network.release(&record.config.id);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(ContainerError::Io { what: "saving the container", source: e });
        }
        let container = self.container(record, dir);
        table.insert(container.id.clone(), container.clone());
        drop(table);
        tracing::info!(container = %container.id, "created");
        self.publish(&container, "create", |e| e);
        Ok(container)
    }

    /// Creates and starts a container; one that cannot start is removed again.
    pub async fn run(self: &Arc<Self>, spec: CreateSpec) -> Result<Arc<Container>, ContainerError> {
        let c = self.create(spec)?;
        if let Err(e) = self.start(&c, None).await {
            let _ = self.remove(&c, true).await;
            return Err(e);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_with_a_nul_byte_are_refused_naming_the_field() {
        let spec = CreateSpec { image: "busybox".into(), command: vec!["sh".into()], ..Default::default() };
        assert!(spec.validate().is_ok());
        let refusal = |s: CreateSpec| s.validate().unwrap_err().to_string();
        let command = CreateSpec { command: vec!["a\0b".into()], ..spec.clone() };
        assert_eq!(refusal(command), "command must not contain a NUL byte");
        let entrypoint = CreateSpec { entrypoint: Some(vec!["\0".into()]), ..spec.clone() };
        assert_eq!(refusal(entrypoint), "entrypoint must not contain a NUL byte");
        assert_eq!(refusal(CreateSpec { env: vec!["A=\0".into()], ..spec.clone() }), "env must not contain a NUL byte");
        assert_eq!(
            refusal(CreateSpec { hostname: "h\0".into(), ..spec.clone() }),
            "hostname must not contain a NUL byte"
        );
        assert_eq!(refusal(CreateSpec { user: "\0".into(), ..spec.clone() }), "user must not contain a NUL byte");
        assert_eq!(refusal(CreateSpec { workdir: "/\0".into(), ..spec }), "workdir must not contain a NUL byte");
    }

    #[test]
    fn hostnames_are_rfc_1123_and_ids_are_in_range() {
        let spec = CreateSpec { image: "busybox".into(), ..Default::default() };
        for good in ["box-x", "web1", "a.b-c.d", &"x".repeat(63)] {
            assert!(CreateSpec { hostname: good.into(), ..spec.clone() }.validate().is_ok(), "{good}");
        }
        for bad in ["a\nb", "evil\n10.0.0.1 host", "-a", "a-", "a..b", "a b", "a_b", &"x".repeat(65)] {
            let e = CreateSpec { hostname: bad.into(), ..spec.clone() }.validate().unwrap_err().to_string();
            assert!(e.contains("invalid hostname") && e.len() < 250, "{bad:?}: {e}");
        }
        for bad in ["4294967295", "65534:4294967295"] {
            let e = CreateSpec { user: bad.into(), ..spec.clone() }.validate().unwrap_err().to_string();
            assert!(e.contains("out of range"), "{bad}: {e}");
        }
    }
}
