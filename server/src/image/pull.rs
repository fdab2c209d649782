//! Pulling an image: resolve the reference to a manifest for this host's platform, fetch the config, then
//! download every missing layer in parallel, verifying size and digest while the bytes stream and
//! decompressing and unpacking them in the same pass. Progress goes out as [`PullEvent`]s.
//!
//! Each layer runs as an async task (network) feeding a blocking thread (hash, write blob, decompress,
//! unpack, verify, commit) through a small bounded channel, so a slow disk slows the download instead of
//! buffering it in memory.

use std::io::{self, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::error::ImageError;
use super::manifest::{self, Descriptor, Fetched, Platform};
use super::reference::Reference;
use super::store::{ImageRecord, ImageStore, LayerRecord};
use super::unpack;

mod stream;

use stream::{ChunkReader, HashingReader, Tee, decompressor, verify};

/// Layers downloaded at once (docker's default).
const PARALLEL_LAYERS: usize = 3;
/// Largest manifest, index or config we accept.
const MAX_METADATA_BYTES: usize = 8 << 20;
/// How often byte progress is reported.
const TICK: Duration = Duration::from_millis(100);

/// Phase of one layer (mirrors cm.v1.LayerPhase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Waiting,
    Downloading,
    Verifying,
    Extracting,
    Done,
    AlreadyExists,
}

/// What a pull reports while it runs.
#[derive(Debug, Clone)]
pub enum PullEvent {
    Resolved {
        reference: String,
        manifest_digest: String,
        index_digest: Option<String>,
        platform: Platform,
        layers: Vec<Descriptor>,
    },
    Layer {
        digest: String,
        phase: Phase,
        current: i64,
        total: i64,
    },
    Summary {
        current: i64,
        total: i64,
        layers_done: usize,
        layers_total: usize,
    },
}

/// What a successful pull did.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    pub image_id: String,
    pub reference: String,
    pub manifest_digest: String,
    pub downloaded_bytes: i64,
    pub up_to_date: bool,
}

/// Registry access settings of the server.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (`host[:port]` or `host`) reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Registries whose pulls go to another one instead (`--registry-mirror HOST=URL`). A mirrored registry
    /// is never contacted, nor its name resolved: if the mirror fails, the pull fails.
    pub mirrors: Vec<RegistryMirror>,
}

/// One `--registry-mirror HOST=URL`: pulls of HOST/... are served by URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryMirror {
    /// The registry as references name it, e.g. "registry.k8s.io" or "docker.io".
    pub registry: String,
    /// The mirror's `host[:port]`.
    pub authority: String,
    /// Whether the mirror is reached over plain HTTP (an http:// URL).
    pub plain_http: bool,
}

impl std::fmt::Display for RegistryMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.plain_http { "http" } else { "https" };
        write!(f, "{}={scheme}://{}", self.registry, self.authority)
    }
}

impl std::str::FromStr for RegistryMirror {
    type Err = String;

