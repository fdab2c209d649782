//! The container lifecycle without root: a fake network driver, a fake cgroup2 tree and a monitor binary that
//! does not exist (or a script that only says it started one), so every path up to talking to a monitor runs
//! for real. The paths past a running monitor (a completed start, the exit watcher, stop, kill, ending a start
//! a dead server left unfinished) are the end-to-end suites'.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::cgroups::fake::FakeCgroup2;
use crate::image::store::LayerRecord;
use crate::image::{ImageRecord, Reference};
use crate::network::driver::BRIDGE;
use crate::network::fake::{Call, FakeNetwork};
use crate::network::{NetError, PortConfig, ports::Protocol};
use crate::runtime::bundle::Bundle;

const IMAGE: &str = "x/app";

/// A state root with one image, reopened as a server restart would.
struct World {
    root: tempfile::TempDir,
    images: Arc<ImageStore>,
    cgroups: Arc<FakeCgroup2>,
}

impl World {
    fn new() -> World {
        let root = tempfile::tempdir().unwrap();
        let images = Arc::new(ImageStore::open(&root.path().join("images")).unwrap());
        let image = ImageRecord {
            id: format!("sha256:{}", "a".repeat(64)),
            references: vec![],
            manifest_digest: format!("sha256:{}", "b".repeat(64)),
            index_digest: None,
            platform: Default::default(),
            layers: vec![LayerRecord {
                digest: format!("sha256:{}", "c".repeat(64)),
                size: 1,
                media_type: String::new(),
                diff_id: String::new(),
                chain_id: format!("sha256:{}", "d".repeat(64)),
                unpacked_size: 1,
            }],
            created: None,
            pulled_unix: 0,
        };
        images.add_image(image, &Reference::parse(IMAGE).unwrap()).unwrap();
        World { root, images, cgroups: FakeCgroup2::new("cpu memory pids") }
    }

    /// Starts a "server" on the root whose bridge network is `bridge`.
    async fn open(&self, bridge: &Arc<FakeNetwork>) -> Arc<Containers> {
        let mut networks = Networks::default();
        networks.add(bridge.clone());
        self.open_with(networks).await
    }

    async fn open_with(&self, networks: Networks) -> Arc<Containers> {
        let options = RuntimeOptions {
            default_limits: Limits::default(),
            cgroup_parent: "cm".into(),
            networks,
            log_limits: LogLimits::default(),
            subid_user: "cm".into(),
            cni: crate::network::cni::CniOptions::new(self.root.path(), None, Vec::new()),
        };
        let cgroups = (self.cgroups.layout(), self.cgroups.clone() as Arc<dyn CgroupFs>);
        let monitor = crate::runtime::client::MonitorBinary::at(self.root.path().join("monitor"));
        Containers::open_with(self.root.path(), self.images.clone(), options, Arc::default(), cgroups, monitor)
            .await
            .unwrap()
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.path().join("containers").join(id)
    }

    /// Changes a container's record on disk, as a server that is down would find it.
    fn edit_record(&self, id: &str, change: impl FnOnce(&mut Record)) {
        let path = self.dir(id).join(record::RECORD_FILE);
        let mut record: Record = crate::store::read_json(&path).unwrap().unwrap();
        change(&mut record);
        crate::store::write_json(&path, &record).unwrap();
    }

    /// Makes the monitor binary a script that says it started an init of pid `pid` (and starts nothing).
    fn monitor_that_answers(&self, pid: i32) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.root.path().join("monitor");
        std::fs::write(&path, format!("#!/bin/sh\necho ok {pid}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A monitor socket whose monitor hangs up on every connection, as one that dies at once does (a thread
    /// accepts and drops them).
    fn monitor_that_hangs_up(&self, id: &str) {
        let listener = self.fake_monitor(id);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                drop(stream);
            }
        });
    }

    /// Listens on a container's monitor socket, as a monitor that kept running does.
    fn fake_monitor(&self, id: &str) -> std::os::unix::net::UnixListener {
        let dir = std::fs::File::open(self.dir(id)).unwrap();
        let path = format!("/proc/self/fd/{}/{}", dir.as_raw_fd(), bundle::SOCKET_FILE);
        std::os::unix::net::UnixListener::bind(path).unwrap()
    }
}

fn bridge(size: u8) -> Arc<FakeNetwork> {
    Arc::new(FakeNetwork::new(BRIDGE, size, true))
}

fn spec(network: Network) -> CreateSpec {
    CreateSpec { image: IMAGE.into(), command: vec!["true".into()], network, ..Default::default() }
}

