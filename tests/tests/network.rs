//! End to end: bridge networking. Containers reach each other, the gateway and (masqueraded) a fake upstream
//! host; published ports answer on 127.0.0.1, the host's addresses and from the upstream host; addresses are
//! distinct under parallel runs and survive a server restart; removal and restart leave no veth, rule or
//! allocation; bad subnets and ports fail clearly. Every address involved lives on this host's loopback, on
//! bridges the servers create, or in a network namespace the test creates (the "upstream" host): nothing is
//! sent anywhere else.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cm_api::v1 as pb;
use cm_e2e::Registry;
use cm_e2e::harness::*;
use cm_e2e::server::CmServer;
use cm_e2e::trials;
use libtest_mimic::Arguments;

struct World {
    _registry: Registry,
    server: TestServer,
    image: String,
}

fn setup() -> Result<World> {
    let (registry, server, image) = busybox_registry_and_server(&[])?;
    Ok(World { _registry: registry, server, image })
}

fn main() {
    let mut args = Arguments::from_args();
    args.test_threads = args.test_threads.or(Some(4));
    let world = Arc::new(setup().expect("setting up the registry, the image and the server"));
    let trials = trials![world;
        containers_on_the_bridge_reach_each_other_and_the_gateway,
        a_published_port_answers_on_loopback_and_the_hosts_address,
        traffic_to_an_upstream_host_is_masqueraded_and_the_upstream_reaches_published_ports,
        thirty_parallel_runs_get_distinct_addresses,
        removal_frees_the_address_and_leaves_no_veth_or_rule,
        a_restarted_server_keeps_addresses_and_ports_and_removes_leftovers,
        bad_subnets_stop_the_server_with_a_clear_error,
        malformed_or_taken_ports_fail_clearly_and_leave_nothing,
        network_modes_none_and_host_and_the_etc_files,
        dad_is_off_on_both_ends_of_the_veth,
        macs_follow_addresses_and_the_bridges_stays_as_containers_come_and_go,
    ];
    run_suite(&args, trials, world, |w| &w.server);
}

// ------------------------------------------------------------------------------------------------ helpers

/// The container's address on the bridge, from inspect.
fn address_of(server: &TestServer, container: &str) -> Result<Ipv4Addr> {
    let ip = server.inspect(container)?["NetworkSettings"]["IPAddress"].as_str().unwrap_or_default().to_string();
    ip.parse().with_context(|| format!("inspect shows IPAddress {ip:?}"))
}