    /// Parses `HOST=URL`, e.g. `registry.k8s.io=http://127.0.0.1:5000`. URL is http:// or https:// and a
    /// `host[:port]` with no path, query or credentials.
    fn from_str(s: &str) -> Result<Self, String> {
        let (registry, url) = s.split_once('=').ok_or_else(|| format!("{s:?} is not HOST=URL"))?;
        let registry = registry.trim().to_ascii_lowercase();
        let host_ok = |h: &str| {
            !h.is_empty()
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        };
        if !host_ok(&registry) {
            return Err(format!("{s:?}: {registry:?} is not a registry host[:port]"));
        }
        let (plain_http, rest) = if let Some(r) = url.strip_prefix("http://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (false, r)
        } else {
            return Err(format!("{s:?}: the mirror URL {url:?} must start with http:// or https://"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if !host_ok(authority) {
            return Err(format!(
                "{s:?}: the mirror URL {url:?} must be scheme://host[:port] (no path, query or credentials)"
            ));
        }
        if let Some((_, port)) = authority.rsplit_once(':')
            && !authority.ends_with(']')
            && port.parse::<u16>().is_err()
        {
            return Err(format!("{s:?}: the mirror URL {url:?} has a bad port {port:?}"));
        }
        Ok(RegistryMirror { registry, authority: authority.to_string(), plain_http })
    }
}

impl RegistryOptions {
    /// Plain HTTP for loopback registries (as docker does) and those marked insecure.
    fn plain_http(&self, reference: &Reference) -> bool {
        let host = reference.registry_host().trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        loopback || self.insecure.iter().any(|r| r == &reference.registry || r == reference.registry_host())
    }

    /// The mirror serving `reference`'s registry, if one does.
    pub fn mirror_for(&self, reference: &Reference) -> Option<&RegistryMirror> {
        self.mirrors.iter().find(|m| m.registry == reference.registry)
    }

    /// Refuses a registry mirrored twice.
    pub fn validate(&self) -> Result<(), String> {
        for (i, m) in self.mirrors.iter().enumerate() {
            if self.mirrors[..i].iter().any(|o| o.registry == m.registry) {
                return Err(format!("registry {} is given more than one --registry-mirror", m.registry));
            }
        }
        Ok(())
    }
}

/// One pull in progress.
pub struct Pull {
    store: Arc<ImageStore>,
    /// The image's name, as stored and reported.
    reference: Reference,
    /// Where its content is fetched: `reference` itself, or the same repository on its registry's mirror.
    source: Reference,
    /// The registry as errors name it ("docker.io", or "docker.io (mirror http://127.0.0.1:5000)").
    registry_name: String,
    client: Client,
    auth: RegistryAuth,
    events: mpsc::Sender<PullEvent>,
}

impl Pull {
    pub fn new(
        store: Arc<ImageStore>,
        options: &RegistryOptions,
        reference: Reference,
        auth: RegistryAuth,
        events: mpsc::Sender<PullEvent>,
    ) -> Result<Self, ImageError> {
        let (source, registry_name, plain) = match options.mirror_for(&reference) {
            Some(m) => (
                Reference { registry: m.authority.clone(), ..reference.clone() },
                format!(
                    "{} (mirror {}://{})",
                    reference.registry,
                    if m.plain_http { "http" } else { "https" },
                    m.authority
                ),
                m.plain_http,
            ),
            None => (reference.clone(), reference.registry.clone(), options.plain_http(&reference)),
        };
        let protocol =
            if plain { ClientProtocol::HttpsExcept(vec![source.registry.clone()]) } else { ClientProtocol::Https };
        // The roots are given explicitly: left to itself, reqwest's platform verifier fails to build on a
        // machine without a CA bundle, and oci-client's Client::new then panics.
        let config = ClientConfig {
            protocol,
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            tls_certs_only: super::trust::roots().certificates.clone(),
            ..Default::default()
        };
        let client = Client::try_from(config)
            .map_err(|e| ImageError::Internal(format!("cannot set up an HTTP client for {registry_name}: {e}")))?;
        Ok(Pull { store, reference, source, registry_name, client, auth, events })
    }

    /// `reference` (the image's name or the name with a digest) as fetched: on the mirror, if there is one.
    fn fetched_from(&self, reference: &Reference) -> Reference {
        Reference { registry: self.source.registry.clone(), ..reference.clone() }
    }

    fn registry_error(&self, what: &str) -> impl Fn(oci_client::errors::OciDistributionError) -> ImageError + '_ {
        let what = format!("{what} of {}", self.reference);
        move |e| ImageError::from_registry(e, &self.registry_name, &what)
    }

    async fn emit(&self, event: PullEvent) -> Result<(), ImageError> {
        self.events.send(event).await.map_err(|_| ImageError::Cancelled)
    }

    /// Fetches a manifest or index by reference and checks its digest.
    async fn fetch_manifest(&self, reference: &Reference) -> Result<(Bytes, String), ImageError> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&self.fetched_from(reference).to_oci(), &self.auth, manifest::ACCEPTED_MANIFEST_TYPES)
            .await
            .map_err(self.registry_error("manifest"))?;
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(ImageError::Unsupported(format!("manifest of {reference} is larger than 8 MiB")));
        }
        let digest = manifest::sha256_digest(&bytes);
        if let Some(want) = &reference.digest
            && want != &digest
        {
            return Err(ImageError::DataLoss(format!(
                "manifest of {reference} does not match its digest: registry sent content with digest {digest}"
            )));
        }
        Ok((bytes, digest))
    }

    /// Downloads a small blob (config) whole, verifying size and digest.
    async fn fetch_small_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
        if desc.size < 0 || desc.size as usize > MAX_METADATA_BYTES {
            return Err(ImageError::Unsupported(format!("config {} is larger than 8 MiB", desc.digest)));
        }
        let mut stream = self
            .client
            .pull_blob_stream(&self.source.to_oci(), desc.digest.as_str())
            .await
            .map_err(self.registry_error("config"))?;
        let mut out = Vec::with_capacity(desc.size as usize);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => out.extend_from_slice(&chunk),
                // oci-client's own digest check fails at the end; ours below gives the clearer error.
                Err(_) if out.len() as i64 == desc.size => break,
                Err(e) => return Err(ImageError::Unavailable(format!("reading config {}: {e}", desc.digest))),
            }
            if out.len() as i64 > desc.size {
                break;
            }
        }
        verify(&desc.digest, desc.size, &manifest::sha256_digest(&out), out.len() as i64, "config")?;
        Ok(out)
    }

    /// Runs the pull to the end.
    pub async fn run(self) -> Result<PullOutcome, ImageError> {
        let (top_bytes, top_digest) = self.fetch_manifest(&self.reference).await?;
        let host = manifest::host_platform();
        let parsed =
            manifest::parse(&top_bytes).map_err(|e| ImageError::Unsupported(format!("{}: {e}", self.reference)))?;
        let (manifest_bytes, manifest_digest, index) = match parsed {
            Fetched::Manifest(_) => (top_bytes.clone(), top_digest.clone(), None),
            Fetched::Index(entries) => {
                let chosen = manifest::select_platform(&entries, &host).ok_or_else(|| {
                    let offered: Vec<String> =
                        entries.iter().filter_map(|e| e.platform.as_ref()).map(|p| p.to_string()).collect();
                    ImageError::NotFound(format!(
                        "{} has no image for this host's platform {host} (it offers: {})",
                        self.reference,
                        offered.join(", ")
                    ))
                })?;
                let (bytes, digest) = self.fetch_manifest(&self.reference.with_digest(&chosen.digest)).await?;
                (bytes, digest, Some((top_bytes.clone(), top_digest.clone())))
            }
        };
        let Fetched::Manifest(image_manifest) = manifest::parse(&manifest_bytes)
            .map_err(|e| ImageError::Unsupported(format!("{}: {e}", self.reference)))?
        else {
            return Err(ImageError::Unsupported(format!("{}: an index points at another index", self.reference)));
        };

        let config_bytes = match self.store.read_blob(&image_manifest.config.digest)? {
            Some(b) => b,
            None => self.fetch_small_blob(&image_manifest.config).await?,
        };
        let config = manifest::parse_config(&config_bytes, image_manifest.layers.len())
            .map_err(|e| ImageError::Unsupported(format!("{}: {e}", self.reference)))?;
        let platform = Platform {
            os: config.os.clone(),
            architecture: config.architecture.clone(),
            variant: config.variant.clone(),
        };
        if platform.os != host.os || platform.architecture != host.architecture {
            return Err(ImageError::Unsupported(format!(
                "{} is built for {platform}, this host runs {host}",
                self.reference
            )));
        }
        self.emit(PullEvent::Resolved {
            reference: self.reference.to_string(),
            manifest_digest: manifest_digest.clone(),
            index_digest: index.as_ref().map(|(_, d)| d.clone()),
            platform: platform.clone(),
            layers: image_manifest.layers.clone(),
        })
        .await?;

        let chain_ids = manifest::chain_ids(&config.rootfs.diff_ids);
        let config_digest = image_manifest.config.digest.clone();
        let _lease = self.store.lease(
            chain_ids
                .iter()
                .cloned()
                .chain(image_manifest.layers.iter().map(|l| l.digest.clone()))
                .chain([config_digest.clone(), manifest_digest.clone()]),
        );
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancelled.clone());
        let plans: Vec<LayerPlan> = image_manifest
            .layers
            .iter()
            .zip(config.rootfs.diff_ids.iter().zip(&chain_ids))
            .enumerate()
            .map(|(index, (desc, (diff_id, chain_id)))| LayerPlan {
                index,
                desc: desc.clone(),
                diff_id: diff_id.clone(),
                chain_id: chain_id.clone(),
                progress: Arc::new(LayerProgress::default()),
                cancelled: cancelled.clone(),
            })
            .collect();
        let unpacked = self.pull_layers(&plans).await?;

        // Every layer is in: record the image.
        self.store.write_blob(&config_digest, &config_bytes)?;
        self.store.write_blob(&manifest_digest, &manifest_bytes)?;
        if let Some((bytes, digest)) = &index {
            self.store.write_blob(digest, bytes)?;
        }
        let downloaded: i64 =
            plans.iter().filter(|p| p.progress.phase() != Phase::AlreadyExists).map(|p| p.desc.size).sum();
        let record = ImageRecord {
            id: config_digest.clone(),
            references: vec![],
            manifest_digest: manifest_digest.clone(),
            index_digest: index.map(|(_, d)| d),
            platform,
            layers: plans
                .iter()
                .zip(unpacked)
                .map(|(p, unpacked_size)| LayerRecord {
                    digest: p.desc.digest.clone(),
                    size: p.desc.size,
                    media_type: p.desc.media_type.clone(),
                    diff_id: p.diff_id.clone(),
                    chain_id: p.chain_id.clone(),
                    unpacked_size,
                })
                .collect(),
            created: config.created.clone(),
            pulled_unix: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64),
        };
        self.store.add_image(record, &self.reference)?;
        Ok(PullOutcome {
            image_id: config_digest,
            reference: self.reference.to_string(),
            manifest_digest,
            downloaded_bytes: downloaded,
            up_to_date: downloaded == 0,
        })
    }

    /// Brings every layer's snapshot into the store; returns each layer's unpacked size.
    async fn pull_layers(&self, plans: &[LayerPlan]) -> Result<Vec<u64>, ImageError> {
        let semaphore = Arc::new(Semaphore::new(PARALLEL_LAYERS));
        let (phase_tx, mut phase_rx) = mpsc::unbounded_channel::<usize>();
        let mut tasks = JoinSet::new();
        for plan in plans {
            let plan = plan.clone();
            if self.store.has_snapshot(&plan.chain_id) {
                let size = self.store.snapshot_size(&plan.chain_id);
                plan.progress.set_phase(Phase::AlreadyExists, &phase_tx, plan.index);
                tasks.spawn(async move { Ok::<_, ImageError>((plan.index, size)) });
                continue;
            }
            plan.progress.set_phase(Phase::Waiting, &phase_tx, plan.index);
            let job = LayerJob {
                client: self.client.clone(),
                reference: self.reference.clone(),
                source: self.source.clone(),
                registry_name: self.registry_name.clone(),
                store: self.store.clone(),
                semaphore: semaphore.clone(),
                phase_tx: phase_tx.clone(),
                plan,
            };
            tasks.spawn(job.run());
        }
        drop(phase_tx);

        // Report progress while the layers come in; the first failure cancels the rest (JoinSet drop).
        let mut sizes = vec![0u64; plans.len()];
        let mut reporter = Reporter::new(plans);
        let mut ticker = tokio::time::interval(TICK);
        let mut remaining = plans.len();
        while remaining > 0 {
            tokio::select! {
                Some(index) = phase_rx.recv() => reporter.phase_changed(self, index).await?,
                _ = ticker.tick() => reporter.tick(self).await?,
                Some(joined) = tasks.join_next() => {
                    let (index, size) = joined.map_err(|source| ImageError::Task { what: "layer task", source })??;
                    sizes[index] = size;
                    remaining -= 1;
                }
            }
        }
        while let Ok(index) = phase_rx.try_recv() {
            reporter.phase_changed(self, index).await?;
        }
        reporter.tick(self).await?;
        Ok(sizes)
    }
}