fn port(host_port: u16) -> PortConfig {
    PortConfig { host_ip: None, host_port, container_port: 80, protocol: Protocol::Tcp }
}

fn allocated(network: &FakeNetwork) -> Vec<String> {
    network.calls().into_iter().filter_map(|c| if let Call::Allocate(id) = c { Some(id) } else { None }).collect()
}

#[tokio::test]
async fn create_takes_an_address_from_the_containers_network_and_remove_gives_it_back() {
    let world = World::new();
    let bridge = bridge(4);
    let containers = world.open(&bridge).await;
    let c = containers.create(spec(Network::Bridge)).unwrap();
    let address = c.record().config.address;
    assert_eq!(address, Some(Ipv4Addr::new(10, 99, 0, 2)));
    assert_eq!(bridge.held(&c.id), address);
    let saved: Record = crate::store::read_json(&world.dir(&c.id).join(record::RECORD_FILE)).unwrap().unwrap();
    assert_eq!(saved.config.address, address, "the address is recorded");
    // Containers on none and host get no address, and the bridge is not asked.
    for network in [Network::None, Network::Host] {
        assert_eq!(containers.create(spec(network)).unwrap().record().config.address, None);
    }
    assert_eq!(allocated(&bridge), vec![c.id.clone()]);
    containers.remove(&c, false).await.unwrap();
    assert_eq!(bridge.held(&c.id), None);
    assert!(bridge.calls().contains(&Call::Release(c.id.clone())));
    assert!(!world.dir(&c.id).exists());
}

#[tokio::test]
async fn a_create_that_fails_leaves_no_address_and_no_container() {
    let world = World::new();
    let bridge = bridge(1);
    let containers = world.open(&bridge).await;
    containers.create(spec(Network::Bridge)).unwrap();
    // No address left: nothing is made.
    let err = containers.create(spec(Network::Bridge)).err().unwrap();
    assert!(
        matches!(&err, ContainerError::Network(NetError::Unavailable(m)) if m.contains("no free address left")),
        "{err}"
    );
    assert_eq!(containers.list().len(), 1);
    assert_eq!(std::fs::read_dir(world.root.path().join("containers")).unwrap().count(), 1);
    // The record cannot be saved: the address goes back.
    let bridge = self::bridge(4);
    let containers = world.open(&bridge).await;
    let dir = world.root.path().join("containers");
    std::fs::rename(&dir, world.root.path().join("moved")).unwrap();
    std::fs::write(&dir, "not a directory").unwrap();
    let err = containers.create(spec(Network::Bridge)).err().unwrap();
    assert!(matches!(err, ContainerError::Io { what: "saving the container", .. }), "{err}");
    let id = allocated(&bridge).pop().unwrap();
    assert_eq!(bridge.held(&id), None);
    assert!(bridge.calls().contains(&Call::Release(id)));
}

#[tokio::test]
async fn published_ports_need_a_network_that_publishes_them() {
    let world = World::new();
    let bridge = bridge(4);
    let containers = world.open(&bridge).await;
    for network in [Network::None, Network::Host] {
        let err = containers.create(CreateSpec { ports: vec![port(8080)], ..spec(network) }).err().unwrap();
        assert!(matches!(&err, ContainerError::Invalid(m) if m.contains("need the bridge network")), "{err}");
    }
    let twice = CreateSpec { ports: vec![port(8080), port(8080)], ..spec(Network::Bridge) };
    let err = containers.create(twice).err().unwrap();
    assert!(matches!(&err, ContainerError::Invalid(m) if m.contains("published twice")), "{err}");
    assert!(allocated(&bridge).is_empty());
    containers.create(CreateSpec { ports: vec![port(8080)], ..spec(Network::Bridge) }).unwrap();
    // A bridge that cannot publish refuses them too.
    let cannot = Arc::new(FakeNetwork::new(BRIDGE, 4, false));
    let containers = world.open(&cannot).await;
    let err = containers.create(CreateSpec { ports: vec![port(8081)], ..spec(Network::Bridge) }).err().unwrap();
    assert!(matches!(err, ContainerError::Invalid(_)));
    assert!(allocated(&cannot).is_empty());
}

#[tokio::test]
async fn a_server_without_a_bridge_refuses_bridge_containers_and_says_what_to_use() {
    let world = World::new();
    let mut networks = Networks::default();
    networks.disable(BRIDGE, "this cm-server runs without a bridge (--bridge none); use --network none or host");
    let containers = world.open_with(networks).await;
    let err = containers.create(spec(Network::Bridge)).err().unwrap();
    assert!(
        matches!(&err, ContainerError::Network(NetError::Unavailable(m)) if m.contains("--network none or host")),
        "{err}"
    );
    containers.create(spec(Network::None)).unwrap();
}

