"""A stock grpcio channel with no options works on the unix socket (grpcio sends the socket path as the
HTTP/2 :authority; cm-server accepts it there): unary, server-streaming and bidirectional calls, for both
unix:/path and unix:///path targets, with nothing but the generated stubs."""

import grpc
import pytest

from cm.v1 import cm_pb2 as pb
from cm.v1 import cm_pb2_grpc as rpc


@pytest.mark.parametrize("form", ["unix:{}", "unix://{}"])
def test_a_default_grpcio_channel_makes_unary_and_streaming_calls(host, image, form):
    assert host.startswith("unix:/")
    path = host[len("unix:"):]
    with grpc.insecure_channel(form.format(path)) as channel:
        stub = rpc.ContainerServiceStub(channel)
        stub.ListImages(pb.ListImagesRequest(), timeout=10)
        events = list(stub.PullImage(pb.PullImageRequest(reference=image), timeout=60))
        assert events[-1].HasField("done")
        spec = pb.ContainerSpec(image=image, command=["sleep", "600"], network=pb.NETWORK_MODE_NONE)
        container = stub.Run(pb.RunRequest(spec=spec), timeout=10).id
        try:
            frames = [
                pb.ExecRequest(start=pb.ExecStart(container=container, argv=["cat"], stdin=True)),
                pb.ExecRequest(stdin=pb.StdinData(data=b"bidi\n")),
                pb.ExecRequest(close_stdin=True),
            ]
            responses = list(stub.Exec(iter(frames), timeout=10))
            assert b"".join(r.stdout for r in responses) == b"bidi\n"
            assert responses[-1].exit.exit_code == 0
        finally:
            stub.Remove(pb.RemoveRequest(container=container, force=True), timeout=10)
