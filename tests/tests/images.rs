//! End to end: pulling, listing, inspecting and removing images against a real registry on loopback, through
//! cm-client, grpcurl and the generated gRPC client. One registry and one set of pushed images serve the
//! whole binary; tests that kill or restart a server get their own.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use cm_api::v1 as pb;
use cm_e2e::harness::*;
use cm_e2e::proxy::SlowProxy;
use cm_e2e::server::CmServer;
use cm_e2e::trials;
use cm_e2e::{HostileImage, Image, Registry, TamperedImage, fixtures, push_image, push_index};
use libtest_mimic::Arguments;

/// The registry and what was pushed to it.
struct World {
    registry: Registry,
    server: TestServer,
    busybox: Image,
    multilayer: Image,
    hostile: HostileImage,
    tampered: TamperedImage,
    bench: Image,
    /// The registry behind a 4 MB/s proxy, for acting in the middle of a download.
    slow: SlowProxy,
}

impl World {
    fn reference(&self, name: &str) -> String {
        format!("{}/{name}", self.registry.addr())
    }
}

fn setup() -> Result<World> {
    let registry = Registry::start()?;
    let addr = registry.addr();
    let busybox = fixtures::busybox_image();
    push_image(&addr, "test/busybox", "latest", &busybox)?;
    let multilayer = fixtures::multilayer_image();
    push_image(&addr, "test/multilayer", "latest", &multilayer)?;
    push_image(&addr, "test/multilayer-docker", "latest", &fixtures::multilayer_docker_image())?;
    push_index(&addr, "test/multiarch", "latest", &fixtures::multiarch_index())?;
    push_index(&addr, "test/multiarch-docker", "latest", &fixtures::multiarch_docker_index())?;
    let hostile = fixtures::hostile_image();
    push_image(&addr, "test/hostile", "latest", &hostile.image)?;
    let tampered = fixtures::tampered_image();
    push_image(&addr, "test/tampered", "latest", &tampered.image)?;
    tampered.tamper(&registry)?;
    push_image(&addr, "test/hostile-hardlink", "latest", &fixtures::hostile_hardlink_image())?;
    // What a mirror of docker.io serves for "busybox".
    push_image(&addr, "library/busybox", "latest", &busybox)?;
    let bench = fixtures::bench_image(24, 3);
    push_image(&addr, "test/big", "latest", &bench)?;
    let slow = SlowProxy::start(&addr, 4 << 20)?;
    let server = TestServer::start(&[])?;
    Ok(World { slow, registry, server, busybox, multilayer, hostile, tampered, bench })
}

fn main() {
    let args = Arguments::from_args();
    let world = Arc::new(setup().expect("setting up the registry and images"));
    let trials = trials![world;
        pull_streams_progress_then_lists_and_inspects_the_image,
        server_killed_mid_pull_restarts_consistent_and_pulls_again,
        second_pull_downloads_nothing_and_says_so,
        whiteouts_and_opaque_dirs_become_overlay_forms,
        docker_schema2_images_pull_too,
        multiarch_index_selects_this_hosts_platform,
        hostile_layer_writes_nothing_outside_the_store,
        hardlink_to_a_host_file_fails_the_pull_and_links_nothing,
        tampered_blob_is_refused_and_nothing_is_stored,
        bad_references_get_clear_errors_with_the_right_code,
        grpcurl_lists_describes_checks_health_and_pulls,
        rmi_untags_and_collects_only_unshared_content,
        client_disconnect_mid_pull_leaves_a_consistent_store,
        a_live_socket_is_refused_and_a_stale_one_replaced,
        a_mirrored_registry_is_pulled_from_its_mirror_and_never_contacted,
    ];
    run_suite(&args, trials, world, |w| &w.server);
}

// ------------------------------------------------------------------------------------------------ helpers

fn chain_ids(image: &Image) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for layer in image.layers() {
        let next = match out.last() {
            None => layer.diff_id().to_string(),
            Some(parent) => cm_e2e::sha256_digest(format!("{parent} {}", layer.diff_id()).as_bytes()),
        };
        out.push(next);
    }
    out
}