/// One layer to bring in.
#[derive(Clone)]
struct LayerPlan {
    index: usize,
    desc: Descriptor,
    diff_id: String,
    chain_id: String,
    progress: Arc<LayerProgress>,
    /// Set when the pull is abandoned (failed or dropped): the layer must not be committed any more.
    cancelled: Arc<AtomicBool>,
}

/// Sets the flag when dropped: a pull future that fails or is dropped (client gone) stops its blocking
/// layer threads from committing what nothing will record.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Live progress of one layer, shared between its task and the reporter.
#[derive(Default)]
struct LayerProgress {
    phase: std::sync::Mutex<Option<Phase>>,
    bytes: AtomicI64,
}

impl LayerProgress {
    fn phase(&self) -> Phase {
        self.phase.lock().unwrap().unwrap_or(Phase::Waiting)
    }

    fn set_phase(&self, phase: Phase, notify: &mpsc::UnboundedSender<usize>, index: usize) {
        *self.phase.lock().unwrap() = Some(phase);
        let _ = notify.send(index);
    }
}

/// Turns layer progress into rate-limited events; the single place events are sent from, so they stay in
/// order.
struct Reporter {
    layers: Vec<(String, i64, Arc<LayerProgress>)>,
    last: Vec<Option<(Phase, i64)>>,
    last_summary: Option<(i64, usize)>,
}

