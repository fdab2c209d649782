"""cm: a Python client for the cm container manager (cm-server's gRPC API, cm.v1).

    import cm

    client = cm.Client.from_env()                       # $CM_HOST, default unix:/run/cm.sock
    print(client.containers.run("busybox", ["echo", "hello"]))
    web = client.containers.run("busybox", "sleep 600", detach=True, name="web")
    print(web.exec_run(["sort", "-r"], stdin=b"a\\nb\\n"))  # ExecResult(exit_code=0, output=b'b\\na\\n')
    web.remove(force=True)

``client.api`` is the generated stub (``cm.v1.cm_pb2_grpc.ContainerServiceStub``) for everything else; the
messages are in ``cm.v1.cm_pb2`` (also importable as ``cm.pb``).
"""

from .client import DEFAULT_HOST, Client
from .containers import Container, ContainerCollection
from .errors import (
    APIError,
    Cancelled,
    CMError,
    Conflict,
    ContainerError,
    DataLoss,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from .exec import ExecResult, Output, Session
from .images import Image, ImageCollection, PullProgress
from .v1 import cm_pb2 as pb
from .v1.cm_pb2 import ExitStatus, LayerProgress, PullDone, PullResolved, PullSummary

__all__ = [
    "APIError",
    "CMError",
    "Cancelled",
    "Client",
    "Conflict",
    "Container",
    "ContainerCollection",
    "ContainerError",
    "DEFAULT_HOST",
    "DataLoss",
    "DeadlineExceeded",
    "ExecResult",
    "ExitStatus",
    "Image",
    "ImageCollection",
    "InvalidArgument",
    "LayerProgress",
    "NotFound",
    "Output",
    "PermissionDenied",
    "PullDone",
    "PullProgress",
    "PullResolved",
    "PullSummary",
    "ResourceExhausted",
    "Session",
    "Unavailable",
    "pb",
]
