"""Python values to cm.v1 messages: container specs (docker-py's argument names), filters, times."""

from __future__ import annotations

import datetime
import shlex
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union

from google.protobuf import duration_pb2, timestamp_pb2

from .v1 import cm_pb2 as pb

Command = Union[str, Sequence[str], None]

_NETWORKS = {
    "bridge": pb.NETWORK_MODE_BRIDGE,
    "none": pb.NETWORK_MODE_NONE,
    "host": pb.NETWORK_MODE_HOST,
}
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def argv(command: Command) -> List[str]:
    """A command as argv: a list as it is, a string split as a shell would (no shell runs)."""
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return list(command)


def size(value: Union[int, str]) -> int:
    """Bytes from an int or docker's syntax ("256m", "1g")."""
    if isinstance(value, int):
        return value
    text = value.strip().lower()
    number, unit = text.rstrip("bkmgt"), text[len(text.rstrip("bkmgt")) :]
    unit = unit[:-1] if len(unit) == 2 and unit.endswith("b") else unit
    if unit not in _SIZE_UNITS or not number:
        raise ValueError(f"bad size {value!r}: use bytes or a number with b, k, m, g (e.g. 256m)")
    return int(float(number) * _SIZE_UNITS[unit])


def ports(value: Union[Mapping[Any, Any], Iterable[pb.PortMapping]]) -> List[pb.PortMapping]:
    """docker-py's ports: ``{"80/tcp": 8080, "53/udp": ("127.0.0.1", 5353), 9000: None}`` (None: any free
    host port), or PortMapping messages."""
    if not isinstance(value, Mapping):
        return list(value)
    mappings = []
    for container, host in value.items():
        port, _, protocol = str(container).partition("/")
        mapping = pb.PortMapping(container_port=int(port), protocol=protocol or "tcp")
        if isinstance(host, tuple):
            mapping.host_ip, mapping.host_port = host[0], int(host[1]) if len(host) > 1 and host[1] else 0
        elif host is not None:
            mapping.host_port = int(host)
        mappings.append(mapping)
    return mappings


def mounts(value: Iterable[Union[pb.Mount, Mapping[str, Any], str]]) -> List[pb.Mount]:
    """Mounts: Mount messages, dicts with Mount's fields, or "SOURCE:TARGET[:ro]" bind strings."""
    result = []
    for m in value:
        if isinstance(m, pb.Mount):
            result.append(m)
        elif isinstance(m, str):
            parts = m.split(":")
            result.append(pb.Mount(type="bind", source=parts[0], target=parts[1], read_only=parts[2:] == ["ro"]))
        else:
            result.append(pb.Mount(**m))
    return result


def env(value: Union[Mapping[str, str], Iterable[str]]) -> List[str]:
    if isinstance(value, Mapping):
        return [f"{k}={v}" for k, v in value.items()]
    return list(value)


def spec(image: str, command: Command = None, **kwargs: Any) -> pb.ContainerSpec:
    """A ContainerSpec from docker-py's names (environment, working_dir, mem_limit, nano_cpus, cpus,
    network_mode, stdin_open, volumes ...) or ContainerSpec's own field names."""
    s = pb.ContainerSpec(image=image, command=argv(command))
    resources = pb.Resources()
    for key, value in kwargs.items():
        if value is None:
            continue
        if key == "entrypoint":
            s.entrypoint[:] = argv(value)
            s.entrypoint_set = True
        elif key in ("environment", "env"):
            s.env[:] = env(value)
        elif key in ("working_dir", "workdir"):
            s.workdir = value
        elif key in ("stdin_open", "stdin"):
            s.stdin = bool(value)
        elif key in ("mem_limit", "memory"):
            resources.memory_bytes = size(value)
        elif key == "cpus":
            resources.cpu_millis = round(float(value) * 1000)
        elif key == "nano_cpus":
            resources.cpu_millis = int(value) // 1_000_000
        elif key == "pids_limit":
            resources.pids_limit = int(value)
        elif key in ("network_mode", "network"):
            if isinstance(value, str):
                if value not in _NETWORKS:
                    raise ValueError(f"network_mode {value!r}: one of {', '.join(_NETWORKS)}")
                value = _NETWORKS[value]
            s.network = value
        elif key == "ports":
            s.ports.extend(ports(value))
        elif key in ("mounts", "volumes"):
            s.mounts.extend(mounts(value))
        elif key == "labels":
            s.labels.update(value)
        elif key == "resources":
            resources.MergeFrom(value)
        elif key in ("name", "user", "hostname", "tty", "auto_remove", "stop_signal"):
            setattr(s, key, value)
        else:
            raise TypeError(f"unknown container option {key!r}")
    if resources.ByteSize():
        s.resources.CopyFrom(resources)
    return s


def filters(value: Union[Mapping[str, Any], Iterable[str], None]) -> List[str]:
    """``{"key": value or [values]}`` or ``["key=value"]`` as the API's "key=value" strings."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        result = []
        for key, values in value.items():
            for v in [values] if isinstance(values, str) else values:
                result.append(f"{key}={v}")
        return result
    return list(value)


def timestamp(value: Union[datetime.datetime, float, int]) -> timestamp_pb2.Timestamp:
    """A Timestamp from a datetime (naive means UTC) or unix seconds."""
    t = timestamp_pb2.Timestamp()
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        t.FromDatetime(value)
    else:
        t.FromNanoseconds(int(float(value) * 1e9))
    return t


def duration(seconds: Optional[float]) -> Optional[duration_pb2.Duration]:
    if seconds is None:
        return None
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d