impl Reporter {
    fn new(plans: &[LayerPlan]) -> Self {
        Reporter {
            layers: plans.iter().map(|p| (p.desc.digest.clone(), p.desc.size, p.progress.clone())).collect(),
            last: vec![None; plans.len()],
            last_summary: None,
        }
    }

    async fn send_layer(&mut self, pull: &Pull, index: usize) -> Result<(), ImageError> {
        let (digest, total, progress) = &self.layers[index];
        let phase = progress.phase();
        let current = match phase {
            Phase::Done | Phase::AlreadyExists => *total,
            _ => progress.bytes.load(Ordering::Relaxed),
        };
        if self.last[index] == Some((phase, current)) {
            return Ok(());
        }
        self.last[index] = Some((phase, current));
        pull.emit(PullEvent::Layer { digest: digest.clone(), phase, current, total: *total }).await
    }

    async fn phase_changed(&mut self, pull: &Pull, index: usize) -> Result<(), ImageError> {
        self.send_layer(pull, index).await
    }

    async fn tick(&mut self, pull: &Pull) -> Result<(), ImageError> {
        for index in 0..self.layers.len() {
            if self.layers[index].2.phase() == Phase::Downloading {
                self.send_layer(pull, index).await?;
            }
        }
        let total: i64 = self.layers.iter().map(|l| l.1).sum();
        let mut current = 0;
        let mut done = 0;
        for (_, size, progress) in &self.layers {
            match progress.phase() {
                Phase::Done | Phase::AlreadyExists => {
                    current += size;
                    done += 1;
                }
                _ => current += progress.bytes.load(Ordering::Relaxed),
            }
        }
        if self.last_summary == Some((current, done)) {
            return Ok(());
        }
        self.last_summary = Some((current, done));
        pull.emit(PullEvent::Summary { current, total, layers_done: done, layers_total: self.layers.len() }).await
    }
}

