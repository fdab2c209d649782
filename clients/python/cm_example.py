#!/usr/bin/env python3
"""Drive cm-server from Python with stubs generated from proto/cm/v1/cm.proto (grpcio).

    python3 -m pip install grpcio grpcio-tools
    python3 -m grpc_tools.protoc -I proto --python_out=clients/python/gen \
        --grpc_python_out=clients/python/gen proto/cm/v1/cm.proto
    PYTHONPATH=clients/python/gen python3 clients/python/cm_example.py \
        --host unix:/run/cm.sock --image 127.0.0.1:5000/library/busybox

It pulls the image (printing the streamed progress summary), runs a container to its exit and reads its
logs, starts a long-running one, streams an Exec into it with stdin (the bidirectional stream: a start frame,
stdin frames, close-stdin; then started, output and exactly one exit frame), takes a one-shot Stats sample,
and removes what it made. Each step prints one line; the end-to-end tests check them.
"""

import argparse
import sys

import grpc

from cm.v1 import cm_pb2 as pb
from cm.v1 import cm_pb2_grpc as rpc


def pull(stub, image):
    done = None
    for event in stub.PullImage(pb.PullImageRequest(reference=image)):
        if event.HasField("resolved"):
            print(f"pull: resolved {event.resolved.manifest_digest}")
        elif event.HasField("done"):
            done = event.done
    print(f"pull: done {done.image_id}")


def run_to_exit(stub, image):
    spec = pb.ContainerSpec(image=image, command=["sh", "-c", "echo hello from python; exit 3"])
    container = stub.Run(pb.RunRequest(spec=spec)).id
    status = stub.Wait(pb.WaitRequest(container=container)).status
    lines = [entry.line.decode() for entry in stub.Logs(pb.LogsRequest(container=container))]
    print(f"run: exit {status.exit_code}, logs {''.join(lines)!r}")
    stub.Remove(pb.RemoveRequest(container=container))


def exec_with_stdin(stub, container):
    def frames():
        yield pb.ExecRequest(start=pb.ExecStart(container=container, argv=["sort", "-r"], stdin=True))
        yield pb.ExecRequest(stdin=pb.StdinData(data=b"a\nb\nc\n"))
        yield pb.ExecRequest(close_stdin=True)

    out, code, started = b"", None, None
    for response in stub.Exec(frames()):
        kind = response.WhichOneof("frame")
        if kind == "started":
            started = response.started.pid
        elif kind == "stdout":
            out += response.stdout
        elif kind == "exit":
            code = response.exit.exit_code
    print(f"exec: started {started is not None}, stdout {out.decode()!r}, exit {code}")


def stats(stub, container):
    request = pb.StatsRequest(containers=[container], no_stream=True)
    sample = next(iter(stub.Stats(request)))
    interfaces = ",".join(n.interface for n in sample.networks)
    print(f"stats: pids {sample.pids.current}, memory > 0 {sample.memory.usage_bytes > 0}, networks {interfaces}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="unix:/run/cm.sock", help="cm-server address (gRPC target syntax)")
    parser.add_argument("--image", required=True, help="image reference to pull and run")
    args = parser.parse_args()
    # For unix: targets grpcio sends the socket path as :authority, which is not a valid authority; HTTP/2
    # servers such as cm-server's (hyper) reset such streams. Any host name will do.
    with grpc.insecure_channel(args.host, options=[("grpc.default_authority", "localhost")]) as channel:
        stub = rpc.ContainerServiceStub(channel)
        pull(stub, args.image)
        run_to_exit(stub, args.image)
        spec = pb.ContainerSpec(image=args.image, command=["sleep", "60"])
        container = stub.Run(pb.RunRequest(spec=spec)).id
        try:
            exec_with_stdin(stub, container)
            stats(stub, container)
        finally:
            stub.Remove(pb.RemoveRequest(container=container, force=True))
        try:
            stub.Inspect(pb.InspectRequest(container=container))
        except grpc.RpcError as e:
            print(f"removed: {e.code().name}")


if __name__ == "__main__":
    sys.exit(main())
