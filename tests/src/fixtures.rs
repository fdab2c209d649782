//! Ready-made images for the end-to-end tests and the demo/benchmark scripts.
//!
//! Everything is built from the host's static busybox (`/bin/busybox`, Debian `busybox-static`) and
//! constants, so the same process always builds the same digests (only [`hostile_image`] embeds a
//! per-process name).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::image::{Image, ImageConfig, Index, ManifestFormat, Platform};
use crate::layer::{Compression, Entry, Layer};
use crate::registry::Registry;

/// The host busybox copied into every runnable image.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Enough `..` to climb from any unpack directory up to `/`.
const CLIMB_TO_ROOT: &str = "../../../../../../../../../../../..";

/// The busybox root filesystem layer (gzip), built once per process:
/// `/bin/busybox` (0755), `/bin/sh` and every applet of `busybox --list` as symlinks to `busybox`,
/// directories /etc /tmp (1777) /root /proc /sys /dev /home /usr/bin, and /etc/passwd and /etc/group
/// with root and nobody.
///
/// # Panics
/// If `/bin/busybox` is missing or does not run (install Debian's `busybox-static`).
pub fn busybox_layer() -> Layer {
    static LAYER: OnceLock<Layer> = OnceLock::new();
    LAYER.get_or_init(|| Layer::new(&busybox_entries(), Compression::Gzip)).clone()
}

fn busybox_entries() -> Vec<Entry> {
    let binary =
        std::fs::read(HOST_BUSYBOX).unwrap_or_else(|e| panic!("reading {HOST_BUSYBOX} (install busybox-static): {e}"));
    let list = Command::new(HOST_BUSYBOX)
        .arg("--list")
        .output()
        .unwrap_or_else(|e| panic!("running {HOST_BUSYBOX} --list: {e}"));
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.contains('/') && *name != "busybox" && *name != "sh")
        .map(Into::into)
        .collect();
    applets.sort();
    applets.dedup();

    let mut entries = vec![
        Entry::dir("/bin", 0o755),
        Entry::file("/bin/busybox", 0o755, binary),
        Entry::symlink("/bin/sh", "busybox"),
    ];
    entries.extend(applets.iter().map(|applet| Entry::symlink(&format!("/bin/{applet}"), "busybox")));
    entries.extend([
        Entry::dir("/dev", 0o755),
        Entry::dir("/etc", 0o755),
        Entry::file(
            "/etc/passwd",
            0o644,
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
        ),
        Entry::file("/etc/group", 0o644, "root:x:0:\nnobody:x:65534:\n"),
        Entry::dir("/home", 0o755),
        Entry::dir("/proc", 0o755),
        Entry::dir("/root", 0o700),
        Entry::dir("/sys", 0o755),
        Entry::dir("/tmp", 0o1777),
        Entry::dir("/usr", 0o755),
        Entry::dir("/usr/bin", 0o755),
    ]);
    entries
}

/// OCI image of [`busybox_layer`] for the host platform, `Cmd ["sh"]`.
pub fn busybox_image() -> Image {
    Image::new(ManifestFormat::Oci, ImageConfig::default(), vec![busybox_layer()])
}

/// OCI image of three layers exercising layer application:
///
/// 1. busybox (gzip);
/// 2. zstd: `/data/a` ("a\n"), `/data/b` ("b\n"), `/data/dir/c` ("c\n"), `/etc/motd` ("cm e2e\n");
/// 3. uncompressed tar: whiteout `/data/.wh.a`, opaque `/data/dir/.wh..wh..opq`, new `/data/dir/d`
///    ("d\n").
///
/// Unpacked, it has /data/b, /data/dir/d and /etc/motd, and neither /data/a nor /data/dir/c.
pub fn multilayer_image() -> Image {
    multilayer(ManifestFormat::Oci, Compression::Zstd, Compression::Uncompressed)
}

/// [`multilayer_image`] as Docker schema 2 with Docker media types; all layers gzip.
pub fn multilayer_docker_image() -> Image {
    multilayer(ManifestFormat::Docker, Compression::Gzip, Compression::Gzip)
}

fn multilayer(format: ManifestFormat, second: Compression, third: Compression) -> Image {
    let files = Layer::new(
        &[
            Entry::dir("/data", 0o755),
            Entry::file("/data/a", 0o644, "a\n"),
            Entry::file("/data/b", 0o644, "b\n"),
            Entry::dir("/data/dir", 0o755),
            Entry::file("/data/dir/c", 0o644, "c\n"),
            Entry::dir("/etc", 0o755),
            Entry::file("/etc/motd", 0o644, "cm e2e\n"),
        ],
        second,
    );
    let deletions = Layer::new(
        &[
            Entry::dir("/data", 0o755),
            Entry::whiteout("/data/a"),
            Entry::dir("/data/dir", 0o755),
            Entry::opaque("/data/dir"),
            Entry::file("/data/dir/d", 0o644, "d\n"),
        ],
        third,
    );
    Image::new(format, ImageConfig::default(), vec![busybox_layer(), files, deletions])
}

