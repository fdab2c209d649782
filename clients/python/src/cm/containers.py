"""Containers: ``client.containers.run/create/get/list`` and ``Container``."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import grpc

from . import _convert
from .errors import ContainerError, NotFound, translated, translated_stream
from .exec import ExecResult, Session
from .v1 import cm_pb2 as pb

if TYPE_CHECKING:
    from .client import Client

_STATUS = {
    pb.CONTAINER_STATE_CREATED: "created",
    pb.CONTAINER_STATE_RUNNING: "running",
    pb.CONTAINER_STATE_STOPPED: "exited",
}


class Container:
    """A container. ``attrs`` is the ``cm.v1.Container`` message as last read (``reload()`` reads it again)."""

    def __init__(self, client: "Client", attrs: pb.Container):
        self.client = client
        self.attrs = attrs

    @property
    def id(self) -> str:
        return self.attrs.id

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def name(self) -> str:
        return self.attrs.name

    @property
    def status(self) -> str:
        """"created", "running" or "exited" (as docker says it)."""
        return _STATUS.get(self.attrs.state, "unknown")

    @property
    def image(self) -> str:
        """The image reference the container was created from."""
        return self.attrs.image

    @property
    def labels(self) -> Dict[str, str]:
        return dict(self.attrs.spec.labels)

    @property
    def ip_address(self) -> str:
        return self.attrs.ip_address

    def _api(self):
        return self.client.api

    @translated
    def reload(self) -> None:
        """Reads the container's state again."""
        request = pb.InspectRequest(container=self.id)
        self.attrs = self._api().Inspect(request, timeout=self.client.timeout).container

    @translated
    def start(self) -> None:
        """Starts a created container (Conflict if it is running)."""
        self._api().Start(pb.StartRequest(container=self.id), timeout=self.client.timeout)

    @translated
    def stop(self, timeout: Optional[float] = None) -> None:
        """Sends the stop signal, waits ``timeout`` seconds (default 10), then SIGKILL."""
        request = pb.StopRequest(container=self.id, timeout=_convert.duration(timeout))
        self._api().Stop(request, timeout=None if timeout is None else timeout + self.client.timeout)

    @translated
    def kill(self, signal: Union[str, int] = "SIGKILL") -> None:
        """Sends a signal ("SIGTERM", "TERM" or 15) to the main process."""
        self._api().Kill(pb.KillRequest(container=self.id, signal=str(signal)), timeout=self.client.timeout)

    @translated
    def wait(self, timeout: Optional[float] = None) -> pb.ExitStatus:
        """Waits for the main process to exit (at once if it has) and returns its ``ExitStatus`` (exit_code,
        signal, oom_killed, finished_at, error). DeadlineExceeded after ``timeout`` seconds."""
        return self._api().Wait(pb.WaitRequest(container=self.id), timeout=timeout).status

    @translated
    def remove(self, force: bool = False) -> None:
        """Removes the container and everything it made; ``force`` kills a running one first (Conflict
        otherwise)."""
        self._api().Remove(pb.RemoveRequest(container=self.id, force=force), timeout=self.client.timeout)

    def logs(
        self,
        stream: bool = False,
        follow: bool = False,
        stdout: bool = True,
        stderr: bool = True,
        tail: Optional[int] = None,
        since: Union[datetime.datetime, float, None] = None,
        timestamps: bool = False,
    ) -> Union[bytes, Iterator[bytes]]:
        """The container's log. ``stream=False``: all of it as bytes. ``stream=True``: an iterator of lines,
        which with ``follow`` goes on until the container exits. ``tail``: only the last N lines; ``since``: a
        datetime or unix seconds; ``timestamps``: each line starts with its RFC 3339 time."""
        request = pb.LogsRequest(container=self.id, follow=follow and stream, tail=tail or 0)
        if stdout != stderr:
            request.stdout, request.stderr = stdout, stderr
        elif not stdout:
            return iter(()) if stream else b""
        if since is not None:
            request.since.CopyFrom(_convert.timestamp(since))

        def lines() -> Iterator[bytes]:
            for entry in translated_stream(self._api().Logs(request)):
                if timestamps:
                    yield entry.time.ToJsonString().encode() + b" " + entry.line
                else:
                    yield entry.line

        return lines() if stream else b"".join(lines())

    def stats(self, stream: bool = True, interval: Optional[float] = None) -> Union[Iterator[pb.StatsResponse], pb.StatsResponse]:
        """Resource usage as ``StatsResponse`` messages (cpu, memory, pids, block_io, networks): one sample
        with ``stream=False``, else a sample every ``interval`` seconds (default 1) until the container stops."""
        request = pb.StatsRequest(containers=[self.id], no_stream=not stream, interval=_convert.duration(interval))
        samples = translated_stream(self._api().Stats(request))
        return samples if stream else next(samples)

    def exec_run(
        self,
        cmd: _convert.Command,
        stdin: Union[bytes, str, None] = None,
        tty: bool = False,
        environment: Union[Mapping[str, str], Sequence[str], None] = None,
        workdir: Optional[str] = None,
        user: Optional[str] = None,
        demux: bool = False,
    ) -> ExecResult:
        """Runs ``cmd`` in the running container to its end: ``stdin`` (bytes or str) is written and closed;
        returns ``(exit_code, output)``, output being stdout and stderr together (or ``(stdout, stderr)`` with
        ``demux``). A command that cannot be run exits 127 (not found) or 126 (not executable)."""
        session = self.exec(
            cmd, stdin=stdin is not None, tty=tty, environment=environment, workdir=workdir, user=user
        )
        with session:
            if stdin is not None:
                session.write(stdin)
                session.close_stdin()
            if demux:
                output: Union[bytes, tuple] = session.output()
            else:
                output = b"".join(piece.data for piece in session)
            return ExecResult(session.exit_code, output)

    def exec(
        self,
        cmd: _convert.Command,
        stdin: bool = True,
        tty: bool = False,
        tty_size: Optional[tuple] = None,
        environment: Union[Mapping[str, str], Sequence[str], None] = None,
        workdir: Optional[str] = None,
        user: Optional[str] = None,
        detach_on_disconnect: bool = False,
    ) -> Session:
        """Starts ``cmd`` in the running container and returns the interactive ``Session`` (write,
        close_stdin, resize, signal, iterate the output, wait). ``tty_size`` is (rows, cols), applied before
        the command starts."""
        start = pb.ExecStart(
            container=self.id,
            argv=_convert.argv(cmd),
            env=_convert.env(environment or []),
            workdir=workdir or "",
            user=user or "",
            tty=tty,
            stdin=stdin,
            detach_on_disconnect=detach_on_disconnect,
        )
        if tty_size is not None:
            start.tty_size.CopyFrom(pb.TtySize(rows=tty_size[0], cols=tty_size[1]))
        return Session(self.client, self._api().Exec, pb.ExecRequest(start=start))

    def attach(self, stdin: bool = False, start: bool = False, tty_size: Optional[tuple] = None) -> Session:
        """Connects to the main process's stdio (a ``Session``); ``start`` starts a created container once its
        output is connected, so none is lost."""
        first = pb.AttachStart(container=self.id, start=start, stdin=stdin)
        if tty_size is not None:
            first.tty_size.CopyFrom(pb.TtySize(rows=tty_size[0], cols=tty_size[1]))
        return Session(self.client, self._api().Attach, pb.AttachRequest(start=first))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Container) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<Container {self.short_id} {self.name}>"


