"""Exceptions: one class per gRPC status the server answers with, and ContainerError for a failed run."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable, Iterator, Optional, TypeVar

import grpc

if TYPE_CHECKING:
    from .containers import Container
    from .v1 import cm_pb2 as pb


class CMError(Exception):
    """Base class of every error this package raises."""


class APIError(CMError):
    """The server refused a call. ``code`` is the gRPC status code, ``message`` the server's explanation."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class NotFound(APIError):
    """NOT_FOUND: no such container, exec, image, repository or tag."""

    code = grpc.StatusCode.NOT_FOUND


class Conflict(APIError):
    """ALREADY_EXISTS (a container name in use) or FAILED_PRECONDITION (e.g. removing a running container
    without force, starting a running one). ``code`` says which."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class InvalidArgument(APIError):
    """INVALID_ARGUMENT: a malformed request (reference, signal, filter, limit ...)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class Unavailable(APIError):
    """UNAVAILABLE: the server, or a registry it needs, cannot be reached."""

    code = grpc.StatusCode.UNAVAILABLE


class PermissionDenied(APIError):
    """PERMISSION_DENIED: a registry refused the credentials."""

    code = grpc.StatusCode.PERMISSION_DENIED


class DataLoss(APIError):
    """DATA_LOSS: pulled content did not match its digest (nothing was stored)."""

    code = grpc.StatusCode.DATA_LOSS


class ResourceExhausted(APIError):
    """RESOURCE_EXHAUSTED: e.g. an events client that fell too far behind."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Cancelled(APIError):
    """CANCELLED: the call was cancelled (by this client, or the server went away)."""

    code = grpc.StatusCode.CANCELLED


class DeadlineExceeded(APIError):
    """DEADLINE_EXCEEDED: the call's timeout passed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


_BY_CODE = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def from_rpc_error(error: grpc.RpcError) -> APIError:
    """The APIError subclass for a failed call (its code and details)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else None) or str(error)
    return _BY_CODE.get(code, APIError)(message, code)


class ContainerError(CMError):
    """A container run by ``containers.run`` (not detached) exited with a non-zero code."""

    def __init__(self, container: "Container", exit_status: "pb.ExitStatus", command, image: str, stderr: bytes):
        self.container = container
        self.exit_status = exit_status
        self.exit_code = exit_status.exit_code
        self.command = command
        self.image = image
        self.stderr = stderr
        detail = f": {stderr.decode(errors='replace').strip()}" if stderr else ""
        super().__init__(
            f"command {command!r} in image {image!r} returned non-zero exit status {self.exit_code}{detail}"
        )


T = TypeVar("T")


def translated(function: Callable[..., T]) -> Callable[..., T]:
    """Decorator: grpc.RpcError raised by ``function`` becomes the matching APIError."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    return wrapper


def translated_stream(call: Iterator[T]) -> Iterator[T]:
    """Iterates a response stream, turning a grpc.RpcError into the matching APIError. Closing the iterator
    before the end cancels the call."""
    try:
        yield from call
    except grpc.RpcError as e:
        raise from_rpc_error(e) from None
    finally:
        cancel = getattr(call, "cancel", None)
        if cancel is not None:
            cancel()  # nothing happens when the call has ended
