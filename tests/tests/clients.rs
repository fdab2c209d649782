//! End to end: the client libraries against a real server and registry. The Python package (clients/python)
//! installs into a virtualenv and its pytest suite passes; the Go module's `go test ./...` passes; both
//! quickstart examples run; a stock grpcio channel with no options works on the unix socket (while TCP stays
//! strict about :authority); the committed stubs and docs/api.md are current with proto/. The suites get the
//! server's socket and the image through CM_HOST and CM_TEST_IMAGE. One registry and one server serve the
//! whole binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cm_e2e::certs::Certs;
use cm_e2e::harness::{TestServer, bounded, run_suite, stderr, stdout, summary};
use cm_e2e::trials;
use cm_e2e::{Registry, fixtures, push_image};
use libtest_mimic::Arguments;

/// How long a client suite (pip install and pytest, go test) may take.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

struct World {
    _registry: Registry,
    server: TestServer,
    image: String,
    /// The server's TCP address (loopback, TLS with client certificates), beside its unix socket.
    tcp: String,
    certs: Certs,
}

fn setup() -> Result<World> {
    let registry = Registry::start()?;
    push_image(&registry.addr(), "test/busybox", "latest", &fixtures::busybox_image())?;
    let image = format!("{}/test/busybox:latest", registry.addr());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let tcp = format!("127.0.0.1:{port}");
    let certs = Certs::make()?;
    let file = |name: &str| certs.path(name).display().to_string();
    let listen = format!("tcp://{tcp}");
    let (cert, key, ca) = (file("server.pem"), file("server.key"), file("ca.pem"));
    let server = TestServer::start(&["--listen", &listen, "--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca])?;
    server.cli_ok(&["pull", &image])?;
    Ok(World { _registry: registry, server, image, tcp, certs })
}

fn main() {
    let args = Arguments::from_args();
    let world = Arc::new(setup().expect("setting up the registry, the image and the server"));
    let trials = trials![world;
        the_python_package_installs_into_a_virtualenv_and_passes_its_pytest_suite,
        the_go_module_passes_go_test_against_the_server,
        the_python_and_go_quickstart_examples_run_a_container,
        a_stock_grpcio_channel_with_no_options_works_on_the_unix_socket_and_tcp_stays_strict,
        the_committed_stubs_and_api_doc_are_current_with_the_proto,
    ];
    run_suite(&args, trials, world, |w| &w.server);
}

/// The checkout under test. Read when the test runs (cargo test sets CARGO_MANIFEST_DIR for it), not baked in at
/// compile time: a test binary reused from a shared target dir may have been built from another checkout.
fn repo() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| std::env::current_dir().expect("the working directory"), PathBuf::from);
    manifest_dir.parent().expect("the repository").to_path_buf()
}

/// Runs `command` (bounded) with the server and image in the environment; fails with its output unless it
/// exits 0.
fn run_ok(w: &World, mut command: Command, what: &str) -> Result<String> {
    command.env("CM_HOST", w.server.host()).env("CM_TEST_IMAGE", &w.image);
    let out = bounded(command, None, SUITE_TIMEOUT).with_context(|| what.to_string())?;
    ensure!(out.status.success(), "{what}: {}", summary(&out));
    Ok(stdout(&out) + &stderr(&out))
}

/// A virtualenv with clients/python installed from a copy of it: the installed package is tested, not the
/// source tree (which the build would litter). The venv sees the system's site packages and uses their pip
/// and setuptools, so grpcio, protobuf and pytest from scripts/install-deps serve it offline.
fn python_venv(dir: &Path) -> Result<PathBuf> {
    let source = dir.join("src");
    let copy = Command::new("cp").arg("-r").arg(repo().join("clients/python")).arg(&source).status()?;
    ensure!(copy.success(), "copying clients/python");
    let venv = dir.join("venv");
    let mut create = Command::new("python3");
    create.args(["-m", "venv", "--system-site-packages", "--without-pip"]).arg(&venv);
    let out = bounded(create, None, SUITE_TIMEOUT)?;
    ensure!(out.status.success(), "python3 -m venv (scripts/install-deps installs it): {}", summary(&out));
    let mut install = Command::new(venv.join("bin/python"));
    install.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-build-isolation"]);
    install.arg(&source);
    let out = bounded(install, None, SUITE_TIMEOUT)?;
    ensure!(out.status.success(), "pip install clients/python: {}", summary(&out));
    Ok(venv.join("bin/python"))
}