/// Everything one layer's task needs.
struct LayerJob {
    client: Client,
    reference: Reference,
    source: Reference,
    registry_name: String,
    store: Arc<ImageStore>,
    semaphore: Arc<Semaphore>,
    phase_tx: mpsc::UnboundedSender<usize>,
    plan: LayerPlan,
}

impl LayerJob {
    async fn run(self) -> Result<(usize, u64), ImageError> {
        let _permit = self.semaphore.acquire().await.map_err(|_| ImageError::Cancelled)?;
        let plan = &self.plan;
        let digest = plan.desc.digest.clone();
        let what = format!("layer {digest} of {}", self.reference);
        plan.progress.set_phase(Phase::Downloading, &self.phase_tx, plan.index);
        let mut stream = self
            .client
            .pull_blob_stream(&self.source.to_oci(), digest.as_str())
            .await
            .map_err(|e| ImageError::from_registry(e, &self.registry_name, &what))?;

        let (chunks_tx, chunks_rx) = mpsc::channel::<Bytes>(32);
        let tmp = self.store.tmp_dir()?;
        let unpacker = {
            let (store, plan, phase_tx) = (self.store.clone(), plan.clone(), self.phase_tx.clone());
            tokio::task::spawn_blocking(move || unpack_and_commit(chunks_rx, tmp, &store, &plan, &phase_tx))
        };
        let mut received: i64 = 0;
        let mut transfer_error = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    received += chunk.len() as i64;
                    plan.progress.bytes.store(received.min(plan.desc.size), Ordering::Relaxed);
                    if received > plan.desc.size || chunks_tx.send(chunk).await.is_err() {
                        // Too much data, or the unpacker stopped with an error it will report.
                        break;
                    }
                }
                // oci-client checks the digest too and fails at the end; the unpacker's own check, with
                // the byte count, gives the precise error.
                Err(_) if received == plan.desc.size => break,
                Err(e) => {
                    transfer_error = Some(ImageError::Unavailable(format!(
                        "download of {what} from {} broke off: {e}",
                        self.registry_name
                    )));
                    break;
                }
            }
        }
        drop(chunks_tx);
        let result = unpacker.await.map_err(|source| ImageError::Task { what: "unpacker", source })?;
        if let Some(e) = transfer_error {
            return Err(e);
        }
        let size = result?;
        plan.progress.set_phase(Phase::Done, &self.phase_tx, plan.index);
        Ok((plan.index, size))
    }
}

