"""The README's Python example: pull an image, run a command to its exit, exec into a running container.

    CM_HOST=unix:/run/cm.sock python3 clients/python/examples/quickstart.py 127.0.0.1:5000/library/busybox
"""
import sys

import cm

image = sys.argv[1]  # e.g. 127.0.0.1:5000/library/busybox
client = cm.Client.from_env()  # $CM_HOST, default unix:/run/cm.sock; or cm.Client("unix:/run/cm.sock")
for progress in client.images.pull(image):  # PullResolved, LayerProgress and PullSummary, PullDone
    if isinstance(progress, cm.PullDone):
        print("pulled", progress.image_id)
print(client.containers.run(image, ["echo", "hello from python"], remove=True))  # ContainerError if it fails
box = client.containers.run(image, ["sleep", "60"], detach=True)
print(box.exec_run(["sort", "-r"], stdin=b"a\nb\nc\n"))  # ExecResult(exit_code=0, output=b'c\nb\na\n')
box.remove(force=True)