fn snapshot(server: &CmServer, chain_id: &str) -> PathBuf {
    server.root().join("images/snapshots").join(chain_id.trim_start_matches("sha256:"))
}

fn blob(server: &CmServer, digest: &str) -> PathBuf {
    server.root().join("images/blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

// -------------------------------------------------------------------------------------------------- tests

fn pull_streams_progress_then_lists_and_inspects_the_image(w: &World) -> Result<()> {
    let reference = w.reference("test/busybox:latest");
    let out = w.server.client_ok(&["pull", &reference])?;
    ensure!(out.contains("resolved to"), "no resolved line:\n{out}");
    ensure!(out.contains(w.busybox.digest()), "manifest digest missing:\n{out}");
    ensure!(out.contains("linux/amd64") || !cfg!(target_arch = "x86_64"), "platform missing:\n{out}");
    let image_id = w.busybox.config_blob().digest.clone();
    ensure!(out.lines().any(|l| l.trim() == image_id), "image id missing:\n{out}");
    ensure!(out.contains("Pull complete") || out.contains("Already exists"), "no per-layer phase lines:\n{out}");

    let images = w.server.client_ok(&["images"])?;
    let header = images.lines().next().unwrap_or_default();
    for column in ["REPOSITORY", "TAG", "IMAGE ID", "SIZE", "CREATED"] {
        ensure!(header.contains(column), "column {column} missing:\n{images}");
    }
    let row = images
        .lines()
        .find(|l| l.starts_with(&format!("{} ", w.reference("test/busybox"))))
        .with_context(|| format!("no row for the image:\n{images}"))?;
    ensure!(row.contains("latest") && row.contains(&image_id[7..19]), "bad row: {row}");

    let inspect = w.server.client_ok(&["image", "inspect", &reference])?;
    let json: serde_json::Value = serde_json::from_str(&inspect)?;
    ensure!(json[0]["Id"] == image_id.as_str(), "inspect id: {inspect}");
    ensure!(json[0]["Config"]["config"]["Cmd"][0] == "sh", "inspect config: {inspect}");
    // The short id works wherever a reference does.
    w.server.client_ok(&["image", "inspect", &image_id[7..19]])?;
    Ok(())
}

fn second_pull_downloads_nothing_and_says_so(w: &World) -> Result<()> {
    let server = TestServer::start(&[])?;
    let reference = w.reference("test/multilayer:latest");
    let first = server.client_ok(&["pull", &reference])?;
    ensure!(first.contains("Downloaded newer image"), "first pull:\n{first}");
    let second = server.client_ok(&["pull", &reference])?;
    ensure!(second.contains("Image is up to date"), "second pull:\n{second}");
    ensure!(!second.contains("Downloading"), "second pull downloaded:\n{second}");
    ensure!(second.matches("Already exists").count() == w.multilayer.layers().len(), "second pull:\n{second}");
    Ok(())
}

fn whiteouts_and_opaque_dirs_become_overlay_forms(w: &World) -> Result<()> {
    w.server.client_ok(&["pull", &w.reference("test/multilayer:latest")])?;
    let chains = chain_ids(&w.multilayer);
    let top = snapshot(&w.server, &chains[2]);
    let whiteout = std::fs::symlink_metadata(top.join("data/a")).context("whiteout for /data/a")?;
    ensure!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0, "data/a is not a 0/0 char device");
    let opaque = xattr(&top.join("data/dir"), "trusted.overlay.opaque")?;
    ensure!(opaque.as_deref() == Some(&b"y"[..]), "data/dir opaque xattr: {opaque:?}");
    ensure!(top.join("data/dir/d").is_file(), "new file in the opaque dir missing");
    // The lower layers keep their own content; the zstd layer unpacked.
    ensure!(snapshot(&w.server, &chains[1]).join("data/a").is_file(), "zstd layer content missing");
    ensure!(snapshot(&w.server, &chains[0]).join("bin/busybox").is_file(), "busybox layer missing");
    Ok(())
}

fn xattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let out = std::process::Command::new("getfattr")
        .args(["--absolute-names", "--only-values", "-n", name])
        .arg(path)
        .output();
    match out {
        Ok(out) if out.status.success() => Ok(Some(out.stdout)),
        Ok(_) => Ok(None),
        // Without getfattr, read it with the syscall.
        Err(_) => read_xattr(path, name),
    }
}

