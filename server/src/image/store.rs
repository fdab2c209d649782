//! The image store under `--root`:
//!
//! ```text
//! blobs/sha256/<hex>     content-addressed blobs: manifests, indexes, configs, layer blobs
//! snapshots/<hex>        one unpacked layer per chain id (overlay whiteouts), shared by all images
//! tmp/                   downloads and unpacks in progress; emptied at start
//! images.json            image records and the names pointing at them
//! ```
//!
//! Content enters the store only by rename from tmp/ after it was verified, so a partly written blob or
//! snapshot is never visible. Content no image references is garbage-collected, except what a running
//! pull holds a lease on.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::error::ImageError;
use super::manifest::Platform;
use super::reference::Reference;

/// One layer of a stored image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the layer blob as pulled.
    pub digest: String,
    /// Size of the blob.
    pub size: i64,
    pub media_type: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// Chain id: the key of the layer's snapshot.
    pub chain_id: String,
    /// Bytes of regular files in the snapshot.
    pub unpacked_size: u64,
}

/// A stored image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Digest of the config.
    pub id: String,
    /// Normalized references pointing at the image.
    pub references: Vec<String>,
    pub manifest_digest: String,
    #[serde(default)]
    pub index_digest: Option<String>,
    pub platform: Platform,
    pub layers: Vec<LayerRecord>,
    /// `created` from the config (RFC 3339), if any.
    #[serde(default)]
    pub created: Option<String>,
    /// When it was pulled, seconds since the epoch.
    pub pulled_unix: i64,
}

impl ImageRecord {
    /// Sum of the unpacked layer sizes.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.unpacked_size).sum()
    }

    /// The digest the registry serves the image under: its index's when it was pulled through one, else its
    /// manifest's (what `REPO@DIGEST` pulls again).
    pub fn distribution_digest(&self) -> &str {
        self.index_digest.as_deref().unwrap_or(&self.manifest_digest)
    }

    /// `REPO@DIGEST` for every repository naming the image, as containerd lists them: its digest references
    /// as pulled, and each tagged repository pinned to the distribution digest. Each resolves to the image.
    pub fn repo_digests(&self) -> Vec<String> {
        let mut digests: Vec<String> = self
            .references
            .iter()
            .filter_map(|r| Reference::parse(r).ok())
            .map(|r| {
                let digest = r.digest.clone().unwrap_or_else(|| self.distribution_digest().to_string());
                format!("{}/{}@{digest}", r.registry, r.repository)
            })
            .collect();
        digests.sort();
        digests.dedup();
        digests
    }

    /// Whether `REPO@DIGEST` names this image without being one of its references: a repository it has
    /// (by tag or digest) and its manifest's or index's digest. A tag given beside the digest is ignored.
    fn answers_to_digest(&self, wanted: &Reference) -> bool {
        let Some(digest) = wanted.digest.as_deref() else { return false };
        let ours = digest == self.manifest_digest || Some(digest) == self.index_digest.as_deref();
        self.references.iter().filter_map(|r| Reference::parse(r).ok()).any(|r| {
            r.registry == wanted.registry
                && r.repository == wanted.repository
                && (ours || r.digest.as_deref() == Some(digest))
        })
    }

    fn blobs(&self) -> impl Iterator<Item = &str> {
        [self.id.as_str(), self.manifest_digest.as_str()]
            .into_iter()
            .chain(self.index_digest.as_deref())
            .chain(self.layers.iter().map(|l| l.digest.as_str()))
    }
}

#[derive(Default, Serialize, Deserialize)]
struct ImageDb {
    images: Vec<ImageRecord>,
}

/// What RemoveImage did.
#[derive(Debug, Default)]
pub struct Removed {
    pub untagged: Vec<String>,
    pub deleted: Vec<String>,
    pub reclaimed_bytes: u64,
}

pub struct ImageStore {
    root: PathBuf,
    db: Mutex<ImageDb>,
    /// Digests and chain ids that running pulls use, with a count per holder.
    leases: Arc<Mutex<HashMap<String, usize>>>,
    /// Held by garbage collection and by layer commits, so a commit is never half-seen by a collection.
    commit_lock: Mutex<()>,
}

/// Keeps content from garbage collection while a pull that has not yet recorded its image runs.
pub struct Lease {
    keys: Vec<String>,
    leases: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut leases = self.leases.lock().unwrap();
        for k in &self.keys {
            if let Some(n) = leases.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    leases.remove(k);
                }
            }
        }
    }
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