/// The gateway (the bridge's address) of a server: the first address of its --subnet.
fn gateway_of(server: &CmServer) -> Ipv4Addr {
    let subnet = server.flag("--subnet").expect("the harness gives every server a subnet");
    let network: Ipv4Addr = subnet.split('/').next().unwrap().parse().unwrap();
    Ipv4Addr::from(u32::from(network) + 1)
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The host port `cm-client port` reports for container port 80/tcp.
fn published_port(server: &TestServer, container: &str) -> Result<u16> {
    let out = server.cli_ok(&["port", container, "80"])?;
    let port = out.trim().rsplit(':').next().unwrap_or_default();
    port.parse().with_context(|| format!("cm-client port printed {out:?}"))
}

/// Runs an httpd in a detached container, serving `body` on port 80, with the given extra run flags.
fn web_server(server: &TestServer, image: &str, flags: &[&str], body: &str) -> Result<String> {
    let script = format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www");
    let mut args = flags.to_vec();
    args.extend([image, "sh", "-c", &script]);
    server.run_detached(&args)
}

/// GET / from `address`, retried until the server answers (an httpd needs a moment to listen).
fn http_get(address: SocketAddr) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            if response.is_empty() {
                return Err(std::io::Error::other("empty response"));
            }
            Ok(response)
        })();
        match attempt {
            Ok(response) => return Ok(response),
            Err(e) if Instant::now() > deadline => bail!("GET http://{address}/ failed: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Runs `f` on a thread inside network namespace `netns` (a path); sockets it opens belong there.
fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let file = std::fs::File::open(netns).with_context(|| format!("opening {netns}"))?;
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).context("entering the namespace")?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    ensure!(out.status.success(), "ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// A fake upstream host: a network namespace of its own, linked to the host by a veth pair, 198.51.100.2 on
/// its side and 198.51.100.1 on the host's (TEST-NET-2, routed nowhere else). Removed on drop.
struct Upstream {
    name: String,
    host_link: String,
}

const UPSTREAM_HOST_SIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

impl Upstream {
    fn create() -> Result<Upstream> {
        let pid = std::process::id() % 100_000;
        let upstream = Upstream { name: format!("cm-e2e-up-{pid}"), host_link: format!("cmup{pid}") };
        ip(&["netns", "add", &upstream.name])?;
        ip(&["link", "add", &upstream.host_link, "type", "veth", "peer", "name", "up0", "netns", &upstream.name])?;
        ip(&["addr", "add", &format!("{UPSTREAM_HOST_SIDE}/24"), "dev", &upstream.host_link])?;
        ip(&["link", "set", &upstream.host_link, "up"])?;
        for args in [
            vec!["addr", "add", "198.51.100.2/24", "dev", "up0"],
            vec!["link", "set", "up0", "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut full = vec!["-n", upstream.name.as_str()];
            full.extend(args);
            ip(&full)?;
        }
        Ok(upstream)
    }

    fn netns(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_link]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

// -------------------------------------------------------------------------------------------------- tests

fn containers_on_the_bridge_reach_each_other_and_the_gateway(w: &World) -> Result<()> {
    let s = &w.server;
    let a = s.run_detached(&[&w.image, "sleep", "60"])?;
    let a_ip = address_of(s, &a)?;
    let gateway = gateway_of(s);
    // eth0 has the address inspect shows, and the default route goes through the bridge.
    let config = s.cli_ok(&["exec", &a, "sh", "-c", "ip -o -4 addr show eth0; ip route"])?;
    ensure!(config.contains(&format!("inet {a_ip}/24")), "eth0 of A: {config}");
    ensure!(config.contains(&format!("default via {gateway} dev eth0")), "routes of A: {config}");
    // B pings A by address.
    let out = s.cli(&["run", "--rm", &w.image, "ping", "-c", "1", "-W", "3", &a_ip.to_string()])?;
    ensure!(out.status.success() && stdout(&out).contains("1 packets received"), "ping A: {}", summary(&out));
    // A container reaches a TCP server on the gateway.
    let listener = TcpListener::bind((gateway, 0))?;
    let port = listener.local_addr()?.port();
    let accepted = std::thread::spawn(move || -> Result<(Ipv4Addr, String)> {
        let (mut stream, peer) = listener.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        let SocketAddr::V4(peer) = peer else { bail!("IPv6 peer {peer}") };
        Ok((*peer.ip(), text))
    });
    let script = format!("echo hello-gateway | nc {gateway} {port}");
    let out = s.cli(&["exec", &a, "sh", "-c", &script])?;
    ensure!(out.status.success(), "nc to the gateway: {}", summary(&out));
    let (peer, text) = accepted.join().unwrap()?;
    ensure!(text == "hello-gateway\n", "the gateway's server read {text:?}");
    ensure!(peer == a_ip, "the gateway saw {peer}, not the container's own address {a_ip}");
    s.cli_ok(&["rm", "-f", &a])?;
    Ok(())
}

fn a_published_port_answers_on_loopback_and_the_hosts_address(w: &World) -> Result<()> {
    let s = &w.server;
    let fixed = free_port();
    let c = web_server(s, &w.image, &["-p", &format!("{fixed}:80"), "-p", "8080"], "hello-published")?;
    // The fixed port, and the one picked for -p 8080, both show in port and inspect.
    ensure!(published_port(s, &c)? == fixed, "port 80 is not on {fixed}");
    let picked = s.cli_ok(&["port", &c, "8080"])?;
    let picked: u16 = picked.trim().rsplit(':').next().unwrap_or_default().parse().context(picked.clone())?;
    ensure!(picked != 0 && picked != fixed, "8080 got host port {picked}");
    let ports = &s.inspect(&c)?["NetworkSettings"]["Ports"];
    ensure!(ports["80/tcp"][0]["HostPort"].as_str() == Some(fixed.to_string().as_str()), "inspect ports: {ports}");
    // From the host through 127.0.0.1 and through the address of the bridge (one of the host's).
    for host in [Ipv4Addr::LOCALHOST, gateway_of(s)] {
        let response = http_get(SocketAddr::from((host, fixed)))?;
        ensure!(response.contains("hello-published"), "GET via {host}:{fixed}: {response}");
    }
    // While published, the host port is held: nothing else can listen there.
    ensure!(TcpListener::bind(("0.0.0.0", fixed)).is_err(), "port {fixed} could be taken while published");
    s.cli_ok(&["rm", "-f", &c])?;
    ensure!(TcpListener::bind(("0.0.0.0", fixed)).is_ok(), "port {fixed} is still held after rm");
    Ok(())
}

fn traffic_to_an_upstream_host_is_masqueraded_and_the_upstream_reaches_published_ports(w: &World) -> Result<()> {
    let s = &w.server;
    let upstream = Upstream::create()?;
    // A server on the upstream host records who connects.
    let listener = in_netns(&upstream.netns(), || Ok(TcpListener::bind((UPSTREAM, 0))?))?;
    let port = listener.local_addr()?.port();
    let seen = std::thread::spawn(move || -> Result<Ipv4Addr> {
        let (mut stream, peer) = listener.accept()?;
        stream.write_all(b"pong\n")?;
        let SocketAddr::V4(peer) = peer else { bail!("IPv6 peer {peer}") };
        Ok(*peer.ip())
    });
    let c = web_server(s, &w.image, &["-p", "80"], "hello-upstream")?;
    let c_ip = address_of(s, &c)?;
    let script = format!("echo ping | nc -w 3 {UPSTREAM} {port}");
    let out = s.cli(&["exec", &c, "sh", "-c", &script])?;
    ensure!(out.status.success() && stdout(&out) == "pong\n", "nc to the upstream host: {}", summary(&out));
    let peer = seen.join().unwrap()?;
    ensure!(
        peer == UPSTREAM_HOST_SIDE,
        "the upstream host saw {peer}: the container's {c_ip} was not masqueraded to the host's {UPSTREAM_HOST_SIDE}"
    );
    // The upstream host reaches the published port through the host's address on its link.
    let published = published_port(s, &c)?;
    let response = in_netns(&upstream.netns(), move || http_get(SocketAddr::from((UPSTREAM_HOST_SIDE, published))))?;
    ensure!(response.contains("hello-upstream"), "GET from the upstream host: {response}");
    s.cli_ok(&["rm", "-f", &c])?;
    Ok(())
}

fn thirty_parallel_runs_get_distinct_addresses(w: &World) -> Result<()> {
    let image = w.image.clone();
    let server = &w.server;
    let outputs: Vec<Result<String>> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..30)
            .map(|_| {
                let image = image.clone();
                scope.spawn(move || {
                    let out = bounded(
                        server.client_command(&["run", "--rm", &image, "ip", "-o", "-4", "addr", "show", "eth0"]),
                        None,
                        Duration::from_secs(60),
                    )?;
                    ensure!(out.status.success(), "{}", summary(&out));
                    Ok(stdout(&out))
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mut addresses = std::collections::HashSet::new();
    for out in outputs {
        let out = out?;
        let address = out.split_whitespace().skip_while(|w| *w != "inet").nth(1).unwrap_or_default().to_string();
        ensure!(address.ends_with("/24"), "eth0: {out}");
        ensure!(addresses.insert(address.clone()), "{address} was given twice");
    }
    ensure!(addresses.len() == 30);
    Ok(())
}

fn removal_frees_the_address_and_leaves_no_veth_or_rule(w: &World) -> Result<()> {
    // A /29 holds 5 containers besides the gateway.
    let subnet = format!("10.199.{}.0/29", std::process::id() % 256);
    let s = TestServer::start(&["--subnet", &subnet])?;
    s.cli_ok(&["pull", &w.image])?;
    let mut created = Vec::new();
    for _ in 0..4 {
        created.push(s.cli_ok(&["create", &w.image, "true"])?.trim().to_string());
    }
    let port = free_port();
    let web = web_server(&s, &w.image, &["-p", &format!("{port}:80")], "x")?;
    let veth = format!("cm-{}", &web[..12]);
    ensure!(std::path::Path::new("/sys/class/net").join(&veth).exists(), "no veth {veth} while running");
    ensure!(published_rules(&s.nft_table())?.len() == 1, "rules: {:?}", published_rules(&s.nft_table())?);
    // The subnet is full now.
    let out = s.cli(&["create", &w.image, "true"])?;
    ensure!(
        !out.status.success() && stderr(&out).contains(&format!("no free address left on {subnet}")),
        "{}",
        summary(&out)
    );
    // Removing the running one takes its veth, its rule, its port and its address.
    s.cli_ok(&["rm", "-f", &web])?;
    ensure!(s.remains_of(&web).is_empty(), "left of {web}: {:?}", s.remains_of(&web));
    ensure!(published_rules(&s.nft_table())?.is_empty(), "rules left: {:?}", published_rules(&s.nft_table())?);
    ensure!(TcpListener::bind(("0.0.0.0", port)).is_ok(), "port {port} is still held");
    let again = s.cli_ok(&["create", &w.image, "true"])?;
    created.push(again.trim().to_string());
    let addresses: std::collections::HashSet<Ipv4Addr> =
        created.iter().map(|c| address_of(&s, c)).collect::<Result<_>>()?;
    ensure!(addresses.len() == 5, "addresses: {addresses:?}");
    s.leaves_nothing_behind()
}

fn a_restarted_server_keeps_addresses_and_ports_and_removes_leftovers(w: &World) -> Result<()> {
    let mut s = TestServer::start(&[])?;
    s.cli_ok(&["pull", &w.image])?;
    let port = free_port();
    let web = web_server(&s, &w.image, &["-p", &format!("{port}:80")], "still-here")?;
    let web_ip = address_of(&s, &web)?;
    // Leftovers of a crash: a veth on the bridge no container owns, a rule no container needs.
    let stale = format!("cm-dead{:08}", std::process::id());
    ip(&["link", "add", &stale, "type", "veth", "peer", "name", &format!("cmpeer{}", std::process::id() % 100_000)])?;
    ip(&["link", "set", &stale, "master", &s.bridge()])?;
    let junk = format!("add rule ip {} published tcp dport 1 dnat to 10.1.1.1:1\n", s.nft_table());
    let out = cm_e2e::server::run_with_input("nft", &["-f", "-"], junk.as_bytes())?;
    ensure!(out.status.success(), "adding a junk rule: {}", String::from_utf8_lossy(&out.stderr));
    s.restart()?;
    ensure!(!std::path::Path::new("/sys/class/net").join(&stale).exists(), "the stale veth {stale} survived");
    let rules = published_rules(&s.nft_table())?;
    ensure!(rules.len() == 1 && rules[0].contains(&format!("dport {port} dnat to {web_ip}:80")), "rules: {rules:?}");
    // The running container kept its address and its port, which still answers and is still held.
    ensure!(address_of(&s, &web)? == web_ip, "the address changed across the restart");
    ensure!(http_get(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?.contains("still-here"));
    ensure!(TcpListener::bind(("0.0.0.0", port)).is_err(), "port {port} is not held after the restart");
    // A new container does not get the running one's address.
    let other = s.run_detached(&[&w.image, "sleep", "30"])?;
    ensure!(address_of(&s, &other)? != web_ip, "the restarted server gave {web_ip} again");
    let out = s.cli(&["exec", &other, "ping", "-c", "1", "-W", "3", &web_ip.to_string()])?;
    ensure!(out.status.success(), "ping the old container from the new one: {}", summary(&out));
    s.leaves_nothing_behind()
}

fn bad_subnets_stop_the_server_with_a_clear_error(w: &World) -> Result<()> {
    let expect_failure = |args: &[&str], needle: &str| -> Result<()> {
        match CmServer::start_with(args) {
            Ok(_) => bail!("cm-server started with {args:?}"),
            Err(e) => {
                let text = format!("{e:#}");
                ensure!(text.contains(needle), "starting with {args:?}: expected {needle:?} in:\n{text}");
                Ok(())
            }
        }
    };
    expect_failure(&["--subnet", "10.198.0.1/24"], "host bits are set (the network is 10.198.0.0/24)")?;
    expect_failure(&["--subnet", "10.198.0.0"], "is not a network")?;
    expect_failure(&["--subnet", "10.198.0.0/31"], "/30")?;
    // The shared server's subnet is in use by its bridge.
    let taken = w.server.flag("--subnet").unwrap();
    expect_failure(&["--subnet", &taken], &format!("overlaps the address {taken} on {}", w.server.bridge()))?;
    expect_failure(&["--bridge", "bad name!"], "--bridge \"bad name!\"")?;
    Ok(())
}

fn malformed_or_taken_ports_fail_clearly_and_leave_nothing(w: &World) -> Result<()> {
    let s = &w.server;
    // Malformed mappings are INVALID_ARGUMENT from the server itself.
    let bad =
        [("", 8080, 0, "tcp", "container port 0"), ("", 8080, 80, "sctp", "sctp"), ("nohost", 1, 80, "", "nohost")];
    for (host_ip, host_port, container_port, protocol, needle) in bad {
        let spec = pb::ContainerSpec {
            image: w.image.clone(),
            ports: vec![pb::PortMapping {
                host_ip: host_ip.into(),
                host_port,
                container_port,
                protocol: protocol.into(),
            }],
            ..Default::default()
        };
        let result = runtime().block_on(async {
            let mut client = s.grpc().await?;
            anyhow::Ok(client.create(pb::CreateRequest { spec: Some(spec) }).await)
        })?;
        let status = result.err().context("a malformed port was accepted")?;
        ensure!(status.code() == tonic::Code::InvalidArgument, "{needle}: {status:?}");
        ensure!(status.message().contains(needle), "{needle}: {status:?}");
    }
    let out = s.cli(&["run", "--rm", "-p", "80:80:80", &w.image, "true"])?;
    ensure!(!out.status.success() && stderr(&out).contains("80:80:80"), "{}", summary(&out));
    // A port a host program listens on: the run fails naming it, and nothing is left.
    let holder = TcpListener::bind("0.0.0.0:0")?;
    let port = holder.local_addr()?.port();
    let name = unique("port-in-use");
    let out = s.cli(&["run", "--rm", "--name", &name, "-p", &format!("{port}:80"), &w.image, "true"])?;
    ensure!(out.status.code() == Some(125), "{}", summary(&out));
    ensure!(stderr(&out).contains(&format!("0.0.0.0:{port}/tcp is already in use")), "{}", summary(&out));
    let gone = s.cli(&["inspect", &name])?;
    ensure!(!gone.status.success(), "the --rm container was left behind: {}", summary(&gone));
    // A port another container publishes.
    drop(holder);
    let first = web_server(s, &w.image, &["-p", &format!("{port}:80")], "first")?;
    let out = s.cli(&["run", "--name", "second-on-port", "-p", &format!("{port}:80"), &w.image, "true"])?;
    ensure!(
        stderr(&out).contains(&format!("{port}/tcp is already published by another container")),
        "{}",
        summary(&out)
    );
    let second = s.inspect("second-on-port")?;
    ensure!(second["State"]["Status"] == "created", "{second}");
    let id = second["Id"].as_str().unwrap_or_default().to_string();
    ensure!(s.remains_of(&id).iter().all(|r| r.starts_with("directory")), "half-configured: {:?}", s.remains_of(&id));
    ensure!(http_get(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?.contains("first"), "the first lost its port");
    s.cli_ok(&["rm", "-f", &first, "second-on-port"])?;
    Ok(())
}

fn network_modes_none_and_host_and_the_etc_files(w: &World) -> Result<()> {
    let s = &w.server;
    let none = s.cli_ok(&["run", "--rm", "--network", "none", &w.image, "ls", "/sys/class/net"])?;
    ensure!(none.split_whitespace().collect::<Vec<_>>() == ["lo"], "--network none has {none:?}");
    let host = s.cli_ok(&["run", "--rm", "--network", "host", &w.image, "ls", "/sys/class/net"])?;
    ensure!(host.split_whitespace().any(|l| l == s.bridge()), "--network host does not see {}: {host:?}", s.bridge());
    let name = unique("named");
    let c = s.run_detached(&["--name", &name, "--hostname", "web1", &w.image, "sleep", "30"])?;
    let ip = address_of(s, &c)?;
    let hosts = s.cli_ok(&["exec", &c, "cat", "/etc/hosts", "/etc/hostname"])?;
    ensure!(hosts.contains(&format!("{ip}\tweb1 {name}\n")), "/etc/hosts: {hosts}");
    ensure!(hosts.contains("127.0.0.1\tlocalhost") && hosts.ends_with("web1\n"), "{hosts}");
    s.cli_ok(&["rm", "-f", &c])?;
    Ok(())
}

fn dad_is_off_on_both_ends_of_the_veth(w: &World) -> Result<()> {
    let s = &w.server;
    if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
        return Ok(()); // IPv6 is off on this host: there is no DAD to turn off.
    }
    let c = s.run_detached(&[&w.image, "sleep", "30"])?;
    let inside = s.cli_ok(&["exec", &c, "cat", "/proc/sys/net/ipv6/conf/eth0/accept_dad"])?;
    ensure!(inside.trim() == "0", "accept_dad in the container: {inside}");
    let host = std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/cm-{}/accept_dad", &c[..12]))?;
    ensure!(host.trim() == "0", "accept_dad on the host end: {host}");
    s.cli_ok(&["rm", "-f", &c])?;
    Ok(())
}

/// 02:42 and the IPv4 address, as `ip link` shows it.
fn mac_of(address: Ipv4Addr) -> String {
    let [a, b, c, d] = address.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

fn macs_follow_addresses_and_the_bridges_stays_as_containers_come_and_go(w: &World) -> Result<()> {
    let s = &w.server;
    let bridge = Path::new("/sys/class/net").join(s.bridge());
    let read = |name: &str| -> Result<String> { Ok(std::fs::read_to_string(bridge.join(name))?.trim().to_string()) };
    // A bridge whose MAC was never set takes its ports' lowest, so containers joining would change it under
    // the neighbor entries of the others. cm sets it (addr_assign_type 3, NET_ADDR_SET).
    ensure!(read("addr_assign_type")? == "3", "the bridge's MAC is not a set one");
    let mac = read("address")?;
    ensure!(mac == mac_of(gateway_of(s)), "the bridge's MAC {mac} should follow the gateway {}", gateway_of(s));
    for _ in 0..3 {
        let id = s.run_detached(&[&w.image, "sleep", "60"])?;
        let eth0 = s.cli_ok(&["exec", &id, "cat", "/sys/class/net/eth0/address"])?;
        let address = address_of(s, &id)?;
        s.cli_ok(&["rm", "-f", &id])?;
        ensure!(eth0.trim() == mac_of(address), "eth0 of {address} has MAC {eth0}");
        ensure!(read("address")? == mac, "the bridge's MAC changed from {mac} as a container came and went");
    }
    Ok(())
}