#[tokio::test]
async fn open_claims_recorded_addresses_readopts_running_containers_and_reconciles_with_them() {
    let world = World::new();
    let before = bridge(4);
    let containers = world.open(&before).await;
    let running = containers.create(spec(Network::Bridge)).unwrap();
    let created = containers.create(spec(Network::Bridge)).unwrap();
    let on_none = containers.create(spec(Network::None)).unwrap();
    drop(containers);
    let bound = vec![port(8080)];
    world.edit_record(&running.id, |r| {
        r.state = State { status: ContainerStatus::Running, pid: 4242, ports: bound.clone(), ..State::default() }
    });
    world.edit_record(&on_none.id, |r| {
        r.state = State { status: ContainerStatus::Running, pid: 4243, ..State::default() }
    });
    let _monitors = [world.fake_monitor(&running.id), world.fake_monitor(&on_none.id)];
    let after = bridge(4);
    let containers = world.open(&after).await;
    let calls = after.calls();
    // Every recorded address is held again, by the same container.
    for c in [&running, &created] {
        let address = c.record().config.address.unwrap();
        assert!(calls.contains(&Call::Claim(c.id.clone(), address)), "{calls:?}");
        assert_eq!(after.held(&c.id), Some(address));
    }
    // The running one gets its ports back; reconcile keeps it alone (the one on none is not the bridge's).
    let readopt = Call::Readopt { id: running.id.clone(), address: running.record().config.address, ports: bound };
    assert!(calls.contains(&readopt), "{calls:?}");
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(calls.last(), Some(&Call::Reconcile(vec![running.id.clone()])));
    assert_eq!(containers.get(&running.id).unwrap().record().state.status, ContainerStatus::Running);
}

#[tokio::test]
async fn a_running_container_whose_monitor_is_gone_is_stopped_at_open_and_leaves_its_network() {
    let world = World::new();
    let before = bridge(4);
    let containers = world.open(&before).await;
    let c = containers.create(spec(Network::Bridge)).unwrap();
    drop(containers);
    world.edit_record(&c.id, |r| r.state = State { status: ContainerStatus::Running, pid: 4242, ..State::default() });
    Cgroup::create_with(world.cgroups.clone(), &world.cgroups.layout(), "cm", &c.id, &Limits::default()).unwrap();
    let after = bridge(4);
    let containers = world.open(&after).await;
    let record = containers.get(&c.id).unwrap().record();
    assert_eq!(record.state.status, ContainerStatus::Stopped);
    assert_eq!(record.state.exit.unwrap().code, 255);
    assert!(!world.cgroups.path(&format!("cm/{}", c.id)).exists(), "its cgroup is removed");
    let calls = after.calls();
    assert!(calls.contains(&Call::Detach(c.id.clone())), "{calls:?}");
    assert_eq!(calls.last(), Some(&Call::Reconcile(vec![])));
    assert_eq!(after.held(&c.id), record.config.address, "it keeps its address until it is removed");
}

#[tokio::test]
async fn a_container_whose_address_was_lost_gets_a_new_one_at_start() {
    let world = World::new();
    let before = bridge(4);
    let containers = world.open(&before).await;
    let c = containers.create(spec(Network::Bridge)).unwrap();
    drop(containers);
    let lost = Ipv4Addr::new(10, 99, 0, 200);
    world.edit_record(&c.id, |r| r.config.address = Some(lost));
    let after = bridge(4);
    let containers = world.open(&after).await;
    assert_eq!(after.held(&c.id), None, "the claim of an address off the network fails");
    let c = containers.get(&c.id).unwrap();
    // The start gets as far as the monitor, which this test has not got.
    let err = containers.start(&c, None).await.err().unwrap();
    assert!(matches!(err, ContainerError::Io { what: "spawning the monitor", .. }), "{err}");
    let address = after.held(&c.id).unwrap();
    assert_ne!(address, lost);
    assert_eq!(c.record().config.address, Some(address));
    let saved: Record = crate::store::read_json(&world.dir(&c.id).join(record::RECORD_FILE)).unwrap().unwrap();
    assert_eq!(saved.config.address, Some(address), "the new address is recorded");
    // /etc/hosts names the container at its new address; the failed start took back its network and cgroup.
    let hosts = std::fs::read_to_string(world.dir(&c.id).join("hosts")).unwrap();
    assert!(hosts.contains(&format!("{address}\t{}", &c.id[..12])), "{hosts}");
    assert!(after.calls().ends_with(&[Call::Allocate(c.id.clone()), Call::Detach(c.id.clone())]));
    assert!(!world.cgroups.path(&format!("cm/{}", c.id)).exists());
}