impl ImageStore {
    /// Opens (creating) the store at `root`: empties tmp/ and loads the records. The caller collects the
    /// garbage a killed pull left once everything that holds snapshots has taken its lease.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        for dir in ["blobs/sha256", "snapshots", "tmp"] {
            fs::create_dir_all(root.join(dir))?;
        }
        let tmp = root.join("tmp");
        for entry in fs::read_dir(&tmp)? {
            remove_path(&entry?.path())?;
        }
        let db: ImageDb = crate::store::read_json(&root.join("images.json"))?.unwrap_or_default();
        Ok(ImageStore {
            root: root.to_path_buf(),
            db: Mutex::new(db),
            leases: Default::default(),
            commit_lock: Mutex::new(()),
        })
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex_of(digest))
    }

    pub fn snapshot_path(&self, chain_id: &str) -> PathBuf {
        self.root.join("snapshots").join(hex_of(chain_id))
    }

    /// The directory holding every snapshot.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub fn has_snapshot(&self, chain_id: &str) -> bool {
        self.snapshot_path(chain_id).is_dir()
    }

    /// Unpacked size of a snapshot: as recorded by the image that has it, or measured.
    pub fn snapshot_size(&self, chain_id: &str) -> u64 {
        let db = self.db.lock().unwrap();
        let recorded = db.images.iter().flat_map(|i| &i.layers).find(|l| l.chain_id == chain_id);
        recorded.map_or_else(|| disk_usage(&self.snapshot_path(chain_id)), |l| l.unpacked_size)
    }

    /// A fresh private directory under tmp/, removed when dropped unless its content was committed.
    pub fn tmp_dir(&self) -> io::Result<tempfile::TempDir> {
        tempfile::Builder::new().prefix("pull-").tempdir_in(self.root.join("tmp"))
    }

    /// Reads a blob if present.
    pub fn read_blob(&self, digest: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.blob_path(digest)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores a small verified blob (manifest, config) atomically.
    pub fn write_blob(&self, digest: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.blob_path(digest);
        if path.exists() {
            return Ok(());
        }
        crate::store::write_atomic(&path, bytes)
    }

    /// Moves a verified layer blob and its unpacked directory into place, unless the pull was cancelled
    /// (checked under the commit lock, so a collection that follows a cancel never misses a late commit).
    /// Returns false when cancelled. A concurrent pull may have committed the same content first.
    pub fn commit_layer(
        &self,
        blob: &Path,
        digest: &str,
        dir: &Path,
        chain_id: &str,
        cancelled: &AtomicBool,
    ) -> io::Result<bool> {
        let _commit = self.commit_lock.lock().unwrap();
        if cancelled.load(Ordering::SeqCst) {
            return Ok(false);
        }
        rename_unless_present(blob, &self.blob_path(digest))?;
        rename_unless_present(dir, &self.snapshot_path(chain_id))?;
        Ok(true)
    }

    /// Protects `keys` (digests, chain ids) from garbage collection until the lease is dropped.
    pub fn lease(&self, keys: impl IntoIterator<Item = String>) -> Lease {
        let keys: Vec<String> = keys.into_iter().map(|k| hex_of(&k).to_string()).collect();
        let mut leases = self.leases.lock().unwrap();
        for k in &keys {
            *leases.entry(k.clone()).or_default() += 1;
        }
        Lease { keys, leases: self.leases.clone() }
    }

    /// Records a pulled image under `reference`. The name moves off any other image; an image left with no
    /// name is dropped (its content goes at the next garbage collection).
    pub fn add_image(&self, mut record: ImageRecord, reference: &Reference) -> io::Result<()> {
        let name = reference.to_string();
        let mut db = self.db.lock().unwrap();
        for image in db.images.iter_mut() {
            image.references.retain(|r| r != &name);
        }
        if let Some(existing) = db.images.iter_mut().find(|i| i.id == record.id) {
            existing.references.push(name);
            existing.manifest_digest = record.manifest_digest;
            existing.index_digest = record.index_digest;
            existing.pulled_unix = record.pulled_unix;
        } else {
            record.references = vec![name];
            db.images.push(record);
        }
        db.images.retain(|i| !i.references.is_empty());
        self.persist(&db)
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.db.lock().unwrap().images.clone()
    }

    /// Finds an image by reference, id, or unique id prefix (with or without "sha256:").
    pub fn resolve(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let db = self.db.lock().unwrap();
        resolve_in(&db.images, name).map(|i| db.images[i].clone())
    }

    /// Removes a name (a `REPO@DIGEST` of a tagged image: that repository's names), or with an id every name
    /// of that image; deletes images left without a name and collects their content.
    pub fn remove(&self, name: &str) -> Result<Removed, ImageError> {
        let mut removed = Removed::default();
        {
            let mut db = self.db.lock().unwrap();
            let index = resolve_in(&db.images, name)?;
            let wanted = Reference::parse(name).ok();
            let image = &mut db.images[index];
            let goes = |r: &String| match &wanted {
                Some(w) if image_has(&image.references, w) => *r == w.to_string(),
                Some(w) if w.digest.is_some() => {
                    Reference::parse(r).is_ok_and(|r| r.registry == w.registry && r.repository == w.repository)
                }
                _ => true,
            };
            let (gone, kept): (Vec<String>, Vec<String>) = image.references.iter().cloned().partition(goes);
            image.references = kept;
            removed.untagged = gone;
            if image.references.is_empty() {
                removed.deleted.push(image.id.clone());
                db.images.remove(index);
            }
            self.persist(&db)?;
        }
        removed.reclaimed_bytes = self.gc()?;
        Ok(removed)
    }

    /// Deletes blobs and snapshots that no image references and no pull holds. Returns the bytes freed.
    pub fn gc(&self) -> io::Result<u64> {
        let _commit = self.commit_lock.lock().unwrap();
        let (blobs, snapshots) = {
            let db = self.db.lock().unwrap();
            let blobs: HashSet<String> =
                db.images.iter().flat_map(|i| i.blobs().map(|d| hex_of(d).to_string())).collect();
            let snapshots: HashSet<String> =
                db.images.iter().flat_map(|i| i.layers.iter().map(|l| hex_of(&l.chain_id).to_string())).collect();
            (blobs, snapshots)
        };
        let mut freed = 0;
        for (dir, keep) in [("blobs/sha256", &blobs), ("snapshots", &snapshots)] {
            for entry in fs::read_dir(self.root.join(dir))? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if keep.contains(&name) || self.leases.lock().unwrap().contains_key(&name) {
                    continue;
                }
                let path = entry.path();
                freed += disk_usage(&path);
                remove_path(&path)?;
                tracing::debug!(path = %path.display(), "garbage-collected");
            }
        }
        Ok(freed)
    }

    fn persist(&self, db: &ImageDb) -> io::Result<()> {
        crate::store::write_json(&self.root.join("images.json"), db)
    }
}