fn go_command(args: &[&str]) -> Command {
    let mut go = Command::new("go");
    go.args(args).current_dir(repo().join("clients/go"));
    // The module cache and build cache stay where go keeps them ($HOME/go/pkg/mod, $HOME/.cache/go-build), so
    // a second run builds nothing; the modules are those of go.sum.
    go.env("PATH", format!("/usr/local/go/bin:{}", std::env::var("PATH").unwrap_or_default()));
    go
}

fn the_python_package_installs_into_a_virtualenv_and_passes_its_pytest_suite(w: &World) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let python = python_venv(dir.path())?;
    let mut pytest = Command::new(&python);
    pytest.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"]).arg(dir.path().join("src/tests"));
    pytest.current_dir(dir.path());
    let out = run_ok(w, pytest, "pytest clients/python")?;
    ensure!(out.contains(" passed") && !out.contains("skipped"), "pytest ran no test, or skipped some:\n{out}");
    Ok(())
}

fn the_go_module_passes_go_test_against_the_server(w: &World) -> Result<()> {
    let out = run_ok(w, go_command(&["test", "-count=1", "-v", "./..."]), "go test ./...")?;
    ensure!(out.contains("ok  \tgithub.com/cm-project/cm/clients/go/cm"), "go test:\n{out}");
    ensure!(!out.contains("--- SKIP"), "go test skipped tests:\n{out}");
    Ok(())
}

fn the_python_and_go_quickstart_examples_run_a_container(w: &World) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let python = python_venv(dir.path())?;
    let mut quickstart = Command::new(&python);
    quickstart.arg(dir.path().join("src/examples/quickstart.py")).arg(&w.image);
    let out = run_ok(w, quickstart, "clients/python/examples/quickstart.py")?;
    for line in ["pulled sha256:", "b'hello from python\\n'", "ExecResult(exit_code=0, output=b'c\\nb\\na\\n')"] {
        ensure!(out.contains(line), "expected {line:?} in:\n{out}");
    }
    let out = run_ok(w, go_command(&["run", "./quickstart", &w.image]), "go run ./quickstart")?;
    ensure!(out.contains("hello from go\nexit 0 <nil>"), "go run ./quickstart:\n{out}");
    let example = go_command(&["run", "./example", "-host", &w.server.host(), "-image", &w.image]);
    let out = run_ok(w, example, "go run ./example")?;
    for line in [
        "pull: done sha256:",
        "hello from go\nrun: exit 3",
        "exec: stdout \"c\\nb\\na\\n\", exit 0",
        "stats: pids 1, memory",
        "removed: true",
    ] {
        ensure!(out.contains(line), "expected {line:?} in:\n{out}");
    }
    Ok(())
}

/// Only grpcio and the generated stubs (clients/python/src on the path), default channel options: a unary
/// call, a server stream and a bidirectional Exec on both unix target forms. Over TCP (TLS with a client
/// certificate) the same :authority that grpcio sends on the socket is still refused, and the default one is
/// served; without a client certificate nothing is. The package's Client does TLS with the same files.
const STOCK_GRPCIO: &str = r#"
import os, sys, grpc
import cm
from cm.v1 import cm_pb2 as pb, cm_pb2_grpc as rpc
socket, tcp, image, certs = sys.argv[1:]
read = lambda name: open(os.path.join(certs, name), "rb").read()
tls = grpc.ssl_channel_credentials(read("ca.pem"), read("client.key"), read("client.pem"))
for target in ["unix:" + socket, "unix://" + socket]:
    with grpc.insecure_channel(target) as channel:
        stub = rpc.ContainerServiceStub(channel)
        stub.ListImages(pb.ListImagesRequest(), timeout=10)
        assert list(stub.PullImage(pb.PullImageRequest(reference=image), timeout=60))[-1].HasField("done")
        spec = pb.ContainerSpec(image=image, command=["sleep", "60"], network=pb.NETWORK_MODE_NONE)
        box = stub.Run(pb.RunRequest(spec=spec), timeout=10).id
        frames = [pb.ExecRequest(start=pb.ExecStart(container=box, argv=["cat"], stdin=True)),
                  pb.ExecRequest(stdin=pb.StdinData(data=b"bidi\n")), pb.ExecRequest(close_stdin=True)]
        out = b"".join(r.stdout for r in stub.Exec(iter(frames), timeout=10))
        stub.Remove(pb.RemoveRequest(container=box, force=True), timeout=10)
        print(target, "ok", out)
