//! End to end: the CNI driver with the reference plugins (containernetworking/plugins v1.10.0: bridge,
//! host-local, portmap, loopback, built by tests/cri/build-tools.sh into /var/cache/cm-tools) on a test
//! bridge of its own, pods in network namespaces the test creates. Checks that ADD gives the pod an address
//! on the bridge's subnet, portmap gets the pod's ports, DEL frees the host-local lease and removes the veth
//! and the rules, a DEL after a crash (netns gone, a new driver) still frees the lease, a failed ADD leaves
//! nothing, and nothing is left at the end. Anything forwarded off the test bridge is dropped by an nftables
//! table the test creates and removes. Needs root.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use cm_server::{Cni, CniOptions, PodNetwork, PodNetworkRequest, PodPortMapping};

const PLUGINS: &str = "/var/cache/cm-tools/cni-plugins-v1.10.0";

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nft(script: &str) {
    let mut child = Command::new("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).spawn().expect("nft");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "nft -f: {script}");
}

fn nft_ruleset() -> String {
    run("nft", &["list", "ruleset"])
}

/// A test network: a config dir with one conflist on bridge `bridge`, host-local leases and the driver's
/// cache in a temp dir, an nft table dropping what is forwarded off the bridge. Dropping it removes the
/// pods' namespaces, the bridge and the table.
struct TestNet {
    dir: tempfile::TempDir,
    bridge: String,
    subnet_prefix: String,
    drop_table: String,
    netns: Vec<String>,
    /// The host port its pods publish (one per test, as the tests run in parallel).
    host_port: u16,
    /// Whether portmap's table (shared by every portmap user) existed before: if not, we remove it.
    hostport_existed: bool,
}

impl TestNet {
    fn new(extra_plugin: Option<&str>) -> TestNet {
        assert!(
            Path::new(PLUGINS).join("bridge").exists(),
            "the CNI reference plugins are not built: run tests/cri/build-tools.sh (scripts/install-deps does)"
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let bridge = format!("cmcni{}x{n}", pid % 10_000);
        let subnet_prefix = format!("10.{}.{}", 180 + n, pid % 250);
        let drop_table = format!("cm_cni_test_{pid}_{n}");
        let hostport_existed = nft_ruleset().contains("table ip cni_hostport");
        nft(&format!(
            "table inet {drop_table} {{\n chain forward {{\n  type filter hook forward priority -10; policy accept;\n  \
             iifname \"{bridge}\" oifname != \"{bridge}\" drop\n  oifname \"{bridge}\" iifname != \"{bridge}\" drop\n }}\n}}\n"
        ));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf")).unwrap();
        let extra = extra_plugin.map(|p| format!(",{p}")).unwrap_or_default();
        let conf = format!(
            r#"{{"cniVersion":"1.0.0","name":"cmtest{n}","plugins":[
                {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,
                  "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet_prefix}.0/24"}}]],"dataDir":"{}"}}}},
                {{"type":"portmap","backend":"nftables","capabilities":{{"portMappings":true}}}},
                {{"type":"loopback"}}{extra}]}}"#,
            dir.path().join("ipam").display()
        );
        std::fs::write(dir.path().join("conf/10-test.conflist"), conf).unwrap();
        let host_port = 18_000 + (pid % 3000) as u16 * 4 + n as u16;
        TestNet { dir, bridge, subnet_prefix, drop_table, netns: Vec::new(), host_port, hostport_existed }
    }

    fn cni(&self) -> Cni {
        let mut options =
            CniOptions::new(self.dir.path(), Some(self.dir.path().join("conf")), vec![PathBuf::from(PLUGINS)]);
        options.cache_dir = self.dir.path().join("cache");
        Cni::new(options)
    }

    /// A pod with a fresh network namespace.
    fn pod(&mut self, id: &str) -> PodNetworkRequest {
        let name = format!("{}-{id}", self.drop_table);
        run("ip", &["netns", "add", &name]);
        self.netns.push(name.clone());
        PodNetworkRequest {
            pod_id: format!("{}{id}", self.drop_table.replace('_', "")),
            netns: PathBuf::from(format!("/run/netns/{name}")),
            ifname: "eth0".into(),
            pod_name: id.into(),
            pod_namespace: "default".into(),
            pod_uid: format!("uid-{id}"),
            port_mappings: vec![PodPortMapping {
                host_port: self.host_port,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: None,
            }],
        }
    }

    fn netns_name(pod: &PodNetworkRequest) -> String {
        pod.netns.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// The addresses host-local has leased (files named by address in its data dir).
    fn leases(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(dirs) = std::fs::read_dir(self.dir.path().join("ipam")) {
            for d in dirs.flatten() {
                for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if name.parse::<IpAddr>().is_ok() {
                        out.push(name);
                    }
                }
            }
        }
        out
    }

    /// Links enslaved to the test bridge (the pods' veths).
    fn ports_on_bridge(&self) -> String {
        run("ip", &["-o", "link", "show", "master", &self.bridge])
    }

    fn cache_files(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("cache")).map(|d| d.count()).unwrap_or(0)
    }

    fn remove_netns(&mut self, pod: &PodNetworkRequest) {
        let name = Self::netns_name(pod);
        run("ip", &["netns", "del", &name]);
        self.netns.retain(|n| n != &name);
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for n in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
        let _ = Command::new("nft").args(["delete", "table", "inet", &self.drop_table]).output();
        if !self.hostport_existed && !std::thread::panicking() {
            // portmap's own tables, made for this test's pods and empty again.
            let _ = Command::new("nft").args(["delete", "table", "ip", "cni_hostport"]).output();
            let _ = Command::new("nft").args(["delete", "table", "ip6", "cni_hostport"]).output();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn add_gives_an_address_and_ports_and_del_frees_everything() {
    let mut net = TestNet::new(None);
    let pod = net.pod("a");
    let cni = net.cni();
    assert_eq!(cni.ready(), Ok(()));
    let rt = runtime();
    let status = rt.block_on(cni.setup(&pod)).expect("setup");
    assert_eq!(status.interface, "eth0");
    assert_eq!(status.ips.len(), 1, "{status:?}");
    let ip = status.ips[0].to_string();
    assert!(ip.starts_with(&format!("{}.", net.subnet_prefix)) && !ip.ends_with(".1"), "{ip}");
    // The address is on the pod's eth0, its loopback is up, its veth is on the bridge, host-local holds it.
    let ns = TestNet::netns_name(&pod);
    let addr = run("ip", &["-n", &ns, "-o", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("inet {ip}/24")), "{addr}");
    let lo = run("ip", &["-n", &ns, "-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    assert!(net.ports_on_bridge().contains("veth"), "{}", net.ports_on_bridge());
    assert_eq!(net.leases(), std::slice::from_ref(&ip));
    // portmap got the pod's port from runtimeConfig.
    let host_port = pod.port_mappings[0].host_port.to_string();
    let hostport = run("nft", &["list", "table", "ip", "cni_hostport"]);
    assert!(hostport.contains(&host_port) && hostport.contains(&ip), "{hostport}");
    rt.block_on(cni.check(&pod)).expect("check");

    rt.block_on(cni.teardown(&pod)).expect("teardown");
    assert!(net.leases().is_empty(), "leases left: {:?}", net.leases());
    assert_eq!(net.ports_on_bridge().trim(), "", "veths left on the bridge");
    let links = run("ip", &["-n", &ns, "-o", "link"]);
    assert!(!links.contains("eth0"), "{links}");
    assert!(!nft_ruleset().contains(&host_port), "portmap rules left:\n{}", nft_ruleset());
    assert_eq!(net.cache_files(), 0);
    // Teardown is idempotent.
    rt.block_on(cni.teardown(&pod)).expect("second teardown");
}

#[test]
fn del_after_a_crash_with_the_netns_gone_frees_the_lease() {
    let mut net = TestNet::new(None);
    let pod = net.pod("b");
    let rt = runtime();
    let status = rt.block_on(net.cni().setup(&pod)).expect("setup");
    assert_eq!(net.leases(), [status.ips[0].to_string()]);
    // The server dies; the namespace goes (a reboot); a new server tears the pod down from its cache.
    net.remove_netns(&pod);
    rt.block_on(net.cni().teardown(&pod)).expect("teardown after the crash");
    assert!(net.leases().is_empty(), "leases left: {:?}", net.leases());
    assert_eq!(net.ports_on_bridge().trim(), "");
    assert!(!nft_ruleset().contains(&pod.port_mappings[0].host_port.to_string()));
    assert_eq!(net.cache_files(), 0);
}

#[test]
fn a_failed_add_leaves_no_lease_veth_rule_or_cache() {
    // A last plugin that fails: what bridge, portmap and loopback did must be undone.
    let mut net = TestNet::new(Some(r#"{"type":"bridge","bridge":"bad/name"}"#));
    let pod = net.pod("c");
    let err = runtime().block_on(net.cni().setup(&pod)).unwrap_err().to_string();
    assert!(err.contains("CNI plugin bridge ADD failed"), "{err}");
    assert!(net.leases().is_empty(), "leases left: {:?}", net.leases());
    assert_eq!(net.ports_on_bridge().trim(), "");
    let links = run("ip", &["-n", &TestNet::netns_name(&pod), "-o", "link"]);
    assert!(!links.contains("eth0"), "{links}");
    assert!(!nft_ruleset().contains(&pod.port_mappings[0].host_port.to_string()));
    assert_eq!(net.cache_files(), 0);
}
