"""The Client: one gRPC channel to a cm-server, with ``images``, ``containers`` and ``events``."""

from __future__ import annotations

import datetime
import os
from typing import Iterable, Iterator, Mapping, Optional, Sequence, Union

import grpc

from . import _convert
from .containers import ContainerCollection
from .errors import translated, translated_stream
from .images import ImageCollection
from .v1 import cm_pb2 as pb
from .v1 import cm_pb2_grpc as rpc

#: Where cm-server listens unless told otherwise.
DEFAULT_HOST = "unix:/run/cm.sock"

PathOrBytes = Union[str, os.PathLike, bytes]
Filters = Union[Mapping[str, Union[str, Sequence[str]]], Iterable[str], None]


def grpc_target(host: str) -> str:
    """The gRPC target for a cm address: ``unix:/path``, ``unix:///path``, ``tcp://HOST:PORT`` or ``HOST:PORT``."""
    if host.startswith("unix:"):
        return host
    if host.startswith("tcp://"):
        return host[len("tcp://") :]
    if "://" in host:
        raise ValueError(f"unsupported address {host!r}: use unix:/path or tcp://HOST:PORT")
    return host


def _read(source: Optional[PathOrBytes]) -> Optional[bytes]:
    if source is None or isinstance(source, bytes):
        return source
    with open(source, "rb") as f:
        return f.read()


class Client:
    """A connection to cm-server.

    >>> client = cm.Client("unix:/run/cm.sock")
    >>> client.containers.run("busybox", ["echo", "hi"])
    b'hi\\n'

    ``host`` is a unix socket (``unix:/run/cm.sock``, ``unix:///run/cm.sock``) or a TCP address
    (``tcp://127.0.0.1:7070``). Any of ``tls_ca_cert``, ``tls_client_cert``, ``tls_client_key`` (paths or PEM
    bytes) makes the TCP connection TLS, with a client certificate when both of the latter are given
    (``grpc.ssl_channel_credentials``). ``timeout`` (seconds) bounds every call that is not a stream.
    ``options`` are extra grpcio channel options; none are needed.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        *,
        timeout: Optional[float] = 60.0,
        tls_ca_cert: Optional[PathOrBytes] = None,
        tls_client_cert: Optional[PathOrBytes] = None,
        tls_client_key: Optional[PathOrBytes] = None,
        options: Sequence[tuple] = (),
    ):
        self.host = host
        self.timeout = timeout
        target = grpc_target(host)
        if tls_ca_cert is not None or tls_client_cert is not None or tls_client_key is not None:
            if host.startswith("unix:"):
                raise ValueError("TLS is for tcp:// addresses; a unix socket is protected by its file mode")
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(tls_ca_cert),
                private_key=_read(tls_client_key),
                certificate_chain=_read(tls_client_cert),
            )
            self._channel = grpc.secure_channel(target, credentials, options=list(options))
        else:
            self._channel = grpc.insecure_channel(target, options=list(options))
        #: The generated stub (cm.v1.ContainerService) for anything this layer does not wrap.
        self.api = rpc.ContainerServiceStub(self._channel)
        #: Images in the server's store: pull, list, get, remove.
        self.images = ImageCollection(self)
        #: Containers: run, create, get, list.
        self.containers = ContainerCollection(self)

    @classmethod
    def from_env(cls, **kwargs) -> "Client":
        """A client for ``$CM_HOST`` (default ``unix:/run/cm.sock``). TLS files come from ``$CM_TLS_CA``,
        ``$CM_TLS_CERT`` and ``$CM_TLS_KEY`` (as cm-client's), or with ``$CM_CERT_PATH`` set, ``ca.pem``,
        ``cert.pem`` and ``key.pem`` from that directory (as docker's DOCKER_CERT_PATH)."""
        host = os.environ.get("CM_HOST") or DEFAULT_HOST
        for variable, option in [("CM_TLS_CA", "tls_ca_cert"), ("CM_TLS_CERT", "tls_client_cert"),
                                 ("CM_TLS_KEY", "tls_client_key")]:
            if os.environ.get(variable):
                kwargs.setdefault(option, os.environ[variable])
        cert_path = os.environ.get("CM_CERT_PATH")
        if cert_path:
            kwargs.setdefault("tls_ca_cert", os.path.join(cert_path, "ca.pem"))
            kwargs.setdefault("tls_client_cert", os.path.join(cert_path, "cert.pem"))
            kwargs.setdefault("tls_client_key", os.path.join(cert_path, "key.pem"))
        return cls(host, **kwargs)

    @translated
    def ping(self) -> bool:
        """True when the server answers (a ListImages call); raises Unavailable otherwise."""
        self.api.ListImages(pb.ListImagesRequest(), timeout=self.timeout)
        return True

    def events(
        self,
        filters: Filters = None,
        since: Union[datetime.datetime, float, None] = None,
    ) -> Iterator[pb.EventsResponse]:
        """Streams lifecycle events (container, exec, image) as ``EventsResponse`` messages (time, type,
        action, id, attributes): those kept since ``since`` (a datetime or unix seconds), then live ones, until
        the iterator is closed.

        ``filters``: ``{"type": "container", "container": ["web", "db"]}`` or ``["type=container"]``; values
        of one key are alternatives, different keys must all match (keys: type, action, container, id, image).
        """
        request = pb.EventsRequest(filters=_convert.filters(filters))
        if since is not None:
            request.since.CopyFrom(_convert.timestamp(since))
        return translated_stream(self.api.Events(request))

    def close(self) -> None:
        """Closes the channel (streams in flight are cancelled)."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.host!r})"