/// OCI index listing, in this order: linux/arm64/v8, linux/amd64, linux/arm/v7. Each image has a file
/// `/platform` holding its architecture name without a newline ("arm64", "amd64", "arm"); only the
/// amd64 one also has the busybox layer. A client on x86_64 must pick amd64, not the first entry.
pub fn multiarch_index() -> Index {
    multiarch(ManifestFormat::Oci)
}

/// [`multiarch_index`] as a Docker manifest list of Docker schema 2 images.
pub fn multiarch_docker_index() -> Index {
    multiarch(ManifestFormat::Docker)
}

fn multiarch(format: ManifestFormat) -> Index {
    let image = |architecture: &str, variant: Option<&str>, mut layers: Vec<Layer>| {
        layers.push(Layer::new(&[Entry::file("/platform", 0o644, architecture)], Compression::Gzip));
        let config = ImageConfig { platform: Platform::linux(architecture, variant), ..ImageConfig::default() };
        Image::new(format, config, layers)
    };
    Index::new(
        format,
        vec![
            image("arm64", Some("v8"), vec![]),
            image("amd64", None, vec![busybox_layer()]),
            image("arm", Some("v7"), vec![]),
        ],
    )
}

/// An image whose second layer tries to write outside the root filesystem, and the host paths that
/// must not exist after pulling it.
pub struct HostileImage {
    /// The image to push.
    pub image: Image,
    /// Files the layer tries to create on the host; a safe pull leaves all of them absent.
    pub forbidden_host_paths: Vec<PathBuf>,
}

/// busybox plus a gzip layer of hostile entries that a safe unpacker clamps inside the snapshot, in order:
///
/// - a normal file `ok` holding "fine" (no newline);
/// - `../../…/tmp/cm-escape-<unique>`: parent-directory escape;
/// - `/cm-abs-<unique>`: absolute name;
/// - symlink `evil -> /`, then `evil/tmp/cm-via-symlink-<unique>`;
/// - symlink `up -> ../../…/tmp`, then `up/cm-via-relsymlink-<unique>`;
/// - hard link `hl -> ../../…/ok` (clamped, it links the layer's own `/ok`);
/// - character device `dev/evil-null` (1, 3).
///
/// `<unique>` is `<pid>-<nanoseconds>`, fixed per process; the `..` chains are long enough to reach
/// `/` from any unpack directory.
pub fn hostile_image() -> HostileImage {
    let unique = unique_suffix();
    let escape = format!("/tmp/cm-escape-{unique}");
    let absolute = format!("/cm-abs-{unique}");
    let via_symlink = format!("/tmp/cm-via-symlink-{unique}");
    let via_relative_symlink = format!("/tmp/cm-via-relsymlink-{unique}");

    let hostile = Layer::new(
        &[
            Entry::file("ok", 0o644, "fine"),
            Entry::raw_file(&format!("{CLIMB_TO_ROOT}{escape}"), "escaped"),
            Entry::raw_file(&absolute, "escaped"),
            Entry::raw_symlink("evil", "/"),
            Entry::raw_file(&format!("evil{via_symlink}"), "escaped"),
            Entry::raw_symlink("up", &format!("{CLIMB_TO_ROOT}/tmp")),
            Entry::raw_file(&format!("up/cm-via-relsymlink-{unique}"), "escaped"),
            Entry::raw_hardlink("hl", &format!("{CLIMB_TO_ROOT}/ok")),
            Entry::raw_char_device("dev/evil-null", 1, 3),
        ],
        Compression::Gzip,
    );
    HostileImage {
        image: Image::new(ManifestFormat::Oci, ImageConfig::default(), vec![busybox_layer(), hostile]),
        forbidden_host_paths: [escape, absolute, via_symlink, via_relative_symlink]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
    }
}

/// The host file [`hostile_hardlink_image`] tries to hard-link.
pub const HOSTILE_HARDLINK_TARGET: &str = "/etc/hostname";

/// busybox plus a gzip layer whose only entry is a hard link `hl -> ../../…/etc/hostname`: clamped
/// inside the snapshot, its target does not exist, so a safe unpacker fails the pull rather than link
/// the host's file.
pub fn hostile_hardlink_image() -> Image {
    let layer = Layer::new(
        &[Entry::raw_hardlink("hl", &format!("{CLIMB_TO_ROOT}{HOSTILE_HARDLINK_TARGET}"))],
        Compression::Gzip,
    );
    Image::new(ManifestFormat::Oci, ImageConfig::default(), vec![busybox_layer(), layer])
}

