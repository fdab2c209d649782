//! End to end: Kubernetes CRI v1 on a real cm-server's `--cri-listen` socket, through the Rust client generated
//! from the same api.proto: pods (run, status, list with filters, stop, remove), containers of a pod sharing
//! its network, IPC and UTS namespaces, logs in the CRI format, ExecSync with its timeout, stats, images, the
//! idempotent stops and removes, and bad input. The server runs without CNI: pods get loopback only, and
//! Status says NetworkReady false with a reason. Every test removes its pods; the suite then checks (the
//! harness's leave-nothing-behind) that no pod directory, namespace mount, container or cgroup is left.
//! Streaming (Exec, Attach, PortForward URLs) is driven by crictl (the critest kit's, in
//! /var/cache/cm-tools): exec with and without a terminal (a pty this test makes), attach, port-forward of an
//! HTTP exchange, many concurrent execs, and the streaming server's refusals of bad requests.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use cm_api::cri as pb;
use cm_e2e::harness::*;
use cm_e2e::pty::PtyChild;
use cm_e2e::server::CriClients;
use cm_e2e::trials;
use cm_e2e::{Registry, fixtures, push_image};
use libtest_mimic::Arguments;

struct World {
    registry: Registry,
    server: TestServer,
    image: String,
    /// unix:///path of the CRI socket.
    endpoint: String,
    /// Holds the CRI socket's directory.
    _sockets: tempfile::TempDir,
}

fn setup() -> Result<World> {
    let registry = Registry::start()?;
    push_image(&registry.addr(), "test/busybox", "latest", &fixtures::busybox_image())?;
    // An image of its own (no container uses it, so it can be removed), with a numeric user.
    let config = cm_e2e::ImageConfig { user: "1000".into(), cmd: vec!["sh".into()], ..Default::default() };
    let pulled = cm_e2e::Image::new(cm_e2e::ManifestFormat::Oci, config, vec![fixtures::busybox_layer()]);
    push_image(&registry.addr(), "test/cri-pulled", "v1", &pulled)?;
    let image = format!("{}/test/busybox:latest", registry.addr());
    let sockets = tempfile::Builder::new().prefix("cm-cri-").tempdir_in("/tmp")?;
    let cri = format!("unix:{}", sockets.path().join("cri.sock").display());
    // No CNI config (an empty directory, whatever the host has): pods get loopback only.
    let net_d = sockets.path().join("net.d");
    std::fs::create_dir(&net_d)?;
    let server = TestServer::start(&["--cri-listen", &cri, "--cni-conf-dir", &net_d.display().to_string()])?;
    server.cli_ok(&["pull", &image])?;
    let endpoint = format!("unix://{}", sockets.path().join("cri.sock").display());
    Ok(World { registry, server, image, endpoint, _sockets: sockets })
}

/// Runs `f` with fresh CRI clients on a runtime of its own.
fn cri<T>(w: &World, f: impl AsyncFnOnce(CriClients) -> Result<T>) -> Result<T> {
    runtime().block_on(async {
        let clients = w.server.cri().await.context("connecting to the CRI socket")?;
        tokio::time::timeout(Duration::from_secs(60), f(clients)).await.context("the CRI calls took over 60 s")?
    })
}

