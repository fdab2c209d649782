//! CNI (the Container Network Interface, spec 1.0): the [`PodNetwork`] of pods. The network is the first
//! config, by file name, in the configuration directory (`.conf`, `.conflist` or `.json`; a single plugin
//! config is a list of one), read again at every call so a config written after start is picked up. Its
//! plugins are executables found in the plugin directories: each gets CNI_COMMAND, CNI_CONTAINERID,
//! CNI_NETNS, CNI_IFNAME, CNI_ARGS (the K8S_POD_* names) and CNI_PATH in its environment and its own config on
//! stdin, with the list's name and cniVersion, the previous plugin's result as prevResult, and
//! runtimeConfig.portMappings when it declares that capability.
//!
//! ADD runs the plugins in order, each given the result of the one before; DEL runs them in reverse; CHECK
//! in order with the final result. Before each ADD the plugins answer VERSION and must support the
//! config's cniVersion. Every call has a deadline: a plugin that overruns is killed with its process group.
//!
//! What ADD used and gave (the config, the interface, the result) is cached under the server's state
//! directory before the first plugin runs and updated when the last one returns, so a DEL after a crash, or
//! after the config changed, runs the same plugins with the same prevResult. A failed ADD runs DEL at once:
//! nothing is left behind.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::NetError;
use super::driver::BoxFuture;
use super::pod::{PodNetwork, PodNetworkRequest, PodNetworkStatus};
use crate::store;

/// Where CNI configs are read from when the server is given none.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// Where CNI plugins are looked for when the server is given none.
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
/// How long one plugin call may take.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest plugin output we read (a result is a few KiB).
const MAX_OUTPUT: u64 = 1 << 20;

/// Settings of the CNI driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniOptions {
    /// The configuration directory; its first config is the pods' network.
    pub conf_dir: PathBuf,
    /// The directories plugins are looked for in, in order (also passed to plugins as CNI_PATH).
    pub bin_dirs: Vec<PathBuf>,
    /// Where the ADD results are cached, one file per pod (`<server root>/cni`).
    pub cache_dir: PathBuf,
    /// The deadline of one plugin call.
    pub plugin_timeout: Duration,
}

impl CniOptions {
    /// The options of a server whose state is under `root`, with the given directories (the defaults when
    /// None or empty: [`DEFAULT_CONF_DIR`], [`DEFAULT_BIN_DIR`]).
    pub fn new(root: &Path, conf_dir: Option<PathBuf>, bin_dirs: Vec<PathBuf>) -> Self {
        CniOptions {
            conf_dir: conf_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_CONF_DIR)),
            bin_dirs: if bin_dirs.is_empty() { vec![PathBuf::from(DEFAULT_BIN_DIR)] } else { bin_dirs },
            cache_dir: root.join("cni"),
            plugin_timeout: DEFAULT_PLUGIN_TIMEOUT,
        }
    }
}

/// The CNI driver.
pub struct Cni {
    options: CniOptions,
    /// VERSION answers, by plugin path (a plugin binary does not change its versions under a running server).
    versions: Mutex<HashMap<PathBuf, Vec<String>>>,
}

/// A network config list, as loaded from the configuration directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// The file it came from.
    pub file: PathBuf,
    pub name: String,
    pub cni_version: String,
    /// Whether CHECK is turned off for this network (`disableCheck`).
    pub disable_check: bool,
    /// The plugin configs, each with at least "type".
    pub plugins: Vec<Map<String, Value>>,
}

/// What the cache holds of a pod: enough to DEL exactly what ADD did.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedAttachment {
    network: NetworkConfig,
    ifname: String,
    netns: PathBuf,
    /// The final ADD result; None while ADD runs (a crash then leaves a DEL without prevResult).
    result: Option<Value>,
}

/// The CNI commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Add,
    Del,
    Check,
    Version,
}

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
        }
    }
}

impl Cni {
    /// A CNI driver with these settings. Nothing is read yet: [`PodNetwork::ready`] says whether a config is
    /// there.
    pub fn new(options: CniOptions) -> Self {
        Cni { options, versions: Mutex::new(HashMap::new()) }
    }

    pub fn options(&self) -> &CniOptions {
        &self.options
    }

    /// Loads the network: the first config by file name in the configuration directory.
    pub fn load(&self) -> Result<NetworkConfig, NetError> {
        load_first(&self.options.conf_dir)
    }

    fn cache_path(&self, pod_id: &str) -> PathBuf {
        self.options.cache_dir.join(format!("{pod_id}.json"))
    }

    fn read_cache(&self, pod_id: &str) -> Result<Option<CachedAttachment>, NetError> {
        let path = self.cache_path(pod_id);
        match store::read_json(&path) {
            Ok(c) => Ok(c),
            // A torn or foreign file cannot tell us what to delete; say so rather than guess.
            Err(e) => Err(NetError::System(anyhow!("cannot read the CNI cache {}: {e}", path.display()))),
        }
    }