fn image_has(references: &[String], wanted: &Reference) -> bool {
    references.contains(&wanted.to_string())
}

fn resolve_in(images: &[ImageRecord], name: &str) -> Result<usize, ImageError> {
    if let Ok(wanted) = Reference::parse(name) {
        if let Some(i) = images.iter().position(|img| image_has(&img.references, &wanted)) {
            return Ok(i);
        }
        if let Some(i) = images.iter().position(|img| img.answers_to_digest(&wanted)) {
            return Ok(i);
        }
    }
    let prefix = hex_of(name);
    let is_hex = !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex {
        let matches: Vec<usize> = (0..images.len()).filter(|&i| hex_of(&images[i].id).starts_with(prefix)).collect();
        match matches.len() {
            1 => return Ok(matches[0]),
            n if n > 1 => {
                return Err(ImageError::Ambiguous(format!(
                    "image id prefix {name:?} matches {n} images; give more characters"
                )));
            }
            _ => {}
        }
    }
    Err(ImageError::NotFound(format!("no image {name:?} in the store (cm-client images lists them)")))
}

fn rename_unless_present(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        // Another pull committed the same content first: keep theirs.
        Err(e) if to.exists() => {
            tracing::debug!(to = %to.display(), error = %e, "already committed by another pull");
            remove_path(from)
        }
        Err(e) => Err(e),
    }
}