with grpc.secure_channel(tcp, tls) as channel:
    rpc.ContainerServiceStub(channel).ListImages(pb.ListImagesRequest(), timeout=10)
    print("tcp ok")
for name, credentials in [("no client certificate", grpc.ssl_channel_credentials(read("ca.pem"))),
                          ("another CA's certificate", grpc.ssl_channel_credentials(read("ca.pem"), read("other.key"), read("other.pem")))]:
    with grpc.secure_channel(tcp, credentials) as channel:
        try:
            rpc.ContainerServiceStub(channel).ListImages(pb.ListImagesRequest(), timeout=10)
            print("tcp served", name)
        except grpc.RpcError as e:
            print("tcp refused", name)
with grpc.insecure_channel(tcp) as channel:
    try:
        rpc.ContainerServiceStub(channel).ListImages(pb.ListImagesRequest(), timeout=10)
        print("tcp served plaintext")
    except grpc.RpcError as e:
        print("tcp refused plaintext")
client = cm.Client("tcp://" + tcp, tls_ca_cert=os.path.join(certs, "ca.pem"),
                   tls_client_cert=os.path.join(certs, "client.pem"), tls_client_key=os.path.join(certs, "client.key"))
print("package tls", client.ping())
options = [("grpc.default_authority", socket.lstrip("/").replace("/", "%2F")), ("grpc.ssl_target_name_override", "localhost")]
with grpc.secure_channel(tcp, tls, options=options) as channel:
    try:
        rpc.ContainerServiceStub(channel).ListImages(pb.ListImagesRequest(), timeout=10)
        print("tcp took a bad authority")
    except grpc.RpcError as e:
        print("tcp refused", e.code().name)
"#;

fn a_stock_grpcio_channel_with_no_options_works_on_the_unix_socket_and_tcp_stays_strict(w: &World) -> Result<()> {
    let mut python = Command::new("python3");
    python.args(["-c", STOCK_GRPCIO]).arg(w.server.socket()).arg(&w.tcp).arg(&w.image).arg(w.certs.path(""));
    python.env("PYTHONPATH", repo().join("clients/python/src"));
    let out = run_ok(w, python, "a stock grpcio client (scripts/install-deps installs grpcio)")?;
    let socket = w.server.socket().display().to_string();
    for line in [
        format!("unix:{socket} ok b'bidi\\n'"),
        format!("unix://{socket} ok b'bidi\\n'"),
        "tcp ok".to_string(),
        "tcp refused no client certificate".to_string(),
        "tcp refused another CA's certificate".to_string(),
        "tcp refused plaintext".to_string(),
        "package tls True".to_string(),
        "tcp refused INTERNAL".to_string(),
    ] {
        ensure!(out.contains(&line), "expected {line:?} in:\n{out}");
    }
    Ok(())
}

fn the_committed_stubs_and_api_doc_are_current_with_the_proto(_: &World) -> Result<()> {
    let mut check = Command::new(repo().join("scripts/gen-clients"));
    check.arg("--check");
    let out = bounded(check, None, SUITE_TIMEOUT)?;
    ensure!(
        out.status.success(),
        "the generated code is stale (run scripts/gen-clients; scripts/install-deps installs the pinned \
         generators): {}",
        summary(&out)
    );
    Ok(())
}