    fn write_cache(&self, pod_id: &str, cached: &CachedAttachment) -> Result<(), NetError> {
        std::fs::create_dir_all(&self.options.cache_dir)
            .with_context(|| format!("cannot create the CNI cache directory {}", self.options.cache_dir.display()))?;
        let path = self.cache_path(pod_id);
        store::write_json(&path, cached).with_context(|| format!("cannot write the CNI cache {}", path.display()))?;
        Ok(())
    }

    fn remove_cache(&self, pod_id: &str) -> Result<(), NetError> {
        let path = self.cache_path(pod_id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetError::System(anyhow!("cannot remove the CNI cache {}: {e}", path.display()))),
        }
    }

    /// The executable of plugin `kind`: the first plugin directory holding it.
    fn find_plugin(&self, kind: &str) -> Result<PathBuf, NetError> {
        if kind.is_empty() || kind.contains('/') || kind == "." || kind == ".." {
            return Err(NetError::Invalid(format!("CNI plugin type {kind:?} is not a plugin name")));
        }
        for dir in &self.options.bin_dirs {
            let path = dir.join(kind);
            if let Ok(meta) = std::fs::metadata(&path) {
                use std::os::unix::fs::PermissionsExt;
                if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                    return Ok(path);
                }
            }
        }
        let dirs: Vec<String> = self.options.bin_dirs.iter().map(|d| d.display().to_string()).collect();
        Err(NetError::Unavailable(format!("CNI plugin {kind:?} not found in {}", dirs.join(", "))))
    }

    fn cni_path(&self) -> OsString {
        std::env::join_paths(&self.options.bin_dirs).unwrap_or_default()
    }

    /// Runs one plugin: `config` on stdin, the CNI variables in its environment. Gives its parsed stdout on
    /// success (None for an empty one, as DEL and CHECK may print nothing).
    async fn exec(
        &self,
        plugin: &Path,
        command: Command,
        env: &PluginEnv<'_>,
        config: &Value,
    ) -> Result<Option<Value>, NetError> {
        let name = plugin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let stdin = serde_json::to_vec(config).context("cannot encode a CNI config")?;
        let mut cmd = tokio::process::Command::new(plugin);
        cmd.env("CNI_COMMAND", command.as_str())
            .env("CNI_PATH", self.cni_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if command != Command::Version {
            cmd.env("CNI_CONTAINERID", env.container_id)
                .env("CNI_NETNS", env.netns)
                .env("CNI_IFNAME", env.ifname)
                .env("CNI_ARGS", &env.args);
        }
        let mut child = cmd.spawn().with_context(|| format!("cannot run CNI plugin {name} ({})", plugin.display()))?;
        let pid = child.id();
        let mut child_stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("piped").take(MAX_OUTPUT);
        let mut stderr = child.stderr.take().expect("piped").take(MAX_OUTPUT);
        let run = async {
            let write = async {
                if let Some(mut s) = child_stdin.take() {
                    // A plugin that does not read its config (VERSION) closes the pipe: not an error.
                    let _ = s.write_all(&stdin).await;
                }
            };
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let (_, o, e, status) =
                tokio::join!(write, stdout.read_to_end(&mut out), stderr.read_to_end(&mut err), child.wait());
            o?;
            e?;
            Ok::<_, io::Error>((status?, out, err))
        };
        let (status, out, err) = match tokio::time::timeout(self.options.plugin_timeout, run).await {
            Ok(r) => r.with_context(|| format!("CNI plugin {name} {}", command.as_str()))?,
            Err(_) => {
                if let Some(pid) = pid {
                    // The whole group: a plugin's helpers must not outlive it holding our pipes.
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.wait().await;
                return Err(NetError::System(anyhow!(
                    "CNI plugin {name} {} did not finish within {} s and was killed",
                    command.as_str(),
                    self.options.plugin_timeout.as_secs_f64()
                )));
            }
        };
        if !status.success() {
            return Err(NetError::System(anyhow!(
                "CNI plugin {name} {} failed ({status}): {}",
                command.as_str(),
                plugin_error(&out, &err)
            )));
        }
        if out.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let value: Value = serde_json::from_slice(&out).map_err(|e| {
            NetError::System(anyhow!(
                "CNI plugin {name} {} printed no JSON ({e}): {}",
                command.as_str(),
                String::from_utf8_lossy(&out).trim()
            ))
        })?;
        Ok(Some(value))
    }

    /// The plugin's supported versions (VERSION), asked once per plugin.
    async fn supported_versions(
        &self,
        plugin: &Path,
        env: &PluginEnv<'_>,
        version: &str,
    ) -> Result<Vec<String>, NetError> {
        if let Some(v) = self.versions.lock().unwrap_or_else(|e| e.into_inner()).get(plugin) {
            return Ok(v.clone());
        }
        let name = plugin.display();
        let out = self
            .exec(plugin, Command::Version, env, &json!({ "cniVersion": version }))
            .await?
            .ok_or_else(|| NetError::System(anyhow!("CNI plugin {name} answered VERSION with nothing")))?;
        let versions: Vec<String> = out
            .get("supportedVersions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .ok_or_else(|| {
                NetError::System(anyhow!("CNI plugin {name} answered VERSION without supportedVersions: {out}"))
            })?;
        self.versions.lock().unwrap_or_else(|e| e.into_inner()).insert(plugin.to_path_buf(), versions.clone());
        Ok(versions)
    }

    /// ADD of every plugin in order. Gives the final result, or the error and how many plugins were run (the
    /// failed one included), which are the ones to DEL.
    async fn add_all(
        &self,
        network: &NetworkConfig,
        pod: &PodNetworkRequest,
        env: &PluginEnv<'_>,
    ) -> Result<Value, (NetError, usize)> {
        let mut prev: Option<Value> = None;
        for (i, plugin) in network.plugins.iter().enumerate() {
            prev = Some(self.add_one(network, plugin, prev.as_ref(), pod, env).await.map_err(|(e, ran)| (e, i + ran))?);
        }
        prev.ok_or_else(|| (NetError::Invalid(format!("CNI network {} has no plugins", network.name)), 0))
    }

    /// ADD of one plugin; on error, whether it ran (0 or 1).
    async fn add_one(
        &self,
        network: &NetworkConfig,
        plugin: &Map<String, Value>,
        prev: Option<&Value>,
        pod: &PodNetworkRequest,
        env: &PluginEnv<'_>,
    ) -> Result<Value, (NetError, usize)> {
        let kind = plugin_type(plugin);
        let path = self.find_plugin(kind).map_err(|e| (e, 0))?;
        let versions = self.supported_versions(&path, env, &network.cni_version).await.map_err(|e| (e, 0))?;
        if !versions.iter().any(|v| v == &network.cni_version) {
            return Err((
                NetError::Unavailable(format!(
                    "CNI plugin {kind} does not support cniVersion {} of network {} (it supports {})",
                    network.cni_version,
                    network.name,
                    versions.join(", ")
                )),
                0,
            ));
        }
        let config = plugin_config(network, plugin, prev, pod);
        // A plugin that ran may have done part of its work before failing: it gets its DEL.
        let result = self.exec(&path, Command::Add, env, &config).await.map_err(|e| (e, 1))?;
        result.ok_or_else(|| (NetError::System(anyhow!("CNI plugin {kind} ADD printed no result")), 1))
    }

    /// DEL of every plugin in reverse order, each given `result` as prevResult. Every plugin runs even if
    /// one fails; the first error is returned.
    async fn del_all(
        &self,
        network: &NetworkConfig,
        pod: &PodNetworkRequest,
        env: &PluginEnv<'_>,
        result: Option<&Value>,
    ) -> Result<(), NetError> {
        self.del_first(network, network.plugins.len(), pod, env, result).await
    }

    /// DEL of the first `count` plugins, in reverse order.
    async fn del_first(
        &self,
        network: &NetworkConfig,
        count: usize,
        pod: &PodNetworkRequest,
        env: &PluginEnv<'_>,
        result: Option<&Value>,
    ) -> Result<(), NetError> {
        let mut first_error = None;
        for plugin in network.plugins[..count.min(network.plugins.len())].iter().rev() {
            let outcome = async {
                let path = self.find_plugin(plugin_type(plugin))?;
                let config = plugin_config(network, plugin, result, pod);
                self.exec(&path, Command::Del, env, &config).await
            }
            .await;
            if let Err(e) = outcome {
                tracing::warn!(pod = %pod.pod_id, plugin = plugin_type(plugin), error = %e, "CNI DEL failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The per-call part of a plugin's environment.
struct PluginEnv<'a> {
    container_id: &'a str,
    netns: &'a Path,
    ifname: &'a str,
    args: String,
}

impl<'a> PluginEnv<'a> {
    fn new(pod: &'a PodNetworkRequest, netns: &'a Path, ifname: &'a str) -> Self {
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            pod.pod_namespace, pod.pod_name, pod.pod_id, pod.pod_uid
        );
        PluginEnv { container_id: &pod.pod_id, netns, ifname, args }
    }
}

fn plugin_type(plugin: &Map<String, Value>) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or("")
}

/// One plugin's stdin: its config with the list's name and version, prevResult, and the runtime config of
/// the capabilities it declares.
fn plugin_config(
    network: &NetworkConfig,
    plugin: &Map<String, Value>,
    prev: Option<&Value>,
    pod: &PodNetworkRequest,
) -> Value {
    let mut config = plugin.clone();
    config.insert("name".into(), Value::String(network.name.clone()));
    config.insert("cniVersion".into(), Value::String(network.cni_version.clone()));
    match prev {
        Some(p) => {
            config.insert("prevResult".into(), p.clone());
        }
        None => {
            config.remove("prevResult");
        }
    }
    let wants_ports =
        plugin.get("capabilities").and_then(|c| c.get("portMappings")).and_then(Value::as_bool).unwrap_or(false);
    let mut runtime = Map::new();
    if wants_ports && !pod.port_mappings.is_empty() {
        let ports: Vec<Value> = pod
            .port_mappings
            .iter()
            .map(|p| {
                let mut m = json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": p.protocol,
                });
                if let Some(ip) = p.host_ip {
                    m["hostIP"] = Value::String(ip.to_string());
                }
                m
            })
            .collect();
        runtime.insert("portMappings".into(), Value::Array(ports));
    }
    if runtime.is_empty() {
        config.remove("runtimeConfig");
    } else {
        config.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(config)
}

/// A failed plugin's message: the CNI error object on stdout ({code, msg, details}), else its stderr.
fn plugin_error(stdout: &[u8], stderr: &[u8]) -> String {
    if let Ok(Value::Object(e)) = serde_json::from_slice::<Value>(stdout) {
        let msg = e.get("msg").and_then(Value::as_str).unwrap_or("");
        let details = e.get("details").and_then(Value::as_str).unwrap_or("");
        let code = e.get("code").map(|c| c.to_string()).unwrap_or_default();
        let mut text = format!("error {code}: {msg}");
        if !details.is_empty() {
            text.push_str(&format!(" ({details})"));
        }
        return text;
    }
    let text = String::from_utf8_lossy(if stdout.trim_ascii().is_empty() { stderr } else { stdout });
    let text = text.trim();
    if text.is_empty() { "no message".into() } else { text.chars().take(2000).collect() }
}

/// The pod's addresses in a CNI result: those on interfaces in a sandbox (or on no named interface), IPv4 first, each family in the plugin's order. Understands 0.3.x/0.4.0/1.0 results ("ips")
/// and 0.1/0.2 ones ("ip4", "ip6").
pub fn result_ips(result: &Value) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    let interfaces = result.get("interfaces").and_then(Value::as_array);
    if let Some(list) = result.get("ips").and_then(Value::as_array) {
        for entry in list {
            // An address on a named interface counts only if that interface is in a sandbox (the pod's
            // side of a veth, not the host's bridge).
            if let (Some(index), Some(interfaces)) = (entry.get("interface").and_then(Value::as_u64), interfaces)
                && let Some(interface) = interfaces.get(index as usize)
                && interface.get("sandbox").and_then(Value::as_str).is_none_or(str::is_empty)
            {
                continue;
            }
            if let Some(ip) = entry.get("address").and_then(Value::as_str).and_then(parse_cidr_ip) {
                ips.push(ip);
            }
        }
    } else {
        for key in ["ip4", "ip6"] {
            if let Some(ip) = result.get(key).and_then(|v| v.get("ip")).and_then(Value::as_str).and_then(parse_cidr_ip)
            {
                ips.push(ip);
            }
        }
    }
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips.dedup();
    ips
}

