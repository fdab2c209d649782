"""Python values to cm.v1 messages (no server needed)."""

import datetime

import pytest

from cm import _convert, pb
from cm.client import grpc_target


def test_docker_py_names_and_spec_field_names_make_the_same_spec():
    spec = _convert.spec(
        "busybox", "sh -c 'echo hi'", name="web", environment={"A": "1"}, working_dir="/srv", mem_limit="256m",
        cpus=0.5, pids_limit=10, network_mode="none", ports={"80/tcp": 8080, "53/udp": ("127.0.0.1", 5353), 9000: None},
        volumes=["/src:/dst:ro"], labels={"k": "v"}, stdin_open=True, entrypoint=[],
    )
    assert list(spec.command) == ["sh", "-c", "echo hi"] and spec.name == "web" and list(spec.env) == ["A=1"]
    assert spec.workdir == "/srv" and spec.stdin and spec.entrypoint_set and not spec.entrypoint
    assert (spec.resources.memory_bytes, spec.resources.cpu_millis, spec.resources.pids_limit) == (256 << 20, 500, 10)
    assert spec.network == pb.NETWORK_MODE_NONE and dict(spec.labels) == {"k": "v"}
    assert [(p.container_port, p.protocol, p.host_ip, p.host_port) for p in spec.ports] == [
        (80, "tcp", "", 8080), (53, "udp", "127.0.0.1", 5353), (9000, "tcp", "", 0)]
    assert spec.mounts[0] == pb.Mount(type="bind", source="/src", target="/dst", read_only=True)
    same = _convert.spec("busybox", ["sh", "-c", "echo hi"], env=["A=1"], workdir="/srv", memory=256 << 20,
                         nano_cpus=500_000_000, network=pb.NETWORK_MODE_NONE)
    assert (same.env, same.workdir, same.resources.memory_bytes, same.resources.cpu_millis) == (
        spec.env, spec.workdir, spec.resources.memory_bytes, spec.resources.cpu_millis)
    assert not _convert.spec("busybox").HasField("resources")


def test_bad_options_are_refused_before_any_call():
    with pytest.raises(TypeError):
        _convert.spec("busybox", no_such_option=1)
    with pytest.raises(ValueError):
        _convert.spec("busybox", network_mode="overlay")
    with pytest.raises(ValueError):
        _convert.size("12 parsecs")


def test_sizes_filters_times_and_targets():
    assert [_convert.size(v) for v in (1024, "1k", "1kb", "1.5m", "2g", "10b")] == [1024, 1024, 1024, 3 << 19, 2 << 30, 10]
    assert _convert.filters({"type": "container", "container": ["a", "b"]}) == [
        "type=container", "container=a", "container=b"]
    assert _convert.filters(["image=x"]) == ["image=x"] and _convert.filters(None) == []
    assert _convert.timestamp(1.5).ToNanoseconds() == 1_500_000_000
    naive = datetime.datetime(2026, 1, 2, 3, 4, 5)
    assert _convert.timestamp(naive).ToDatetime() == naive
    assert _convert.duration(0.25).ToMilliseconds() == 250 and _convert.duration(None) is None
    assert grpc_target("unix:/run/cm.sock") == "unix:/run/cm.sock"
    assert grpc_target("unix:///run/cm.sock") == "unix:///run/cm.sock"
    assert grpc_target("tcp://127.0.0.1:7070") == "127.0.0.1:7070"
    with pytest.raises(ValueError):
        grpc_target("http://127.0.0.1:7070")