fn read_xattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let cname = std::ffi::CString::new(name)?;
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let n = unsafe { nix::libc::lgetxattr(cpath.as_ptr(), cname.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Ok(None);
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

fn docker_schema2_images_pull_too(w: &World) -> Result<()> {
    let out = w.server.client_ok(&["pull", &w.reference("test/multilayer-docker:latest")])?;
    ensure!(out.contains("Pull complete") || out.contains("Already exists"), "{out}");
    let out = w.server.client_ok(&["pull", &w.reference("test/multiarch-docker")])?;
    ensure!(out.contains("linux/amd64") || !cfg!(target_arch = "x86_64"), "{out}");
    Ok(())
}

fn multiarch_index_selects_this_hosts_platform(w: &World) -> Result<()> {
    let index = fixtures::multiarch_index();
    let host = cm_e2e::Platform::host();
    let chosen = index.image_for(&host).context("fixture has the host platform")?;
    let out = w.server.client_ok(&["pull", &w.reference("test/multiarch:latest")])?;
    ensure!(out.contains(chosen.digest()), "did not resolve to the {} manifest:\n{out}", host.architecture);
    let top = chain_ids(chosen).pop().unwrap();
    let platform = std::fs::read_to_string(snapshot(&w.server, &top).join("platform"))?;
    ensure!(platform.trim() == host.architecture, "unpacked /platform says {platform:?}");
    let inspect = w.server.client_ok(&["image", "inspect", &w.reference("test/multiarch")])?;
    ensure!(inspect.contains(&format!("\"architecture\": \"{}\"", host.architecture)), "{inspect}");
    Ok(())
}

fn hostile_layer_writes_nothing_outside_the_store(w: &World) -> Result<()> {
    let out = w.server.client(&["pull", &w.reference("test/hostile:latest")]);
    for path in &w.hostile.forbidden_host_paths {
        ensure!(!path.exists(), "{} was written outside the store", path.display());
    }
    // cm clamps hostile entries inside the snapshot and skips device nodes, so the pull succeeds.
    cm_e2e::server::check(&out, "pull of the hostile image")?;
    let top = snapshot(&w.server, chain_ids(&w.hostile.image).last().unwrap());
    ensure!(std::fs::read_to_string(top.join("ok"))? == "fine", "the normal file is missing");
    let (ok, hl) = (std::fs::metadata(top.join("ok"))?, std::fs::metadata(top.join("hl"))?);
    ensure!(ok.ino() == hl.ino(), "the clamped hard link should link the layer's own /ok");
    ensure!(!top.join("dev/evil-null").exists(), "the device node was created");
    for path in &w.hostile.forbidden_host_paths {
        let name = path.file_name().unwrap();
        let found = walk(&top).into_iter().any(|p| p.file_name() == Some(name));
        ensure!(found, "{} should have been clamped inside the snapshot", name.to_string_lossy());
    }
    Ok(())
}

fn hardlink_to_a_host_file_fails_the_pull_and_links_nothing(w: &World) -> Result<()> {
    let server = TestServer::start(&[])?;
    let links = std::fs::metadata(cm_e2e::HOSTILE_HARDLINK_TARGET)?.nlink();
    let out = server.client(&["pull", &w.reference("test/hostile-hardlink:latest")]);
    ensure!(!out.status.success(), "the pull succeeded");
    let err = stderr(&out);
    ensure!(err.contains("\"hl\"") && err.contains("etc/hostname"), "error does not name the entry: {err}");
    ensure!(std::fs::metadata(cm_e2e::HOSTILE_HARDLINK_TARGET)?.nlink() == links, "a host file was linked");
    store_is_consistent(&server)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

fn tampered_blob_is_refused_and_nothing_is_stored(w: &World) -> Result<()> {
    let server = TestServer::start(&[])?;
    let out = server.client(&["pull", &w.reference("test/tampered:latest")]);
    ensure!(!out.status.success(), "tampered pull succeeded:\n{}", stdout(&out));
    let err = stderr(&out);
    ensure!(err.contains("data loss") && err.contains("does not match"), "error: {err}");
    ensure!(err.contains(&w.tampered.tampered_layer_digest), "error does not name the layer: {err}");
    let images = server.client_ok(&["images", "-q"])?;
    ensure!(images.trim().is_empty(), "an image was recorded: {images}");
    eventually("store emptied", Duration::from_secs(10), || {
        Ok(entries(&server.root().join("images/snapshots")).is_empty()
            && entries(&server.root().join("images/blobs/sha256")).is_empty()
            && entries(&server.root().join("images/tmp")).is_empty())
    })?;
    ensure!(!blob(&server, &w.tampered.tampered_layer_digest).exists());
    Ok(())
}

fn bad_references_get_clear_errors_with_the_right_code(w: &World) -> Result<()> {
    let expect = |reference: &str, code: &str, needle: &str| -> Result<()> {
        let out = w.server.client(&["pull", reference]);
        let err = stderr(&out);
        ensure!(!out.status.success(), "pull {reference} succeeded");
        ensure!(err.contains(code) && err.contains(needle), "pull {reference}: {err}");
        Ok(())
    };
    expect("Not/A/Valid", "invalid argument", "lowercase")?;
    expect("busybox:bad!", "invalid argument", "tag")?;
    expect("busybox:-bad", "invalid argument", "tag")?;
    expect(&w.reference("test/nosuchrepo:latest"), "not found", "test/nosuchrepo")?;
    expect(&w.reference("test/busybox:nosuchtag"), "not found", "nosuchtag")?;
    expect("127.0.0.1:1/test/busybox", "unavailable", "127.0.0.1:1")?;
    let out = w.server.client(&["rmi", "test/never-pulled"]);
    ensure!(!out.status.success() && stderr(&out).contains("not found"), "rmi: {}", stderr(&out));
    Ok(())
}

fn grpcurl_lists_describes_checks_health_and_pulls(w: &World) -> Result<()> {
    let list = w.server.grpcurl(&["list"]);
    ensure!(stdout(&list).contains("cm.v1.ContainerService"), "list: {}{}", stdout(&list), stderr(&list));
    let describe = stdout(&w.server.grpcurl(&["describe", "cm.v1.ContainerService"]));
    ensure!(describe.contains("rpc PullImage") && describe.contains("stream .cm.v1.PullImageResponse"), "{describe}");
    let describe = stdout(&w.server.grpcurl(&["describe", "cm.v1.PullImageRequest"]));
    ensure!(describe.contains("string reference = 1;"), "{describe}");
    let health = stdout(&w.server.grpcurl(&["grpc.health.v1.Health/Check"]));
    ensure!(health.contains("SERVING"), "health: {health}");
    let body = format!(r#"{{"reference":"{}"}}"#, w.reference("test/busybox:latest"));
    let pull = w.server.grpcurl(&["-d", &body, "cm.v1.ContainerService/PullImage"]);
    let out = stdout(&pull);
    ensure!(pull.status.success(), "grpcurl pull: {out}{}", stderr(&pull));
    for needle in ["\"resolved\"", "\"totalBytes\"", "\"layer\"", "\"summary\"", "\"done\"", "\"imageId\""] {
        ensure!(out.contains(needle), "{needle} missing in the PullImage stream:\n{out}");
    }
    ensure!(out.find("\"resolved\"") < out.find("\"done\""), "resolved must come first:\n{out}");
    let bad = w.server.grpcurl(&["-d", r#"{"reference":"UPPER"}"#, "cm.v1.ContainerService/PullImage"]);
    ensure!(stderr(&bad).contains("InvalidArgument"), "{}", stderr(&bad));
    Ok(())
}

fn rmi_untags_and_collects_only_unshared_content(w: &World) -> Result<()> {
    let server = TestServer::start(&[])?;
    server.client_ok(&["pull", &w.reference("test/busybox:latest")])?;
    server.client_ok(&["pull", &w.reference("test/multilayer:latest")])?;
    let busybox_chain = chain_ids(&w.busybox)[0].clone();
    let multilayer_top = chain_ids(&w.multilayer)[2].clone();
    let out = server.client_ok(&["rmi", &w.reference("test/multilayer:latest")])?;
    ensure!(out.contains("Untagged:") && out.contains("Deleted:"), "{out}");
    ensure!(!snapshot(&server, &multilayer_top).exists(), "unshared snapshot kept");
    ensure!(snapshot(&server, &busybox_chain).exists(), "shared busybox snapshot removed");
    ensure!(!blob(&server, w.multilayer.digest()).exists(), "manifest blob kept");
    let id = w.busybox.config_blob().digest.clone();
    server.client_ok(&["rmi", &id[7..19]])?;
    ensure!(entries(&server.root().join("images/snapshots")).is_empty(), "snapshots left");
    ensure!(entries(&server.root().join("images/blobs/sha256")).is_empty(), "blobs left");
    ensure!(server.client_ok(&["images", "-q"])?.trim().is_empty());
    Ok(())
}

/// Starts a pull with the generated client and returns once layer bytes are arriving.
async fn pull_until_downloading(server: &CmServer, reference: &str) -> Result<tonic::Streaming<pb::PullImageResponse>> {
    let mut client = server.grpc().await?;
    let mut stream =
        client.pull_image(pb::PullImageRequest { reference: reference.into(), auth: None }).await?.into_inner();
    while let Some(message) = stream.message().await? {
        if let Some(pb::pull_image_response::Event::Layer(l)) = message.event
            && l.phase == pb::LayerPhase::Downloading as i32
            && l.current_bytes > 0
        {
            return Ok(stream);
        }
    }
    bail!("the pull ended before any layer was downloading")
}

fn store_is_consistent(server: &CmServer) -> Result<()> {
    let images = server.client_ok(&["images", "-q"])?;
    ensure!(images.trim().is_empty(), "a half-pulled image was recorded: {images}");
    eventually("tmp/ emptied and garbage collected", Duration::from_secs(10), || {
        Ok(entries(&server.root().join("images/tmp")).is_empty()
            && entries(&server.root().join("images/snapshots")).is_empty())
    })
}

fn client_disconnect_mid_pull_leaves_a_consistent_store(w: &World) -> Result<()> {
    let server = TestServer::start(&[])?;
    let reference = format!("{}/test/big:latest", w.slow.addr());
    runtime().block_on(async {
        let stream = pull_until_downloading(&server, &reference).await?;
        drop(stream);
        anyhow::Ok(())
    })?;
    eventually("the server noticed the cancel", Duration::from_secs(10), || {
        Ok(server.log().contains("pull cancelled"))
    })?;
    store_is_consistent(&server)?;
    let out = server.client_ok(&["pull", &reference])?;
    ensure!(out.contains(&w.bench.config_blob().digest), "{out}");
    Ok(())
}

fn server_killed_mid_pull_restarts_consistent_and_pulls_again(w: &World) -> Result<()> {
    let mut server = TestServer::start(&[])?;
    let reference = format!("{}/test/big:latest", w.slow.addr());
    runtime().block_on(async {
        let _stream = pull_until_downloading(&server, &reference).await?;
        server.kill();
        anyhow::Ok(())
    })?;
    ensure!(!entries(&server.root().join("images/tmp")).is_empty(), "the kill came too late to test anything");
    server.restart()?;
    store_is_consistent(&server)?;
    let out = server.client_ok(&["pull", &reference])?;
    ensure!(out.contains("Downloaded newer image"), "{out}");
    Ok(())
}

fn a_live_socket_is_refused_and_a_stale_one_replaced(w: &World) -> Result<()> {
    let second = std::process::Command::new(cm_e2e::server::bin("cm-server"))
        .args(["--listen", &w.server.host(), "--root"])
        .arg(w.server.root().with_file_name("root-second"))
        .output()?;
    ensure!(!second.status.success(), "a second server took a live socket");
    ensure!(stderr(&second).contains("already listening"), "{}", stderr(&second));
    let mode = std::fs::metadata(w.server.socket())?.mode() & 0o777;
    ensure!(mode == 0o660, "socket mode {mode:o}");

    let mut server = TestServer::start(&[])?;
    server.kill(); // leaves its socket file behind
    ensure!(server.socket().exists(), "a killed server's socket should remain");
    server.restart()?;
    server.client_ok(&["images"])?;
    ensure!(server.terminate()?.success(), "SIGTERM is a clean exit");
    ensure!(!server.socket().exists(), "graceful shutdown removes the socket");
    Ok(())
}

/// `--registry-mirror`: docker.io's busybox comes from the test registry under its docker.io name; a pull of
/// a registry whose mirror is down fails naming the mirror, and (traced with strace) the server connects to
/// nothing but that mirror: no DNS query, no connection to the real registry.
fn a_mirrored_registry_is_pulled_from_its_mirror_and_never_contacted(w: &World) -> Result<()> {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let docker = format!("docker.io=http://{}", w.registry.addr());
    let k8s = format!("registry.k8s.io=http://127.0.0.1:{dead}");
    let server = TestServer::start(&["--bridge", "none", "--registry-mirror", &docker, "--registry-mirror", &k8s])?;
    server.cli_ok(&["pull", "busybox"])?;
    let images = server.cli_ok(&["images"])?;
    ensure!(images.lines().any(|l| l.starts_with("busybox ") && l.contains("latest")), "{images}");
    let inspect = server.cli_ok(&["image", "inspect", "busybox"])?;
    // The test registry's image (this machine cannot reach docker.io), under its docker.io name.
    ensure!(inspect.contains("docker.io/library/busybox:latest"), "{inspect}");
    ensure!(inspect.contains(w.busybox.config_blob().digest.as_str()), "not the mirror's image: {inspect}");

    // Trace the server's connects and sends during a pull through the dead mirror.
    let trace = tempfile::NamedTempFile::new()?;
    let attach_log = tempfile::NamedTempFile::new()?;
    let pid = server.pid().context("server pid")?.to_string();
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-e", "trace=connect,sendto,sendmsg,sendmmsg", "-o"])
        .arg(trace.path())
        .args(["-p", &pid])
        .stderr(attach_log.reopen()?)
        .spawn()
        .context("strace")?;
    eventually("strace attached", Duration::from_secs(10), || {
        Ok(std::fs::read_to_string(attach_log.path())?.contains("attached"))
    })?;
    let out = server.cli(&["pull", "registry.k8s.io/pause:3.9"])?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(strace.id() as i32), nix::sys::signal::Signal::SIGINT)?;
    strace.wait()?;
    let err = stderr(&out);
    ensure!(!out.status.success(), "the pull through a dead mirror succeeded");
    ensure!(
        err.contains("unavailable") && err.contains(&format!("registry.k8s.io (mirror http://127.0.0.1:{dead})")),
        "error: {err}"
    );
    let calls = std::fs::read_to_string(trace.path())?;
    let inet: Vec<&str> = calls.lines().filter(|l| l.contains("AF_INET")).collect();
    let to_mirror = format!("sin_port=htons({dead}), sin_addr=inet_addr(\"127.0.0.1\")");
    ensure!(inet.iter().any(|l| l.contains(&to_mirror)), "no connect to the mirror traced:\n{calls}");
    let elsewhere: Vec<&&str> = inet.iter().filter(|l| !l.contains(&to_mirror)).collect();
    ensure!(elsewhere.is_empty(), "the server sent traffic elsewhere than the mirror: {elsewhere:#?}");
    Ok(())
}