fn pod_config(w: &World, name: &str) -> pb::PodSandboxConfig {
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "cm-test".into(),
            attempt: 0,
        }),
        hostname: "podhost".into(),
        log_directory: String::new(),
        dns_config: Some(pb::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: HashMap::from([("app".into(), name.into()), ("suite".into(), "cri".into())]),
        linux: Some(pb::LinuxPodSandboxConfig {
            // The last component is the pod's cgroup directory: the test server's own parent, which the
            // leave-nothing-behind check looks into.
            cgroup_parent: format!("/kubepods/{}", w.server.parent),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn run_pod(c: &mut CriClients, config: &pb::PodSandboxConfig) -> Result<String> {
    let r = c
        .runtime
        .run_pod_sandbox(pb::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await?;
    Ok(r.into_inner().pod_sandbox_id)
}

fn container_config(w: &World, name: &str, args: &[&str]) -> pb::ContainerConfig {
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(pb::ImageSpec { image: w.image.clone(), ..Default::default() }),
        command: args.iter().map(|s| s.to_string()).collect(),
        labels: HashMap::from([("container".into(), name.into())]),
        annotations: HashMap::from([("note".into(), "kept".into())]),
        ..Default::default()
    }
}

async fn create(
    c: &mut CriClients,
    pod: &str,
    config: pb::ContainerConfig,
    pod_config: &pb::PodSandboxConfig,
) -> Result<String> {
    let r = c
        .runtime
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await?;
    Ok(r.into_inner().container_id)
}

async fn start(c: &mut CriClients, id: &str) -> Result<()> {
    c.runtime.start_container(pb::StartContainerRequest { container_id: id.into() }).await?;
    Ok(())
}

async fn exec(c: &mut CriClients, id: &str, cmd: &[&str], timeout: i64) -> Result<pb::ExecSyncResponse, tonic::Status> {
    let cmd = cmd.iter().map(|s| s.to_string()).collect();
    c.runtime.exec_sync(pb::ExecSyncRequest { container_id: id.into(), cmd, timeout }).await.map(|r| r.into_inner())
}

async fn exec_out(c: &mut CriClients, id: &str, cmd: &[&str]) -> Result<String> {
    let r = exec(c, id, cmd, 10).await?;
    ensure!(r.exit_code == 0, "{cmd:?} exited {}: {}", r.exit_code, String::from_utf8_lossy(&r.stderr));
    Ok(String::from_utf8_lossy(&r.stdout).into_owned())
}

async fn container_status(c: &mut CriClients, id: &str) -> Result<pb::ContainerStatus> {
    let r = c.runtime.container_status(pb::ContainerStatusRequest { container_id: id.into(), verbose: false }).await?;
    r.into_inner().status.context("no status")
}

async fn until_exited(c: &mut CriClients, id: &str) -> Result<pb::ContainerStatus> {
    for _ in 0..200 {
        let s = container_status(c, id).await?;
        if s.state == pb::ContainerState::ContainerExited as i32 {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("container {id} did not exit within 10 s")
}

async fn pod_status(c: &mut CriClients, id: &str) -> Result<pb::PodSandboxStatus> {
    let r =
        c.runtime.pod_sandbox_status(pb::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false }).await?;
    r.into_inner().status.context("no status")
}

async fn remove_pod(c: &mut CriClients, id: &str) -> Result<()> {
    c.runtime.stop_pod_sandbox(pb::StopPodSandboxRequest { pod_sandbox_id: id.into() }).await?;
    c.runtime.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await?;
    Ok(())
}

fn pods_dir(w: &World) -> std::path::PathBuf {
    w.server.root().join("pods")
}

fn version_status_and_runtime_config(w: &World) -> Result<()> {
    cri(w, async |mut c| {
        let v = c.runtime.version(pb::VersionRequest { version: "v1".into() }).await?.into_inner();
        ensure!(v.runtime_name == "cm" && v.runtime_api_version == "v1", "{v:?}");
        let s = c.runtime.status(pb::StatusRequest { verbose: false }).await?.into_inner();
        let conditions = s.status.context("no status")?.conditions;
        let find = |t: &str| conditions.iter().find(|c| c.r#type == t).cloned();
        let runtime = find("RuntimeReady").context("no RuntimeReady")?;
        ensure!(runtime.status, "{runtime:?}");
        let network = find("NetworkReady").context("no NetworkReady")?;
        ensure!(!network.status && !network.reason.is_empty() && !network.message.is_empty(), "{network:?}");
        let config = c.runtime.runtime_config(pb::RuntimeConfigRequest {}).await?.into_inner();
        ensure!(config.linux.context("no linux")?.cgroup_driver == pb::CgroupDriver::Cgroupfs as i32);
        let update = pb::UpdateRuntimeConfigRequest {
            runtime_config: Some(pb::RuntimeConfig {
                network_config: Some(pb::NetworkConfig { pod_cidr: "10.244.0.0/24".into() }),
            }),
        };
        c.runtime.update_runtime_config(update).await?;
        Ok(())
    })
}

fn a_pod_runs_is_listed_by_filters_stops_and_is_removed_leaving_nothing(w: &World) -> Result<()> {
    cri(w, async |mut c| {
        let config = pod_config(w, &unique("lifecycle"));
        let id = run_pod(&mut c, &config).await?;
        let status = pod_status(&mut c, &id).await?;
        ensure!(status.state == pb::PodSandboxState::SandboxReady as i32, "{status:?}");
        ensure!(status.metadata.as_ref().unwrap().name == config.metadata.as_ref().unwrap().name);
        let netns = pods_dir(w).join(&id).join("ns/net");
        ensure!(!mounts_mentioning(&netns.display().to_string()).is_empty(), "the netns file is not a mount");
        // Filters: by label, by state, by id prefix.
        let listing = c.runtime.clone();
        let list = |filter: pb::PodSandboxFilter| {
            let mut runtime = listing.clone();
            async move {
                let r = runtime.list_pod_sandbox(pb::ListPodSandboxRequest { filter: Some(filter) }).await?;
                anyhow::Ok(r.into_inner().items.into_iter().map(|p| p.id).collect::<Vec<_>>())
            }
        };
        let app = config.labels["app"].clone();
        let by_label =
            pb::PodSandboxFilter { label_selector: HashMap::from([("app".into(), app)]), ..Default::default() };
        ensure!(list(by_label.clone()).await? == vec![id.clone()]);
        let other = pb::PodSandboxFilter {
            label_selector: HashMap::from([("app".into(), "none".into())]),
            ..Default::default()
        };
        ensure!(list(other).await?.is_empty());
        let ready = pb::PodSandboxStateValue { state: pb::PodSandboxState::SandboxReady as i32 };
        ensure!(list(pb::PodSandboxFilter { state: Some(ready), ..by_label.clone() }).await? == vec![id.clone()]);
        ensure!(list(pb::PodSandboxFilter { id: id[..12].into(), ..Default::default() }).await? == vec![id.clone()]);

        c.runtime.stop_pod_sandbox(pb::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await?;
        let status = pod_status(&mut c, &id).await?;
        ensure!(status.state == pb::PodSandboxState::SandboxNotready as i32, "{status:?}");
        ensure!(mounts_mentioning(&netns.display().to_string()).is_empty(), "the netns is still mounted after stop");
        let not_ready = pb::PodSandboxStateValue { state: pb::PodSandboxState::SandboxNotready as i32 };
        ensure!(list(pb::PodSandboxFilter { state: Some(not_ready), ..by_label.clone() }).await? == vec![id.clone()]);
        // Stopping again is fine.
        c.runtime.stop_pod_sandbox(pb::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await?;
        c.runtime.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await?;
        ensure!(list(by_label).await?.is_empty(), "the removed pod is still listed");
        ensure!(!pods_dir(w).join(&id).exists(), "the pod directory is left");
        c.runtime.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await?;
        let gone =
            c.runtime.pod_sandbox_status(pb::PodSandboxStatusRequest { pod_sandbox_id: id, verbose: false }).await;
        ensure!(gone.as_ref().is_err_and(|s| s.code() == tonic::Code::NotFound), "{gone:?}");
        Ok(())
    })
}

fn containers_of_a_pod_share_its_network_ipc_and_uts_namespaces(w: &World) -> Result<()> {
    cri(w, async |mut c| {
        let config = pod_config(w, &unique("shared"));
        let pod = run_pod(&mut c, &config).await?;
        let a = create(&mut c, &pod, container_config(w, "a", &["sleep", "1000"]), &config).await?;
        let b = create(&mut c, &pod, container_config(w, "b", &["sleep", "1000"]), &config).await?;
        start(&mut c, &a).await?;
        start(&mut c, &b).await?;
        let host_net = std::fs::read_link("/proc/self/ns/net")?.display().to_string();
        let mut seen = Vec::new();
        for id in [&a, &b] {
            // The CRI's default PID mode is POD: one PID namespace for the pod too.
            let mut ns = String::new();
            for kind in ["net", "ipc", "uts", "pid"] {
                ns += &exec_out(&mut c, id, &["readlink", &format!("/proc/self/ns/{kind}")]).await?;
            }
            let hostname = exec_out(&mut c, id, &["hostname"]).await?;
            ensure!(hostname.trim() == "podhost", "hostname {hostname:?}");
            let resolv = exec_out(&mut c, id, &["cat", "/etc/resolv.conf"]).await?;
            ensure!(
                resolv.contains("nameserver 10.96.0.10")
                    && resolv.contains("search svc.cluster.local")
                    && resolv.contains("options ndots:5"),
                "resolv.conf: {resolv}"
            );
            let links = exec_out(&mut c, id, &["ip", "-o", "link"]).await?;
            ensure!(links.contains("lo") && links.lines().count() == 1, "without CNI only loopback: {links}");
            seen.push(ns);
        }
        ensure!(seen[0] == seen[1], "the containers' namespaces differ: {seen:?}");
        ensure!(!seen[0].contains(&host_net), "the pod is in the host's network namespace: {}", seen[0]);
        // Each container has its own mount namespace: a file one writes, the other does not see.
        exec_out(&mut c, &a, &["touch", "/only-a"]).await?;
        let other = exec(&mut c, &b, &["ls", "/only-a"], 10).await?;
        ensure!(other.exit_code != 0, "b sees a's file");
        // IPC is shared: a message queue or shm segment made in one is visible in the other.
        exec_out(&mut c, &a, &["sh", "-c", "echo shared > /dev/shm/x || true"]).await?;
        let listed = container_status(&mut c, &a).await?;
        ensure!(listed.labels.get("container").map(String::as_str) == Some("a"), "{listed:?}");
        ensure!(listed.annotations.get("note").map(String::as_str) == Some("kept"), "{listed:?}");
        let list = c
            .runtime
            .list_containers(pb::ListContainersRequest {
                filter: Some(pb::ContainerFilter { pod_sandbox_id: pod.clone(), ..Default::default() }),
            })
            .await?
            .into_inner()
            .containers;
        ensure!(list.len() == 2, "{list:?}");
        let running = pb::ContainerStateValue { state: pb::ContainerState::ContainerRunning as i32 };
        let by_label = pb::ContainerFilter {
            label_selector: HashMap::from([("container".into(), "b".into())]),
            state: Some(running),
            pod_sandbox_id: pod.clone(),
            ..Default::default()
        };
        let list = c
            .runtime
            .list_containers(pb::ListContainersRequest { filter: Some(by_label) })
            .await?
            .into_inner()
            .containers;
        ensure!(list.len() == 1 && list[0].id == b, "{list:?}");
        remove_pod(&mut c, &pod).await?;
        for id in [&a, &b] {
            let left = w.server.remains_of(id);
            ensure!(left.is_empty(), "container {id} left {left:?}");
        }
        Ok(())
    })
}

fn logs_are_written_in_the_cri_format(w: &World) -> Result<()> {
    let logs = tempfile::Builder::new().prefix("cm-cri-logs-").tempdir_in("/tmp")?;
    cri(w, async |mut c| {
        let mut config = pod_config(w, &unique("logs"));
        config.log_directory = logs.path().display().to_string();
        let pod = run_pod(&mut c, &config).await?;
        let mut cc = container_config(w, "log", &["sh", "-c", "echo one; echo two >&2; printf three"]);
        cc.log_path = "log/0.log".into();
        let id = create(&mut c, &pod, cc, &config).await?;
        start(&mut c, &id).await?;
        let status = until_exited(&mut c, &id).await?;
        ensure!(status.exit_code == 0 && status.reason == "Completed", "{status:?}");
        let path = logs.path().join("log/0.log");
        ensure!(status.log_path == path.display().to_string(), "{status:?}");
        let text = std::fs::read_to_string(&path)?;
        let lines: Vec<(&str, &str, &str, &str)> = text
            .lines()
            .map(|l| {
                let mut parts = l.splitn(4, ' ');
                (
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or(""),
                )
            })
            .collect();
        let find = |msg: &str| lines.iter().find(|l| l.3 == msg).copied();
        let one = find("one").with_context(|| format!("no line 'one' in {text:?}"))?;
        ensure!(one.1 == "stdout" && one.2 == "F", "{text:?}");
        let two = find("two").with_context(|| format!("no line 'two' in {text:?}"))?;
        ensure!(two.1 == "stderr" && two.2 == "F", "{text:?}");
        let three = find("three").with_context(|| format!("no line 'three' in {text:?}"))?;
        ensure!(three.1 == "stdout" && three.2 == "P", "a line without newline is partial: {text:?}");
        for (time, ..) in &lines {
            ensure!(time.len() >= 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'), "not RFC 3339: {time}");
        }
        remove_pod(&mut c, &pod).await
    })
}

fn exec_sync_gives_output_and_exit_code_and_kills_at_the_timeout(w: &World) -> Result<()> {
    cri(w, async |mut c| {
        let config = pod_config(w, &unique("exec"));
        let pod = run_pod(&mut c, &config).await?;
        let id = create(&mut c, &pod, container_config(w, "x", &["sleep", "1000"]), &config).await?;
        start(&mut c, &id).await?;
        let r = exec(&mut c, &id, &["sh", "-c", "echo out; echo err >&2; exit 3"], 10).await?;
        ensure!(r.stdout == b"out\n" && r.stderr == b"err\n" && r.exit_code == 3, "{r:?}");
        let timed = exec(&mut c, &id, &["sleep", "777"], 1).await;
        let e = timed.err().context("a sleep past the timeout succeeded")?;
        ensure!(e.code() == tonic::Code::DeadlineExceeded && e.message().contains("timed out"), "{e:?}");
        let ps = exec_out(&mut c, &id, &["ps", "-o", "args"]).await?;
        ensure!(!ps.contains("sleep 777"), "the timed-out command still runs: {ps}");
        let missing = exec(&mut c, &id, &["/no/such"], 10).await?;
        ensure!(missing.exit_code == 127, "{missing:?}");
        remove_pod(&mut c, &pod).await
    })
}

fn stats_of_containers_and_pods(w: &World) -> Result<()> {
    cri(w, async |mut c| {
        let config = pod_config(w, &unique("stats"));
        let pod = run_pod(&mut c, &config).await?;
        let id = create(
            &mut c,
            &pod,
            container_config(w, "s", &["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1000"]),
            &config,
        )
        .await?;
        start(&mut c, &id).await?;
        exec_out(&mut c, &id, &["true"]).await?;
        let stats =
            c.runtime.container_stats(pb::ContainerStatsRequest { container_id: id.clone() }).await?.into_inner();
        let stats = stats.stats.context("no stats")?;
        ensure!(stats.attributes.as_ref().unwrap().id == id);
        let cpu = stats.cpu.context("no cpu")?.usage_core_nano_seconds.context("no cpu usage")?.value;
        let memory = stats.memory.context("no memory")?.working_set_bytes.context("no working set")?.value;
        ensure!(cpu > 0 && memory > 0, "cpu {cpu} memory {memory}");
        let filter = pb::ContainerStatsFilter { pod_sandbox_id: pod.clone(), ..Default::default() };
        let list =
            c.runtime.list_container_stats(pb::ListContainerStatsRequest { filter: Some(filter) }).await?.into_inner();
        ensure!(list.stats.len() == 1, "{list:?}");
        let p =
            c.runtime.pod_sandbox_stats(pb::PodSandboxStatsRequest { pod_sandbox_id: pod.clone() }).await?.into_inner();
        let linux = p.stats.context("no pod stats")?.linux.context("no linux stats")?;
        ensure!(linux.containers.len() == 1, "{linux:?}");
        ensure!(linux.cpu.context("no pod cpu")?.usage_core_nano_seconds.context("none")?.value >= cpu);
        remove_pod(&mut c, &pod).await
    })
}

fn images_pull_status_list_and_remove(w: &World) -> Result<()> {
    let name = format!("{}/test/cri-pulled:v1", w.registry.addr());
    cri(w, async |mut c| {
        let spec = |image: &str| Some(pb::ImageSpec { image: image.into(), ..Default::default() });
        let absent =
            c.images.image_status(pb::ImageStatusRequest { image: spec(&name), verbose: false }).await?.into_inner();
        ensure!(absent.image.is_none(), "{absent:?}");
        let pulled = c
            .images
            .pull_image(pb::PullImageRequest { image: spec(&name), auth: None, sandbox_config: None })
            .await?
            .into_inner();
        ensure!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");
        let status =
            c.images.image_status(pb::ImageStatusRequest { image: spec(&name), verbose: false }).await?.into_inner();
        let image = status.image.context("no image after the pull")?;
        ensure!(image.id == pulled.image_ref && image.repo_tags.contains(&name), "{image:?}");
        ensure!(image.uid.as_ref().is_some_and(|u| u.value == 1000) && image.size > 0, "{image:?}");
        // Pulled by tag, it is also found as REPO@DIGEST (what it lists in repo_digests), as containerd does.
        let repo = format!("{}/test/cri-pulled@sha256:", w.registry.addr());
        ensure!(image.repo_digests.len() == 1 && image.repo_digests[0].starts_with(&repo), "{image:?}");
        for digest in &image.repo_digests {
            let by_digest = c
                .images
                .image_status(pb::ImageStatusRequest { image: spec(digest), verbose: false })
                .await?
                .into_inner();
            ensure!(by_digest.image.as_ref() == Some(&image), "ImageStatus of {digest}: {by_digest:?}");
        }
        let other_repo = image.repo_digests[0].replace("cri-pulled@", "cri-unpulled@");
        let absent = c
            .images
            .image_status(pb::ImageStatusRequest { image: spec(&other_repo), verbose: false })
            .await?
            .into_inner();
        ensure!(absent.image.is_none(), "another repository at the same digest is not this image: {absent:?}");
        let by_id = c
            .images
            .image_status(pb::ImageStatusRequest { image: spec(&image.id), verbose: false })
            .await?
            .into_inner();
        ensure!(by_id.image.is_some_and(|i| i.id == image.id));
        let list = c.images.list_images(pb::ListImagesRequest { filter: None }).await?.into_inner();
        ensure!(list.images.iter().any(|i| i.id == image.id), "{list:?}");
        let fs = c.images.image_fs_info(pb::ImageFsInfoRequest {}).await?.into_inner();
        ensure!(fs.image_filesystems.first().and_then(|f| f.used_bytes).is_some_and(|u| u.value > 0), "{fs:?}");
        c.images.remove_image(pb::RemoveImageRequest { image: spec(&name) }).await?;
        let after =
            c.images.image_status(pb::ImageStatusRequest { image: spec(&name), verbose: false }).await?.into_inner();
        ensure!(after.image.is_none(), "{after:?}");
        // Removing what is gone is fine; a malformed name is not.
        c.images.remove_image(pb::RemoveImageRequest { image: spec(&name) }).await?;
        let bad = c.images.pull_image(pb::PullImageRequest { image: spec("UPPER/Case:!"), ..Default::default() }).await;
        ensure!(bad.as_ref().is_err_and(|s| s.code() == tonic::Code::InvalidArgument), "{bad:?}");
        Ok(())
    })
}

fn stop_waits_for_the_timeout_then_kills(w: &World) -> Result<()> {
    cri(w, async |mut c| {
        let config = pod_config(w, &unique("stop"));
        let pod = run_pod(&mut c, &config).await?;
        // A process that ignores SIGTERM: the stop must SIGKILL it after the timeout.
        let stubborn = container_config(
            w,
            "stubborn",
            &["sh", "-c", "trap '' TERM; touch /trapped; while true; do sleep 1; done"],
        );
        let id = create(&mut c, &pod, stubborn, &config).await?;
        start(&mut c, &id).await?;
        // Stopped only once the trap is set (else SIGTERM would end it before).
        let mut trapped = false;
        for _ in 0..100 {
            if exec(&mut c, &id, &["test", "-f", "/trapped"], 10).await?.exit_code == 0 {
                trapped = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ensure!(trapped, "the container never set its trap");
        c.runtime.stop_container(pb::StopContainerRequest { container_id: id.clone(), timeout: 1 }).await?;
        let status = container_status(&mut c, &id).await?;
        ensure!(status.state == pb::ContainerState::ContainerExited as i32 && status.exit_code == 137, "{status:?}");
        ensure!(status.finished_at >= status.started_at && status.started_at > 0, "{status:?}");
        c.runtime.stop_container(pb::StopContainerRequest { container_id: id.clone(), timeout: 1 }).await?;
        c.runtime.remove_container(pb::RemoveContainerRequest { container_id: id.clone() }).await?;
        c.runtime.remove_container(pb::RemoveContainerRequest { container_id: id.clone() }).await?;
        ensure!(w.server.remains_of(&id).is_empty(), "{:?}", w.server.remains_of(&id));
        remove_pod(&mut c, &pod).await
    })
}

fn bad_input_gets_clear_errors_and_leaves_nothing(w: &World) -> Result<()> {
    cri(w, async |mut c| {
        let unknown = "f".repeat(64);
        let s = c
            .runtime
            .container_status(pb::ContainerStatusRequest { container_id: unknown.clone(), verbose: false })
            .await;
        ensure!(
            s.as_ref().is_err_and(|s| s.code() == tonic::Code::NotFound && s.message().contains("no such container")),
            "{s:?}"
        );
        c.runtime.stop_container(pb::StopContainerRequest { container_id: unknown.clone(), timeout: 0 }).await?;
        c.runtime.remove_container(pb::RemoveContainerRequest { container_id: unknown.clone() }).await?;
        c.runtime.stop_pod_sandbox(pb::StopPodSandboxRequest { pod_sandbox_id: unknown.clone() }).await?;
        c.runtime.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: unknown.clone() }).await?;
        let s = c
            .runtime
            .pod_sandbox_status(pb::PodSandboxStatusRequest { pod_sandbox_id: unknown.clone(), verbose: false })
            .await;
        ensure!(
            s.as_ref().is_err_and(|s| s.code() == tonic::Code::NotFound && s.message().contains("no such pod sandbox")),
            "{s:?}"
        );
        let config = pod_config(w, &unique("bad"));
        let in_unknown = c
            .runtime
            .create_container(pb::CreateContainerRequest {
                pod_sandbox_id: unknown.clone(),
                config: Some(container_config(w, "x", &["true"])),
                sandbox_config: Some(config.clone()),
            })
            .await;
        ensure!(in_unknown.as_ref().is_err_and(|s| s.code() == tonic::Code::NotFound), "{in_unknown:?}");
        // A pod without metadata, a bad DNS server.
        let no_metadata = pb::PodSandboxConfig { metadata: None, ..config.clone() };
        let r = c
            .runtime
            .run_pod_sandbox(pb::RunPodSandboxRequest { config: Some(no_metadata), runtime_handler: String::new() })
            .await;
        ensure!(
            r.as_ref().is_err_and(|s| s.code() == tonic::Code::InvalidArgument && s.message().contains("metadata")),
            "{r:?}"
        );
        let mut bad_dns = config.clone();
        bad_dns.dns_config.as_mut().unwrap().servers = vec!["nameserver".into()];
        let r = c
            .runtime
            .run_pod_sandbox(pb::RunPodSandboxRequest { config: Some(bad_dns), runtime_handler: String::new() })
            .await;
        ensure!(
            r.as_ref().is_err_and(|s| s.code() == tonic::Code::InvalidArgument && s.message().contains("dns_config")),
            "{r:?}"
        );
        // A container in a stopped sandbox.
        let pod = run_pod(&mut c, &config).await?;
        c.runtime.stop_pod_sandbox(pb::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await?;
        let in_stopped = create(&mut c, &pod, container_config(w, "late", &["true"]), &config).await;
        let e = in_stopped.err().context("a container was created in a stopped sandbox")?;
        let status = e.downcast_ref::<tonic::Status>().context("not a status")?;
        ensure!(
            status.code() == tonic::Code::FailedPrecondition && status.message().contains("not ready"),
            "{status:?}"
        );
        // A missing image and a container without a name.
        remove_pod(&mut c, &pod).await?;
        let pod = run_pod(&mut c, &config).await?;
        let mut missing = container_config(w, "missing", &["true"]);
        missing.image =
            Some(pb::ImageSpec { image: format!("{}/test/never-pulled:v1", w.registry.addr()), ..Default::default() });
        let e = create(&mut c, &pod, missing, &config).await.err().context("created from a missing image")?;
        let status = e.downcast_ref::<tonic::Status>().context("not a status")?;
        ensure!(status.code() == tonic::Code::NotFound && status.message().contains("pull it first"), "{status:?}");
        let mut nameless = container_config(w, "", &["true"]);
        nameless.metadata = Some(pb::ContainerMetadata { name: String::new(), attempt: 0 });
        let e = create(&mut c, &pod, nameless, &config).await.err().context("created without a name")?;
        ensure!(e.downcast_ref::<tonic::Status>().is_some_and(|s| s.code() == tonic::Code::InvalidArgument), "{e:?}");
        remove_pod(&mut c, &pod).await?;
        ensure!(!pods_dir(w).join(&pod).exists());
        Ok(())
    })
}

/// crictl's streaming transports: SPDY/3.1 (the default) and WebSocket.
const TRANSPORTS: [&str; 2] = ["spdy", "websocket"];

/// crictl as the critest kit builds it, talking to this server's CRI socket.
fn crictl(w: &World, args: &[&str]) -> Result<Command> {
    let tools = std::env::var("CM_TOOLS").unwrap_or_else(|_| "/var/cache/cm-tools".into());
    let bin = std::path::Path::new(&tools).join("cri-tools-v1.37.0/crictl");
    ensure!(bin.exists(), "{} is missing: scripts/install-deps builds it (the cri_deps block)", bin.display());
    let mut cmd = Command::new(bin);
    cmd.args(["--runtime-endpoint", &w.endpoint, "--image-endpoint", &w.endpoint, "--timeout", "30s"]).args(args);
    cmd.stdin(Stdio::null());
    Ok(cmd)
}

/// Runs crictl with `input` on its stdin: (exit code, stdout, stderr).
fn crictl_run(w: &World, args: &[&str], input: Option<&str>) -> Result<(i32, String, String)> {
    let mut cmd = crictl(w, args)?;
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    if let Some(input) = input {
        child.stdin.take().context("stdin")?.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok((out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr)))
}

/// A pod with one running container of `args` (stdin open if asked): (pod, container).
fn streaming_pod(w: &World, name: &str, args: &[&str], stdin: bool) -> Result<(String, String)> {
    cri(w, async |mut c| {
        let config = pod_config(w, &unique(name));
        let pod = run_pod(&mut c, &config).await?;
        let mut container = container_config(w, name, args);
        container.stdin = stdin;
        let id = create(&mut c, &pod, container, &config).await?;
        start(&mut c, &id).await?;
        Ok((pod, id))
    })
}

fn drop_pod(w: &World, pod: &str) -> Result<()> {
    cri(w, async |mut c| remove_pod(&mut c, pod).await)
}

fn crictl_exec_gives_output_stdin_and_exit_codes(w: &World) -> Result<()> {
    let (pod, id) = streaming_pod(w, "exec", &["sleep", "600"], false)?;
    for transport in TRANSPORTS {
        // crictl exits 1 and names the exit code it got from the error stream's status.
        let (code, out, err) =
            crictl_run(w, &["exec", "-r", transport, &id, "sh", "-c", "echo out; echo err >&2; exit 3"], None)?;
        ensure!(
            code == 1 && out == "out\n" && err.contains("err\n") && err.contains("command terminated with exit code 3"),
            "{transport}: exit {code}, out {out:?}, err {err:?}"
        );
        let (code, out, err) = crictl_run(w, &["exec", "-r", transport, &id, "true"], None)?;
        ensure!((code, out.as_str()) == (0, ""), "{transport}: exit {code}, out {out:?}, err {err:?}");
        // stdin reaches the process, and its end (crictl's stdin closing) ends cat.
        let (code, out, err) =
            crictl_run(w, &["exec", "-r", transport, "-i", &id, "sh", "-c", "cat; echo done"], Some("hello\nworld\n"))?;
        ensure!(
            (code, out.as_str()) == (0, "hello\nworld\ndone\n"),
            "{transport}: exit {code}, out {out:?}, err {err:?}"
        );
    }
    drop_pod(w, &pod)
}

fn crictl_exec_it_gets_a_terminal_that_resizes(w: &World) -> Result<()> {
    let (pod, id) = streaming_pod(w, "exec-tty", &["sleep", "600"], false)?;
    for transport in TRANSPORTS {
        let mut term = PtyChild::spawn(crictl(w, &["exec", "-r", transport, "-it", &id, "sh"])?, 30, 100)?;
        term.expect("# ", Duration::from_secs(15)).context("no shell prompt")?;
        term.write("tty; stty size\n")?;
        term.expect("/dev/pts/", Duration::from_secs(5))?;
        term.expect("30 100", Duration::from_secs(5))?;
        term.resize(40, 120)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            term.write("stty size\n")?;
            if term.expect("# ", Duration::from_secs(5))?.contains("40 120") {
                break;
            }
            ensure!(Instant::now() < deadline, "the resize never arrived:\n{}", term.transcript());
            std::thread::sleep(Duration::from_millis(100));
        }
        term.write("exit 7\n")?;
        let status = term.wait(Duration::from_secs(10))?;
        let transcript = term.transcript();
        ensure!(
            status.code() == Some(1) && transcript.contains("command terminated with exit code 7"),
            "crictl exec -r {transport} -it exited {status}:\n{transcript}"
        );
    }
    drop_pod(w, &pod)
}

/// `crictl attach -i`: writes `input`, reads until `expect` shows, then closes its stdin, which ends the
/// attach (the container keeps running). The attach's output, and its exit code.
fn attach_until(w: &World, transport: &str, id: &str, input: &str, expect: &str) -> Result<(String, i32)> {
    let mut child = crictl(w, &["attach", "-r", transport, "-i", id])?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    stdin.write_all(input.as_bytes())?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !out.contains(expect) && Instant::now() < deadline {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
            out.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("crictl attach did not end after its stdin closed; output {out:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok((out, status.code().unwrap_or(-1)))
}

fn crictl_attach_reaches_a_container_started_with_stdin(w: &World) -> Result<()> {
    // sh reading commands from its stdin; the attach's input is its input, its output comes back.
    let (pod, id) = streaming_pod(w, "attach", &["sh"], true)?;
    for transport in TRANSPORTS {
        let (out, code) = attach_until(w, transport, &id, "echo attached-$((6*7))\n", "attached-42")?;
        ensure!(code == 0 && out.contains("attached-42"), "{transport}: exit {code}, out {out:?}");
        // The client's stdin ending ended the attach only: the container still runs and takes a second one.
        let (out, code) = attach_until(w, transport, &id, "echo again-$((1+1))\n", "again-2")?;
        ensure!(code == 0 && out.contains("again-2"), "{transport}: exit {code}, out {out:?}");
    }
    cri(w, async |mut c| {
        let s = container_status(&mut c, &id).await?;
        ensure!(s.state == pb::ContainerState::ContainerRunning as i32, "{s:?}");
        Ok(())
    })?;
    drop_pod(w, &pod)
}

fn crictl_port_forward_carries_an_http_exchange_into_the_pod(w: &World) -> Result<()> {
    // The server listens on the pod's loopback only: nothing on the host could answer in its place.
    let script =
        "mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www";
    let (pod, _) = streaming_pod(w, "portfwd", &["sh", "-c", script], false)?;
    for transport in TRANSPORTS {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut forward = crictl(w, &["port-forward", "-r", transport, &pod, &format!("{port}:8080")])?
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let result = (|| -> Result<()> {
            let deadline = Instant::now() + Duration::from_secs(15);
            let exchange = |path: &str| -> Result<String> {
                let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
                tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
                write!(tcp, "GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n")?;
                let mut response = String::new();
                tcp.read_to_string(&mut response)?;
                Ok(response)
            };
            let response = loop {
                match exchange("/index.html") {
                    Ok(r) if !r.is_empty() => break r,
                    _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                    other => anyhow::bail!("no answer through the forward: {other:?}"),
                }
            };
            ensure!(response.starts_with("HTTP/1.") && response.contains("hello-from-the-pod"), "{response:?}");
            // Several connections over the same forward, at once.
            let answers: Vec<Result<String>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4).map(|_| s.spawn(|| exchange("/index.html"))).collect();
                handles.into_iter().map(|h| h.join().expect("a thread")).collect()
            });
            for a in answers {
                ensure!(a?.contains("hello-from-the-pod"), "a concurrent exchange failed");
            }
            let missing = exchange("/nope")?;
            ensure!(missing.starts_with("HTTP/1.0 404") || missing.starts_with("HTTP/1.1 404"), "{missing:?}");
            Ok(())
        })();
        let _ = forward.kill();
        let _ = forward.wait();
        result.with_context(|| format!("port-forward over {transport}"))?;
    }
    drop_pod(w, &pod)
}

fn many_concurrent_execs_each_get_their_own_output(w: &World) -> Result<()> {
    let (pod, id) = streaming_pod(w, "exec-many", &["sleep", "600"], false)?;
    let results: Vec<Result<(i32, String, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let id = id.clone();
                s.spawn(move || crictl_run(w, &["exec", &id, "sh", "-c", &format!("echo exec-{i}; exit {i}")], None))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a thread")).collect()
    });
    for (i, r) in results.into_iter().enumerate() {
        let (code, out, err) = r?;
        let named = i == 0 || err.contains(&format!("command terminated with exit code {i}"));
        ensure!(
            code == (i > 0) as i32 && named && out == format!("exec-{i}\n"),
            "exec {i}: exit {code}, out {out:?}, err {err:?}"
        );
    }
    drop_pod(w, &pod)
}

fn a_client_going_away_mid_stream_ends_its_exec(w: &World) -> Result<()> {
    let (pod, id) = streaming_pod(w, "exec-gone", &["sleep", "600"], false)?;
    let mut client = crictl(w, &["exec", "-i", &id, "sh", "-c", "echo started; exec sleep 1001"])?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut first = [0u8; 8];
    client.stdout.take().context("stdout")?.read_exact(&mut first)?;
    ensure!(&first == b"started\n", "{first:?}");
    let running = |out: &str| out.lines().any(|l| l.contains("sleep 1001"));
    let ps = || cri(w, async |mut c| exec_out(&mut c, &id, &["ps", "-o", "pid,args"]).await);
    ensure!(running(&ps()?), "the exec is not running");
    // SIGKILL: no close, no FIN; the connection just drops.
    client.kill()?;
    client.wait()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(&ps()?) {
        ensure!(Instant::now() < deadline, "the exec outlived its client by 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop_pod(w, &pod)
}

/// One HTTP/1.1 request to the streaming server: (status line, body).
fn http(url: &str, headers: &[&str]) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").context("not an http URL")?;
    let (addr, path) = rest.split_once('/').context("no path")?;
    let mut tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("GET /{path} HTTP/1.1\r\nHost: {addr}\r\n");
    for h in headers {
        request.push_str(&format!("{h}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the headers (and a short body) are in; a 101 keeps the connection open.
    while let Ok(n) = tcp.read(&mut buf) {
        if n == 0 {
            break;
        }
        response.extend(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                let status = head.lines().next().unwrap_or("").to_string();
                return Ok((status, body.to_string()));
            }
        }
    }
    anyhow::bail!("no whole response: {:?}", String::from_utf8_lossy(&response))
}

fn streaming_urls_are_single_use_and_bad_requests_are_refused(w: &World) -> Result<()> {
    let (pod, id) = streaming_pod(w, "urls", &["sleep", "600"], false)?;
    let url = cri(w, async |mut c| {
        let request =
            pb::ExecRequest { container_id: id.clone(), cmd: vec!["true".into()], stdout: true, ..Default::default() };
        Ok(c.runtime.exec(request).await?.into_inner().url)
    })?;
    ensure!(url.starts_with("http://127.0.0.1:") && url.contains("/exec/"), "{url}");
    // Not an upgrade: 400, and the token stays valid.
    let (status, body) = http(&url, &[])?;
    ensure!(status.contains(" 400 ") && body.contains("upgraded to SPDY/3.1 or WebSocket"), "{status} {body}");
    let spdy = ["Connection: Upgrade", "Upgrade: SPDY/3.1"];
    let (status, body) = http(&url, &[spdy[0], spdy[1], "X-Stream-Protocol-Version: v9.channel.k8s.io"])?;
    ensure!(status.contains(" 400 ") && body.contains("no supported streaming protocol"), "{status} {body}");
    // The first upgrade takes the token; the second finds none.
    let v4 = "X-Stream-Protocol-Version: v4.channel.k8s.io";
    let (status, _) = http(&url, &[spdy[0], spdy[1], v4])?;
    ensure!(status.contains(" 101 "), "{status}");
    let (status, body) = http(&url, &[spdy[0], spdy[1], v4])?;
    ensure!(status.contains(" 404 ") && body.contains("unknown or expired exec token"), "{status} {body}");
    // A token is for its kind of request only, and made-up paths are refused.
    let attach_path = url.replace("/exec/", "/attach/");
    let (status, _) = http(&attach_path, &[spdy[0], spdy[1], v4])?;
    ensure!(status.contains(" 404 "), "{status}");
    let (status, body) = http(&url.replace("/exec/", "/shell/"), &[])?;
    ensure!(status.contains(" 404 ") && body.contains("unknown streaming request"), "{status} {body}");
    // The CRI refuses what no stream could serve.
    cri(w, async |mut c| {
        let both = pb::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["sh".into()],
            tty: true,
            stderr: true,
            ..Default::default()
        };
        let r = c.runtime.exec(both).await;
        ensure!(r.as_ref().is_err_and(|s| s.code() == tonic::Code::InvalidArgument), "{r:?}");
        let none = pb::ExecRequest { container_id: id.clone(), cmd: vec!["sh".into()], ..Default::default() };
        let r = c.runtime.exec(none).await;
        ensure!(r.as_ref().is_err_and(|s| s.code() == tonic::Code::InvalidArgument), "{r:?}");
        let attach = pb::AttachRequest { container_id: id.clone(), stdin: true, stdout: true, ..Default::default() };
        let r = c.runtime.attach(attach).await;
        ensure!(r.as_ref().is_err_and(|s| s.code() == tonic::Code::FailedPrecondition), "{r:?}");
        let unknown = pb::PortForwardRequest { pod_sandbox_id: "f".repeat(64), port: vec![80] };
        let r = c.runtime.port_forward(unknown).await;
        ensure!(r.as_ref().is_err_and(|s| s.code() == tonic::Code::NotFound), "{r:?}");
        Ok(())
    })?;
    drop_pod(w, &pod)
}

fn main() {
    let mut args = Arguments::from_args();
    args.test_threads = args.test_threads.or(Some(2));
    let world = Arc::new(setup().expect("setting up the registry, the image and the server"));
    let trials = trials![world;
        version_status_and_runtime_config,
        a_pod_runs_is_listed_by_filters_stops_and_is_removed_leaving_nothing,
        containers_of_a_pod_share_its_network_ipc_and_uts_namespaces,
        logs_are_written_in_the_cri_format,
        exec_sync_gives_output_and_exit_code_and_kills_at_the_timeout,
        stats_of_containers_and_pods,
        images_pull_status_list_and_remove,
        stop_waits_for_the_timeout_then_kills,
        bad_input_gets_clear_errors_and_leaves_nothing,
        crictl_exec_gives_output_stdin_and_exit_codes,
        crictl_exec_it_gets_a_terminal_that_resizes,
        crictl_attach_reaches_a_container_started_with_stdin,
        crictl_port_forward_carries_an_http_exchange_into_the_pod,
        many_concurrent_execs_each_get_their_own_output,
        streaming_urls_are_single_use_and_bad_requests_are_refused,
        a_client_going_away_mid_stream_ends_its_exec,
    ];
    run_suite(&args, trials, world, |w| &w.server);
}