/// The blocking half of a layer: write the blob, hash it, decompress and unpack it into a private directory,
/// verify digest, size and diff id, then move blob and snapshot into the store.
fn unpack_and_commit(
    chunks: mpsc::Receiver<Bytes>,
    tmp: tempfile::TempDir,
    store: &ImageStore,
    plan: &LayerPlan,
    phase_tx: &mpsc::UnboundedSender<usize>,
) -> Result<u64, ImageError> {
    let desc = &plan.desc;
    let blob_path = tmp.path().join("blob");
    let fs_path = tmp.path().join("fs");
    std::fs::create_dir(&fs_path)?;
    let mut tee = Tee {
        chunks: ChunkReader { rx: chunks, current: Bytes::new() },
        file: io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&blob_path)?),
        hasher: Sha256::new(),
        count: 0,
    };
    let unpacked = {
        let mut input = BufReader::with_capacity(256 << 10, &mut tee);
        let decompressed = decompressor(&mut input)?;
        let mut diff = HashingReader { inner: decompressed, hasher: Sha256::new() };
        let stats = unpack::unpack_layer(&mut diff, &fs_path, &unpack::Limits::default())
            .map_err(|e| ImageError::Unsupported(format!("layer {} cannot be unpacked: {e}", desc.digest)))?;
        for note in &stats.skipped {
            tracing::warn!(layer = %desc.digest, "{note}");
        }
        plan.progress.set_phase(Phase::Verifying, phase_tx, plan.index);
        let diff_id = format!("sha256:{}", hex::encode(diff.hasher.finalize()));
        (stats.bytes, diff_id)
    };
    let (unpacked_bytes, diff_id) = unpacked;
    let (digest, size) = tee.finish()?;
    verify(&desc.digest, desc.size, &digest, size, "layer")?;
    if diff_id != plan.diff_id {
        return Err(ImageError::DataLoss(format!(
            "layer {} unpacks to content with diff id {diff_id}, but the image config says {}",
            desc.digest, plan.diff_id
        )));
    }
    plan.progress.set_phase(Phase::Extracting, phase_tx, plan.index);
    if !store.commit_layer(&blob_path, &desc.digest, &fs_path, &plan.chain_id, &plan.cancelled)? {
        return Err(ImageError::Cancelled);
    }
    Ok(unpacked_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_use_plain_http() {
        let opts =
            RegistryOptions { insecure: vec!["reg.internal:5000".into(), "other.lan".into()], ..Default::default() };
        let plain = |s: &str| opts.plain_http(&Reference::parse(s).unwrap());
        assert!(plain("127.0.0.1:5000/a"));
        assert!(plain("localhost:5000/a"));
        assert!(plain("[::1]:5000/a"));
        assert!(plain("reg.internal:5000/a"));
        assert!(plain("other.lan/a"));
        assert!(!plain("reg.internal:6000/a"));
        assert!(!plain("alpine"));
        assert!(!plain("10.0.0.1:5000/a"));
    }

    #[test]
    fn registry_mirrors_parse_and_bad_ones_are_refused() {
        let m: RegistryMirror = "registry.k8s.io=http://127.0.0.1:5000".parse().unwrap();
        assert_eq!(
            (m.registry.as_str(), m.authority.as_str(), m.plain_http),
            ("registry.k8s.io", "127.0.0.1:5000", true)
        );
        assert_eq!(m.to_string(), "registry.k8s.io=http://127.0.0.1:5000");
        let m: RegistryMirror = "Docker.io=https://mirror.lan/".parse().unwrap();
        assert_eq!((m.registry.as_str(), m.authority.as_str(), m.plain_http), ("docker.io", "mirror.lan", false));
        for (bad, why) in [
            ("registry.k8s.io", "is not HOST=URL"),
            ("=http://127.0.0.1:5000", "is not a registry"),
            ("gcr.io=127.0.0.1:5000", "must start with http:// or https://"),
            ("gcr.io=ftp://127.0.0.1", "must start with http:// or https://"),
            ("gcr.io=http://127.0.0.1:5000/v2", "no path"),
            ("gcr.io=http://u:p@127.0.0.1:5000", "no path, query or credentials"),
            ("gcr.io=http://", "no path"),
            ("gcr.io=http://127.0.0.1:99999", "bad port"),
        ] {
            let err = bad.parse::<RegistryMirror>().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let twice = RegistryOptions {
            mirrors: vec!["a.io=http://127.0.0.1:1".parse().unwrap(), "a.io=http://127.0.0.1:2".parse().unwrap()],
            ..Default::default()
        };
        assert!(twice.validate().unwrap_err().contains("a.io is given more than one"));
    }

    #[test]
    fn a_mirrored_pull_fetches_from_the_mirror_and_keeps_its_name() {
        let opts =
            RegistryOptions { mirrors: vec!["docker.io=http://127.0.0.1:5000".parse().unwrap()], ..Default::default() };
        let (tx, _rx) = mpsc::channel(1);
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ImageStore::open(dir.path()).unwrap());
        let pull = Pull::new(store, &opts, Reference::parse("busybox").unwrap(), RegistryAuth::Anonymous, tx).unwrap();
        assert_eq!(
            pull.reference.to_string(),
            Reference::parse("docker.io/library/busybox:latest").unwrap().to_string()
        );
        let oci = pull.source.to_oci();
        assert_eq!(
            (oci.registry(), oci.repository(), oci.tag()),
            ("127.0.0.1:5000", "library/busybox", Some("latest"))
        );
        assert_eq!(pull.registry_name, "docker.io (mirror http://127.0.0.1:5000)");
        let pinned = pull.fetched_from(&pull.reference.with_digest(&format!("sha256:{}", "a".repeat(64)))).to_oci();
        assert_eq!(pinned.registry(), "127.0.0.1:5000");
    }
}