fn remove_path(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Bytes of regular files under `path` (not following symlinks).
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return if meta.is_file() { meta.len() } else { 0 };
    }
    fs::read_dir(path).map(|entries| entries.filter_map(Result::ok).map(|e| disk_usage(&e.path())).sum()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: char, chain: char) -> ImageRecord {
        ImageRecord {
            id: format!("sha256:{}", id.to_string().repeat(64)),
            references: vec![],
            manifest_digest: format!("sha256:{}", "f".repeat(64)),
            index_digest: None,
            platform: Platform::default(),
            layers: vec![LayerRecord {
                digest: format!("sha256:{}", "e".repeat(64)),
                size: 1,
                media_type: String::new(),
                diff_id: String::new(),
                chain_id: format!("sha256:{}", chain.to_string().repeat(64)),
                unpacked_size: 5,
            }],
            created: None,
            pulled_unix: 0,
        }
    }

    #[test]
    fn removing_the_last_name_collects_unshared_content_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let (a, b) = (record('a', '1'), record('b', '2'));
        for r in [&a, &b] {
            fs::create_dir_all(store.snapshot_path(&r.layers[0].chain_id)).unwrap();
            fs::write(store.snapshot_path(&r.layers[0].chain_id).join("f"), "12345").unwrap();
            store.write_blob(&r.id, b"{}").unwrap();
        }
        store.add_image(a.clone(), &Reference::parse("x/a").unwrap()).unwrap();
        store.add_image(b.clone(), &Reference::parse("x/b").unwrap()).unwrap();
        let removed = store.remove("x/a").unwrap();
        assert_eq!(removed.untagged, vec!["docker.io/x/a:latest"]);
        assert_eq!(removed.deleted, vec![a.id.clone()]);
        assert!(!store.has_snapshot(&a.layers[0].chain_id));
        assert!(store.has_snapshot(&b.layers[0].chain_id));
        assert!(!store.blob_path(&a.id).exists());
        assert!(store.blob_path(&b.id).exists());
        assert!(matches!(store.remove("x/a"), Err(ImageError::NotFound(_))));
    }

    #[test]
    fn leased_content_survives_gc_and_reopen_empties_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let chain = format!("sha256:{}", "c".repeat(64));
        fs::create_dir_all(store.snapshot_path(&chain)).unwrap();
        let lease = store.lease([chain.clone()]);
        store.gc().unwrap();
        assert!(store.has_snapshot(&chain));
        drop(lease);
        store.gc().unwrap();
        assert!(!store.has_snapshot(&chain));
        let tmp = store.tmp_dir().unwrap().keep();
        drop(store);
        ImageStore::open(dir.path()).unwrap();
        assert!(!tmp.exists(), "reopening empties tmp/");
    }

    #[test]
    fn a_name_moves_to_the_newer_image_and_ids_resolve_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let r = Reference::parse("127.0.0.1:5000/app:v1").unwrap();
        store.add_image(record('a', '1'), &r).unwrap();
        store.add_image(record('b', '2'), &r).unwrap();
        let images = store.list();
        assert_eq!(images.len(), 1, "the image left without a name is dropped");
        assert_eq!(store.resolve("bbbb").unwrap().id, images[0].id);
        assert_eq!(store.resolve("127.0.0.1:5000/app:v1").unwrap().id, images[0].id);
        assert!(matches!(store.resolve("aaaa"), Err(ImageError::NotFound(_))));
    }

    #[test]
    fn a_tag_pulled_image_answers_to_its_repository_at_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let manifest = format!("sha256:{}", "f".repeat(64));
        store.add_image(record('a', '1'), &Reference::parse("127.0.0.1:5000/app:v1").unwrap()).unwrap();
        store.add_image(record('a', '1'), &Reference::parse("127.0.0.1:5000/other:v2").unwrap()).unwrap();
        let image = store.resolve("127.0.0.1:5000/app:v1").unwrap();
        assert_eq!(
            image.repo_digests(),
            vec![format!("127.0.0.1:5000/app@{manifest}"), format!("127.0.0.1:5000/other@{manifest}")]
        );
        for name in image.repo_digests() {
            assert_eq!(store.resolve(&name).unwrap().id, image.id, "{name}");
        }
        // A tag beside the digest is ignored, as docker does.
        assert_eq!(store.resolve(&format!("127.0.0.1:5000/app:v9@{manifest}")).unwrap().id, image.id);
        let wrong_digest = format!("127.0.0.1:5000/app@sha256:{}", "0".repeat(64));
        assert!(matches!(store.resolve(&wrong_digest), Err(ImageError::NotFound(_))));
        let wrong_repo = format!("127.0.0.1:5000/third@{manifest}");
        assert!(matches!(store.resolve(&wrong_repo), Err(ImageError::NotFound(_))));

        // Removing by REPO@DIGEST untags that repository only.
        let removed = store.remove(&format!("127.0.0.1:5000/app@{manifest}")).unwrap();
        assert_eq!(removed.untagged, vec!["127.0.0.1:5000/app:v1"]);
        assert!(removed.deleted.is_empty());
        assert_eq!(store.resolve(&format!("127.0.0.1:5000/other@{manifest}")).unwrap().id, image.id);
        assert!(store.resolve(&format!("127.0.0.1:5000/app@{manifest}")).is_err());
    }

    #[test]
    fn an_image_pulled_through_an_index_lists_the_index_digest_and_answers_to_both() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let index = format!("sha256:{}", "9".repeat(64));
        let manifest = format!("sha256:{}", "f".repeat(64));
        let pinned = format!("sha256:{}", "8".repeat(64));
        let mut r = record('a', '1');
        r.index_digest = Some(index.clone());
        store.add_image(r.clone(), &Reference::parse("reg.example/multi:1").unwrap()).unwrap();
        // Also pulled by a digest the record does not hold (an older index of the same image).
        store.add_image(r, &Reference::parse(&format!("reg.example/multi@{pinned}")).unwrap()).unwrap();
        let image = store.resolve("reg.example/multi:1").unwrap();
        assert_eq!(
            image.repo_digests(),
            vec![format!("reg.example/multi@{pinned}"), format!("reg.example/multi@{index}")]
        );
        for digest in [&index, &manifest, &pinned] {
            assert_eq!(store.resolve(&format!("reg.example/multi@{digest}")).unwrap().id, image.id, "{digest}");
        }
    }
}