class ContainerCollection:
    """``client.containers``."""

    def __init__(self, client: "Client"):
        self.client = client

    def create(self, image: str, command: _convert.Command = None, **spec: Any) -> Container:
        """Creates (without starting) a container of ``image`` (pulled first if it is not in the store).
        ``command``: a list, or a string split as a shell would. Options, by docker-py's names or
        ContainerSpec's: name, entrypoint, environment, working_dir, user, hostname, tty, stdin_open,
        mem_limit ("256m"), cpus (0.5) or nano_cpus, pids_limit, network_mode ("bridge", "none", "host"),
        ports ({"80/tcp": 8080}), mounts or volumes (["/src:/dst:ro"]), auto_remove, labels, stop_signal."""
        response = self._with_image(self.client.api.Create, pb.CreateRequest, image, command, spec)
        return self.get(response.id)

    @translated
    def _with_image(self, method, request_type, image: str, command: _convert.Command, spec: Dict[str, Any]):
        """Calls Create or Run; when the image is not in the store, pulls it and calls again."""
        request = request_type(spec=_convert.spec(image, command, **spec))
        try:
            return method(request, timeout=self.client.timeout)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND or self._has_image(image):
                raise
        self.client.images.pull_image(image)
        return method(request, timeout=self.client.timeout)

    def _has_image(self, image: str) -> bool:
        try:
            self.client.images.get(image)
            return True
        except NotFound:
            return False

    def run(
        self,
        image: str,
        command: _convert.Command = None,
        detach: bool = False,
        remove: bool = False,
        stdout: bool = True,
        stderr: bool = False,
        **spec: Any,
    ) -> Union[bytes, Container]:
        """Runs a container, like ``docker run``. With ``detach=False`` it runs to its exit and its output is
        returned as bytes (stdout; ``stderr=True`` adds stderr), and a non-zero exit raises ContainerError
        (with the exit code and stderr); ``remove`` removes it afterwards. With ``detach=True`` the running
        Container is returned (``remove`` then means auto_remove). Options as for ``create``."""
        if detach:
            if remove:
                spec["auto_remove"] = True
            response = self._with_image(self.client.api.Run, pb.RunRequest, image, command, spec)
            return self.get(response.id)
        container = self.create(image, command, **spec)
        try:
            with container.attach(start=True) as session:
                out, err = bytearray(), bytearray()
                for piece in session:
                    if piece.stream == "stdout" and stdout or piece.stream == "stderr" and stderr:
                        out.extend(piece.data)
                    if piece.stream == "stderr":
                        err.extend(piece.data)
                status = session.exit_status
            assert status is not None
            if status.exit_code != 0:
                raise ContainerError(container, status, command, image, bytes(err))
            return bytes(out)
        finally:
            if remove:
                container.remove(force=True)

    @translated
    def get(self, container: str) -> Container:
        """One container by id, unique id prefix or name; NotFound otherwise."""
        response = self.client.api.Inspect(pb.InspectRequest(container=container), timeout=self.client.timeout)
        return Container(self.client, response.container)

    @translated
    def list(self, all: bool = False) -> List[Container]:
        """Running containers, or every container with ``all``."""
        response = self.client.api.List(pb.ListRequest(all=all), timeout=self.client.timeout)
        return [Container(self.client, c) for c in response.containers]