#[tokio::test]
async fn the_network_says_whether_the_bundle_shares_the_hosts_namespace() {
    let world = World::new();
    let containers = world.open(&bridge(4)).await;
    for (network, shared) in [(Network::Bridge, false), (Network::None, false), (Network::Host, true)] {
        let c = containers.create(spec(network)).unwrap();
        assert!(containers.start(&c, None).await.is_err());
        let bundle: Bundle = crate::store::read_json(&world.dir(&c.id).join(bundle::BUNDLE_FILE)).unwrap().unwrap();
        assert_eq!(bundle.host_network, shared, "{network:?}");
        let hosts = std::fs::read_to_string(world.dir(&c.id).join("hosts")).unwrap();
        if shared && let Ok(host) = std::fs::read_to_string("/etc/hosts") {
            assert_eq!(hosts, host, "a host-network container sees the host's /etc/hosts");
        } else {
            assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
        }
    }
}

#[tokio::test]
async fn an_auto_remove_container_that_cannot_start_is_removed_with_its_address() {
    let world = World::new();
    let bridge = bridge(4);
    let containers = world.open(&bridge).await;
    let c = containers.create(CreateSpec { auto_remove: true, ..spec(Network::Bridge) }).unwrap();
    assert!(containers.start(&c, None).await.is_err());
    assert!(containers.get(&c.id).is_err());
    assert!(!world.dir(&c.id).exists());
    assert_eq!(bridge.held(&c.id), None);
    assert_eq!(bridge.calls().last(), Some(&Call::Release(c.id.clone())));
}

#[tokio::test]
async fn a_start_gives_the_network_the_init_and_takes_it_back_when_attach_or_the_monitor_fails() {
    let world = World::new();
    world.monitor_that_answers(4242);
    let bridge = bridge(4);
    let containers = world.open(&bridge).await;
    let ports = vec![port(8080)];
    let c = containers.create(CreateSpec { ports: ports.clone(), ..spec(Network::Bridge) }).unwrap();
    let attach = Call::Attach { id: c.id.clone(), pid: 4242, address: c.record().config.address, ports };
    // The network cannot attach it (the monitor is connected first, so that a failed start can end it).
    world.monitor_that_hangs_up(&c.id);
    bridge.fail_attach(Some("no veth for you"));
    let err = containers.start(&c, None).await.err().unwrap();
    assert!(matches!(err, ContainerError::NetworkSetup(_)) && err.to_string().contains("no veth for you"), "{err}");
    assert!(bridge.calls().ends_with(&[attach.clone(), Call::Detach(c.id.clone())]), "{:?}", bridge.calls());
    assert!(!world.cgroups.path(&format!("cm/{}", c.id)).exists());
    assert_eq!(c.record().state.status, ContainerStatus::Created);
    // The monitor does not answer on its socket: the start fails before the network attaches it.
    std::fs::remove_file(world.dir(&c.id).join(bundle::SOCKET_FILE)).unwrap();
    bridge.fail_attach(None);
    let calls = bridge.calls().len();
    let err = containers.start(&c, None).await.err().unwrap();
    assert!(matches!(err, ContainerError::Io { what: "connecting to the monitor", .. }), "{err}");
    assert!(!bridge.calls()[calls..].contains(&attach), "{:?}", bridge.calls());
    assert!(bridge.calls().ends_with(&[Call::Detach(c.id.clone())]), "{:?}", bridge.calls());
    assert!(!world.cgroups.path(&format!("cm/{}", c.id)).exists());
    assert_eq!(bridge.held(&c.id), c.record().config.address, "a failed start keeps the address");
}

#[tokio::test]
async fn a_bridge_container_on_a_server_restarted_without_a_bridge_cannot_start_but_can_be_removed() {
    let world = World::new();
    let containers = world.open(&bridge(4)).await;
    let c = containers.create(spec(Network::Bridge)).unwrap();
    drop(containers);
    let mut networks = Networks::default();
    networks.disable(BRIDGE, "this cm-server runs without a bridge (--bridge none); use --network none or host");
    let containers = world.open_with(networks).await;
    let c = containers.get(&c.id).unwrap();
    let err = containers.start(&c, None).await.err().unwrap();
    assert!(
        matches!(&err, ContainerError::Network(NetError::Unavailable(m)) if m.contains("without a bridge")),
        "{err}"
    );
    assert!(!world.cgroups.path(&format!("cm/{}", c.id)).exists(), "nothing was set up");
    containers.remove(&c, false).await.unwrap();
    assert!(!world.dir(&c.id).exists());
}