fn parse_cidr_ip(cidr: &str) -> Option<IpAddr> {
    cidr.split('/').next()?.parse().ok()
}

/// Loads the first network config, by file name, in `dir`.
pub fn load_first(dir: &Path) -> Result<NetworkConfig, NetError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(NetError::Unavailable(format!(
                "no CNI network config: the CNI configuration directory {} does not exist",
                dir.display()
            )));
        }
        Err(e) => {
            return Err(NetError::System(anyhow!(
                "cannot read the CNI configuration directory {}: {e}",
                dir.display()
            )));
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("conf" | "conflist" | "json")))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let first = files.into_iter().next().ok_or_else(|| {
        NetError::Unavailable(format!("no CNI network config in {} (no .conf, .conflist or .json file)", dir.display()))
    })?;
    let bytes = std::fs::read(&first)
        .map_err(|e| NetError::System(anyhow!("cannot read CNI config {}: {e}", first.display())))?;
    parse_config(&first, &bytes)
}

/// Parses a config list, or a single plugin config as a list of one.
pub fn parse_config(file: &Path, bytes: &[u8]) -> Result<NetworkConfig, NetError> {
    let bad = |what: String| NetError::Unavailable(format!("CNI config {} is invalid: {what}", file.display()));
    let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON ({e})")))?;
    let Value::Object(top) = value else { return Err(bad("not a JSON object".into())) };
    let name = top.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    if name.is_empty() {
        return Err(bad("no \"name\"".into()));
    }
    let cni_version = top.get("cniVersion").and_then(Value::as_str).unwrap_or("").to_string();
    if cni_version.is_empty() {
        return Err(bad("no \"cniVersion\"".into()));
    }
    let disable_check = top.get("disableCheck").and_then(Value::as_bool).unwrap_or(false);
    let plugins = match top.get("plugins") {
        Some(Value::Array(list)) => {
            let mut plugins = Vec::new();
            for (i, p) in list.iter().enumerate() {
                let Value::Object(p) = p else { return Err(bad(format!("plugin {i} is not an object"))) };
                plugins.push(p.clone());
            }
            plugins
        }
        Some(_) => return Err(bad("\"plugins\" is not a list".into())),
        None => vec![top.clone()],
    };
    if plugins.is_empty() {
        return Err(bad("no plugins".into()));
    }
    for (i, p) in plugins.iter().enumerate() {
        if plugin_type(p).is_empty() {
            return Err(bad(format!("plugin {i} has no \"type\"")));
        }
    }
    Ok(NetworkConfig { file: file.to_path_buf(), name, cni_version, disable_check, plugins })
}

