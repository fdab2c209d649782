"""Exec and Attach sessions: the bidirectional streams, driven from Python."""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Iterator, NamedTuple, Optional, Tuple, Union

import grpc

from .errors import APIError, from_rpc_error
from .v1 import cm_pb2 as pb

if TYPE_CHECKING:
    from .client import Client

_END = object()


class ExecResult(NamedTuple):
    """What ``exec_run`` returns: the exit code and the output (bytes, or (stdout, stderr) with demux)."""

    exit_code: int
    output: Union[bytes, Tuple[bytes, bytes]]


class Output(NamedTuple):
    """One piece of a session's output: ``stream`` is "stdout" or "stderr"."""

    stream: str
    data: bytes


class Session:
    """An open Exec (or Attach) stream. The process is running when the constructor returns (``pid``,
    ``exec_id``). Feed it with ``write``/``close_stdin``/``resize``/``signal``; read its output by iterating
    (``Output`` pieces) or all at once with ``output()``; ``wait()`` returns the ``ExitStatus``. ``close()``
    (or leaving a ``with`` block) cancels the stream, which kills the process unless the session was opened
    with ``detach_on_disconnect``."""

    def __init__(self, client: "Client", method, first: Union[pb.ExecRequest, pb.AttachRequest]):
        self._request_type = type(first)
        self._requests: "queue.Queue[object]" = queue.Queue()
        self._requests.put(first)
        self._call = method(iter(self._requests.get, _END))
        self._responses = iter(self._call)
        self._lock = threading.Lock()
        self.exit_status: Optional[pb.ExitStatus] = None
        started = self._next()
        if started is None or started.WhichOneof("frame") != "started":
            # A command that cannot be executed answers with its exit alone (127, 126).
            self.exec_id, self.pid = "", 0
            self._pending = started
        else:
            self.exec_id, self.pid = started.started.exec_id, started.started.pid
            self._pending = None

    def _next(self):
        try:
            return next(self._responses)
        except StopIteration:
            return None
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def _send(self, **frame) -> None:
        self._requests.put(self._request_type(**frame))

    def write(self, data: Union[bytes, str]) -> None:
        """Sends bytes to the process's stdin (the session must have been opened with stdin)."""
        if isinstance(data, str):
            data = data.encode()
        for at in range(0, len(data), 1 << 20):
            self._send(stdin=pb.StdinData(data=data[at : at + (1 << 20)]))

    def close_stdin(self) -> None:
        """Closes the process's stdin: it reads EOF."""
        self._send(close_stdin=True)

    def resize(self, rows: int, cols: int) -> None:
        """Sets the terminal size (tty sessions)."""
        self._send(resize=pb.TtySize(rows=rows, cols=cols))

    def signal(self, signal: Union[str, int]) -> None:
        """Sends a signal ("SIGTERM", "TERM" or 15) to the process."""
        self._send(signal=str(signal))

    def __iter__(self) -> Iterator[Output]:
        while self.exit_status is None:
            response = self._pending or self._next()
            self._pending = None
            if response is None:
                raise APIError("the stream ended without an exit frame", grpc.StatusCode.INTERNAL)
            kind = response.WhichOneof("frame")
            if kind in ("stdout", "stderr"):
                yield Output(kind, getattr(response, kind))
            elif kind == "exit":
                self.exit_status = response.exit
                self._requests.put(_END)

    def output(self) -> Tuple[bytes, bytes]:
        """Reads to the end: (stdout, stderr)."""
        out, err = bytearray(), bytearray()
        for piece in self:
            (out if piece.stream == "stdout" else err).extend(piece.data)
        return bytes(out), bytes(err)

    def wait(self) -> pb.ExitStatus:
        """Reads (and drops) the rest of the output; returns the exit status."""
        for _ in self:
            pass
        assert self.exit_status is not None
        return self.exit_status

    @property
    def exit_code(self) -> Optional[int]:
        """The exit code once the process has exited (``wait()`` or the output read to its end), else None."""
        return None if self.exit_status is None else self.exit_status.exit_code

    def close(self) -> None:
        """Cancels the stream (the process is killed unless detached); a no-op once it has exited."""
        self._requests.put(_END)
        self._call.cancel()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