/// `<pid>-<nanoseconds since the epoch>`, the same for the whole process.
fn unique_suffix() -> &'static str {
    static UNIQUE: OnceLock<String> = OnceLock::new();
    UNIQUE.get_or_init(|| {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos());
        format!("{}-{nanos}", std::process::id())
    })
}

/// Small text files per bench layer, so the unpacker does per-file work too.
const BENCH_SMALL_FILES: usize = 300;

/// Largest pseudo-random file in a bench layer.
const BENCH_CHUNK: usize = 4 << 20;

/// busybox plus `layers` gzip layers totalling about `total_mb` MiB compressed. Each layer holds
/// incompressible pseudo-random files (xorshift, seeded by the layer number, at most 4 MiB each) under
/// `/bench/<n>/` and 300 small text files under `/bench/<n>/files/`. Deterministic.
pub fn bench_image(total_mb: usize, layers: usize) -> Image {
    let random_bytes = (total_mb << 20) / layers.max(1);
    let bench_layers: Vec<Layer> = std::thread::scope(|scope| {
        let builders: Vec<_> = (0..layers).map(|n| scope.spawn(move || bench_layer(n, random_bytes))).collect();
        builders.into_iter().map(|builder| builder.join().expect("building a bench layer")).collect()
    });
    let mut all = vec![busybox_layer()];
    all.extend(bench_layers);
    Image::new(ManifestFormat::Oci, ImageConfig::default(), all)
}

fn bench_layer(n: usize, random_bytes: usize) -> Layer {
    let dir = format!("/bench/{n}");
    let mut rng = XorShift64(0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1));
    let mut entries =
        vec![Entry::dir("/bench", 0o755), Entry::dir(&dir, 0o755), Entry::dir(&format!("{dir}/files"), 0o755)];
    let mut remaining = random_bytes;
    let mut chunk = 0;
    while remaining > 0 {
        let len = remaining.min(BENCH_CHUNK);
        entries.push(Entry::file(&format!("{dir}/random-{chunk}.bin"), 0o644, rng.bytes(len)));
        remaining -= len;
        chunk += 1;
    }
    entries.extend((0..BENCH_SMALL_FILES).map(|i| {
        Entry::file(
            &format!("{dir}/files/file-{i:03}.txt"),
            0o644,
            format!("bench layer {n}, file {i}, token {:016x}\n", rng.next()),
        )
    }));
    Layer::new(&entries, Compression::Gzip)
}

/// Marsaglia's xorshift64: fast, seeded, good enough to defeat gzip.
struct XorShift64(u64);

impl XorShift64 {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(len + 8);
        while bytes.len() < len {
            bytes.extend_from_slice(&self.next().to_le_bytes());
        }
        bytes.truncate(len);
        bytes
    }
}

/// An image meant to have one of its layers corrupted in the registry after pushing.
pub struct TamperedImage {
    /// busybox plus the layer to corrupt.
    pub image: Image,
    /// The layer to corrupt (the last one, not busybox).
    pub tampered_layer_digest: String,
}

impl TamperedImage {
    /// Corrupts the layer in `registry`'s storage (after pushing), keeping its size.
    pub fn tamper(&self, registry: &Registry) -> Result<()> {
        registry.tamper_blob(&self.tampered_layer_digest)
    }
}

/// busybox plus a small gzip layer (`/tampered/data`, 64 KiB of pseudo-random bytes) to corrupt
/// with [`TamperedImage::tamper`] after pushing.
pub fn tampered_image() -> TamperedImage {
    let extra = Layer::new(
        &[Entry::dir("/tampered", 0o755), Entry::file("/tampered/data", 0o644, XorShift64(42).bytes(64 << 10))],
        Compression::Gzip,
    );
    let tampered_layer_digest = extra.digest().to_owned();
    TamperedImage {
        image: Image::new(ManifestFormat::Oci, ImageConfig::default(), vec![busybox_layer(), extra]),
        tampered_layer_digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_layers_do_not_compress_much_and_are_reproducible() {
        let image = bench_image(2, 2);
        assert_eq!(image.layers().len(), 3);
        let compressed: u64 = image.layers()[1..].iter().map(Layer::size).sum();
        assert!(compressed > 2 << 20, "compressed to {compressed} bytes");
        assert_eq!(image.digest(), bench_image(2, 2).digest());
    }

    #[test]
    fn multiarch_lists_arm64_first() {
        let index = multiarch_index();
        let architectures: Vec<&str> =
            index.images().iter().map(|image| image.platform().architecture.as_str()).collect();
        assert_eq!(architectures, ["arm64", "amd64", "arm"]);
    }

    #[test]
    fn hostile_paths_point_into_host_tmp_and_root() {
        let hostile = hostile_image();
        assert_eq!(hostile.forbidden_host_paths.len(), 4);
        assert!(hostile.forbidden_host_paths.iter().all(|path| path.is_absolute() && !path.exists()));
    }
}