/// A pod id must be a file name of its own in the cache.
fn check_pod_id(id: &str) -> Result<(), NetError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(NetError::Invalid(format!("pod id {id:?} is not a valid CNI container id"))) }
}

impl PodNetwork for Cni {
    fn ready(&self) -> Result<(), String> {
        let network = self.load().map_err(|e| e.to_string())?;
        for plugin in &network.plugins {
            self.find_plugin(plugin_type(plugin)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn setup<'a>(&'a self, pod: &'a PodNetworkRequest) -> BoxFuture<'a, Result<PodNetworkStatus, NetError>> {
        Box::pin(async move {
            check_pod_id(&pod.pod_id)?;
            if pod.ifname.is_empty() {
                return Err(NetError::Invalid("the pod's interface name is empty".into()));
            }
            let network = self.load()?;
            // Cached before the first plugin runs: a crash in the middle leaves what DEL needs.
            let mut cached = CachedAttachment {
                network: network.clone(),
                ifname: pod.ifname.clone(),
                netns: pod.netns.clone(),
                result: None,
            };
            self.write_cache(&pod.pod_id, &cached)?;
            let env = PluginEnv::new(pod, &pod.netns, &pod.ifname);
            let result = match self.add_all(&network, pod, &env).await {
                Ok(r) => r,
                Err((e, ran)) => {
                    // Nothing left: what the plugins that ran did is deleted again, in reverse.
                    match self.del_first(&network, ran, pod, &env, None).await {
                        Ok(()) => {
                            let _ = self.remove_cache(&pod.pod_id);
                        }
                        Err(del) => {
                            tracing::warn!(pod = %pod.pod_id, error = %del, "CNI DEL after a failed ADD failed; kept the cache for teardown")
                        }
                    }
                    return Err(e);
                }
            };
            cached.result = Some(result.clone());
            if let Err(e) = self.write_cache(&pod.pod_id, &cached) {
                let _ = self.del_all(&network, pod, &env, Some(&result)).await;
                let _ = self.remove_cache(&pod.pod_id);
                return Err(e);
            }
            let ips = result_ips(&result);
            Ok(PodNetworkStatus { ips, interface: pod.ifname.clone() })
        })
    }

    fn teardown<'a>(&'a self, pod: &'a PodNetworkRequest) -> BoxFuture<'a, Result<(), NetError>> {
        Box::pin(async move {
            check_pod_id(&pod.pod_id)?;
            let (network, ifname, netns, result) = match self.read_cache(&pod.pod_id)? {
                Some(c) => (c.network, c.ifname, c.netns, c.result),
                // Never set up through us (or torn down already): DEL with today's network is harmless, and
                // with no network at all there is nothing we could have set up.
                None => match self.load() {
                    Ok(n) => (n, pod.ifname.clone(), pod.netns.clone(), None),
                    Err(NetError::Unavailable(_)) => return Ok(()),
                    Err(e) => return Err(e),
                },
            };
            // A namespace gone (or no longer a namespace, after a reboot) is passed as none: the plugins then
            // free what they hold outside it (addresses, rules) and do not fail on the rest.
            let netns = if is_netns(&netns) { netns } else { PathBuf::new() };
            let env = PluginEnv::new(pod, &netns, &ifname);
            self.del_all(&network, pod, &env, result.as_ref()).await?;
            self.remove_cache(&pod.pod_id)
        })
    }

    fn check<'a>(&'a self, pod: &'a PodNetworkRequest) -> BoxFuture<'a, Result<(), NetError>> {
        Box::pin(async move {
            check_pod_id(&pod.pod_id)?;
            let cached = self.read_cache(&pod.pod_id)?;
            let Some(CachedAttachment { network, ifname, netns, result: Some(result) }) = cached else {
                return Err(NetError::Unavailable(format!("pod {}'s network is not set up", pod.pod_id)));
            };
            if network.disable_check || !supports_check(&network.cni_version) {
                return Ok(());
            }
            let env = PluginEnv::new(pod, &netns, &ifname);
            for plugin in &network.plugins {
                let path = self.find_plugin(plugin_type(plugin))?;
                let config = plugin_config(&network, plugin, Some(&result), pod);
                self.exec(&path, Command::Check, &env, &config).await?;
            }
            Ok(())
        })
    }
}

/// Whether `path` is a network namespace (a bind mount of one, or /proc/PID/ns/net).
fn is_netns(path: &Path) -> bool {
    use nix::sys::statfs::{NSFS_MAGIC, PROC_SUPER_MAGIC, statfs};
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC || fs.filesystem_type() == PROC_SUPER_MAGIC)
}

/// CHECK exists from CNI 0.4.0 on.
fn supports_check(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (0, 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::pod::PodPortMapping;
    use std::os::unix::fs::PermissionsExt;

    /// A directory of fake plugins (shell scripts) that log each call and its stdin and environment.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            for d in ["bin", "conf", "log", "cache"] {
                std::fs::create_dir(dir.path().join(d)).unwrap();
            }
            Fixture { dir }
        }

        fn path(&self, p: &str) -> PathBuf {
            self.dir.path().join(p)
        }

        /// A plugin `name` whose ADD prints `add` (a shell word list run as the ADD branch).
        fn plugin(&self, name: &str, add: &str) {
            let log = self.path("log");
            let script = format!(
                r#"#!/bin/sh
input=$(cat)
n=$(ls {log} | wc -l)
printf '%s' "$input" > {log}/$n.$CNI_COMMAND.{name}.stdin
env > {log}/$n.$CNI_COMMAND.{name}.env
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}' ;;
ADD) {add} ;;
DEL) ;;
CHECK) ;;
esac
"#,
                log = log.display()
            );
            let path = self.path("bin").join(name);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        fn conf(&self, file: &str, text: &str) {
            std::fs::write(self.path("conf").join(file), text).unwrap();
        }

        fn cni(&self) -> Cni {
            let mut options = CniOptions::new(self.dir.path(), Some(self.path("conf")), vec![self.path("bin")]);
            options.cache_dir = self.path("cache");
            options.plugin_timeout = Duration::from_secs(30);
            Cni::new(options)
        }

        /// The calls so far, in order: "COMMAND plugin".
        fn calls(&self) -> Vec<String> {
            let mut files: Vec<(usize, String)> = std::fs::read_dir(self.path("log"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".stdin"))
                .map(|n| {
                    let mut parts = n.splitn(4, '.');
                    let i: usize = parts.next().unwrap().parse().unwrap();
                    let command = parts.next().unwrap().to_string();
                    let plugin = parts.next().unwrap().to_string();
                    (i, format!("{command} {plugin}"))
                })
                .collect();
            files.sort();
            files.into_iter().map(|(_, c)| c).filter(|c| !c.starts_with("VERSION")).collect()
        }

        /// The stdin and environment of the call `command plugin` (the last one).
        fn call(&self, command: &str, plugin: &str) -> (Value, String) {
            let mut found = None;
            let mut names: Vec<String> = std::fs::read_dir(self.path("log"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort_by_key(|n| n.split('.').next().unwrap().parse::<usize>().unwrap());
            for n in names {
                if n.ends_with(&format!(".{command}.{plugin}.stdin")) {
                    found = Some(n.trim_end_matches(".stdin").to_string());
                }
            }
            let base = found.unwrap_or_else(|| panic!("no {command} of {plugin}"));
            let stdin = std::fs::read(self.path("log").join(format!("{base}.stdin"))).unwrap();
            let env = std::fs::read_to_string(self.path("log").join(format!("{base}.env"))).unwrap();
            (serde_json::from_slice(&stdin).unwrap(), env)
        }
    }

    const RESULT: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"br0"},{"name":"eth0","sandbox":"/run/netns/x"}],"ips":[{"address":"10.1.0.1/24","interface":0},{"address":"fd00::5/64","interface":1},{"address":"10.1.0.5/24","interface":1,"gateway":"10.1.0.1"}]}"#;

    fn pod() -> PodNetworkRequest {
        PodNetworkRequest {
            pod_id: "pod1".into(),
            netns: PathBuf::from("/run/netns/x"),
            ifname: "eth0".into(),
            pod_name: "web".into(),
            pod_namespace: "default".into(),
            pod_uid: "uid-1".into(),
            port_mappings: vec![PodPortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: None,
            }],
        }
    }

    fn chain(fx: &Fixture) {
        fx.plugin("first", &format!("echo '{RESULT}'"));
        // The second passes its prevResult on, as meta plugins do.
        fx.plugin("second", r#"printf '%s' "$input" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["prevResult"]))'"#);
        fx.conf(
            "10-net.conflist",
            r#"{"cniVersion":"1.0.0","name":"testnet","plugins":[{"type":"first","bridge":"b"},{"type":"second","capabilities":{"portMappings":true}}]}"#,
        );
    }

    #[tokio::test]
    async fn add_runs_the_chain_in_order_with_prev_result_runtime_config_and_env() {
        let fx = Fixture::new();
        chain(&fx);
        let cni = fx.cni();
        assert_eq!(cni.ready(), Ok(()));
        let status = cni.setup(&pod()).await.unwrap();
        // Only the sandbox's addresses, IPv4 first.
        assert_eq!(status.ips, ["10.1.0.5".parse::<IpAddr>().unwrap(), "fd00::5".parse().unwrap()]);
        assert_eq!(status.interface, "eth0");
        assert_eq!(fx.calls(), ["ADD first", "ADD second"]);

        let (first, env) = fx.call("ADD", "first");
        assert_eq!(first["name"], "testnet");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert_eq!(first["bridge"], "b");
        assert!(first.get("prevResult").is_none());
        assert!(first.get("runtimeConfig").is_none(), "first has no portMappings capability: {first}");
        for want in [
            "CNI_COMMAND=ADD",
            "CNI_CONTAINERID=pod1",
            "CNI_NETNS=/run/netns/x",
            "CNI_IFNAME=eth0",
            "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=pod1;K8S_POD_UID=uid-1",
            &format!("CNI_PATH={}", fx.path("bin").display()),
        ] {
            assert!(env.lines().any(|l| l == want), "{want} not in\n{env}");
        }
        let (second, _) = fx.call("ADD", "second");
        assert_eq!(second["prevResult"], serde_json::from_str::<Value>(RESULT).unwrap());
        assert_eq!(
            second["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
        );
        assert!(fx.path("cache/pod1.json").exists());
    }

    #[tokio::test]
    async fn del_runs_in_reverse_with_the_cached_config_and_result_even_after_the_config_changed() {
        let fx = Fixture::new();
        chain(&fx);
        fx.cni().setup(&pod()).await.unwrap();
        // A new server (after a crash) with another network first in the directory.
        fx.plugin("other", "echo '{}'");
        fx.conf("00-other.conf", r#"{"cniVersion":"1.0.0","name":"other","type":"other"}"#);
        let cni = fx.cni();
        assert_eq!(cni.load().unwrap().name, "other");
        cni.teardown(&pod()).await.unwrap();
        assert_eq!(fx.calls(), ["ADD first", "ADD second", "DEL second", "DEL first"]);
        let (del, env) = fx.call("DEL", "first");
        assert_eq!(del["name"], "testnet");
        assert_eq!(del["prevResult"], serde_json::from_str::<Value>(RESULT).unwrap());
        assert!(env.lines().any(|l| l == "CNI_COMMAND=DEL"));
        let (del2, _) = fx.call("DEL", "second");
        assert_eq!(del2["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(!fx.path("cache/pod1.json").exists());
        // Idempotent: a second teardown runs DEL of today's network without prevResult and succeeds.
        cni.teardown(&pod()).await.unwrap();
        assert_eq!(fx.calls().last().unwrap(), "DEL other");
        assert!(fx.call("DEL", "other").0.get("prevResult").is_none());
    }

    #[tokio::test]
    async fn a_failed_add_deletes_what_was_added_and_names_the_plugin_and_its_message() {
        let fx = Fixture::new();
        fx.plugin("first", &format!("echo '{RESULT}'"));
        fx.plugin(
            "second",
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"no addresses left","details":"range full"}'; exit 1"#,
        );
        fx.conf(
            "10-net.conflist",
            r#"{"cniVersion":"1.0.0","name":"testnet","plugins":[{"type":"first"},{"type":"second"}]}"#,
        );
        let cni = fx.cni();
        let err = cni.setup(&pod()).await.unwrap_err().to_string();
        assert!(
            err.contains("second") && err.contains("ADD") && err.contains("no addresses left (range full)"),
            "{err}"
        );
        assert_eq!(fx.calls(), ["ADD first", "ADD second", "DEL second", "DEL first"]);
        assert!(!fx.path("cache/pod1.json").exists());
    }

    #[tokio::test]
    async fn a_hanging_plugin_is_killed_with_its_children() {
        let fx = Fixture::new();
        let pidfile = fx.path("sleeper.pid");
        fx.plugin("slow", &format!("sleep 1000 & echo $! > {}; wait", pidfile.display()));
        fx.conf("net.conf", r#"{"cniVersion":"1.0.0","name":"slow","type":"slow"}"#);
        let mut cni = fx.cni();
        cni.options.plugin_timeout = Duration::from_millis(500);
        let err = cni.setup(&pod()).await.unwrap_err().to_string();
        assert!(err.contains("CNI plugin slow ADD did not finish within 0.5 s and was killed"), "{err}");
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // The sleeper was SIGKILLed with the group; reaped by init, it is gone or a zombie.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(state.is_empty() || state.split(' ').nth(2) == Some("Z"), "sleeper {pid} still runs: {state}");
        assert!(!fx.path("cache/pod1.json").exists());
    }

    #[tokio::test]
    async fn check_passes_the_cached_result_and_is_refused_for_a_pod_not_set_up() {
        let fx = Fixture::new();
        chain(&fx);
        let cni = fx.cni();
        let err = cni.check(&pod()).await.unwrap_err().to_string();
        assert!(err.contains("not set up"), "{err}");
        cni.setup(&pod()).await.unwrap();
        cni.check(&pod()).await.unwrap();
        assert_eq!(fx.calls()[2..], ["CHECK first", "CHECK second"]);
        assert_eq!(fx.call("CHECK", "first").0["prevResult"], serde_json::from_str::<Value>(RESULT).unwrap());
    }

    #[tokio::test]
    async fn an_unsupported_version_and_a_missing_plugin_are_clear_errors() {
        let fx = Fixture::new();
        fx.plugin("first", &format!("echo '{RESULT}'"));
        fx.conf("net.conf", r#"{"cniVersion":"0.3.1","name":"old","type":"first"}"#);
        let cni = fx.cni();
        let err = cni.setup(&pod()).await.unwrap_err().to_string();
        assert!(err.contains("does not support cniVersion 0.3.1 of network old (it supports 0.4.0, 1.0.0)"), "{err}");
        fx.conf("net.conf", r#"{"cniVersion":"1.0.0","name":"gone","type":"nosuch"}"#);
        let why = cni.ready().unwrap_err();
        assert!(why.contains("CNI plugin \"nosuch\" not found in"), "{why}");
        assert!(cni.setup(&pod()).await.unwrap_err().to_string().contains("nosuch"));
        assert!(matches!(
            cni.setup(&PodNetworkRequest { pod_id: "../x".into(), ..pod() }).await,
            Err(NetError::Invalid(_))
        ));
    }

    #[test]
    fn the_first_config_by_name_is_loaded_and_bad_ones_are_named() {
        let fx = Fixture::new();
        let cni = fx.cni();
        let why = cni.ready().unwrap_err();
        assert!(why.contains("no CNI network config in"), "{why}");
        fx.conf("README", "not a config");
        fx.conf("20-b.conflist", r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"x"}]}"#);
        fx.conf("30-c.json", r#"{"cniVersion":"1.0.0","name":"c","type":"y"}"#);
        let net = cni.load().unwrap();
        assert_eq!((net.name.as_str(), net.plugins.len(), plugin_type(&net.plugins[0])), ("b", 1, "x"));
        fx.conf("10-a.conf", r#"{"cniVersion":"1.0.0","name":"a","type":"z","disableCheck":true}"#);
        let net = cni.load().unwrap();
        assert_eq!((net.name.as_str(), plugin_type(&net.plugins[0]), net.disable_check), ("a", "z", true));
        fx.conf("05-bad.conflist", r#"{"cniVersion":"1.0.0","name":"bad","plugins":[{"bridge":"x"}]}"#);
        let err = cni.load().unwrap_err().to_string();
        assert!(err.contains("05-bad.conflist is invalid: plugin 0 has no \"type\""), "{err}");
        fx.conf("05-bad.conflist", "{");
        assert!(cni.load().unwrap_err().to_string().contains("05-bad.conflist is invalid: not JSON"));
        fx.conf("05-bad.conflist", r#"{"name":"n","plugins":[]}"#);
        assert!(cni.load().unwrap_err().to_string().contains("no \"cniVersion\""));
    }

    #[test]
    fn results_of_old_versions_give_their_addresses() {
        let old = json!({"cniVersion":"0.2.0","ip4":{"ip":"10.2.0.3/16"},"ip6":{"ip":"fd01::3/64"}});
        assert_eq!(result_ips(&old), ["10.2.0.3".parse::<IpAddr>().unwrap(), "fd01::3".parse().unwrap()]);
        let no_interfaces = json!({"cniVersion":"1.0.0","ips":[{"address":"10.3.0.9/24"}]});
        assert_eq!(result_ips(&no_interfaces), ["10.3.0.9".parse::<IpAddr>().unwrap()]);
        assert!(result_ips(&json!({})).is_empty());
    }
}
