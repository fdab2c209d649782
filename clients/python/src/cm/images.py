"""Images: ``client.images.pull/list/get/remove``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Union

from .errors import translated, translated_stream
from .v1 import cm_pb2 as pb

if TYPE_CHECKING:
    from .client import Client

#: What ``images.pull`` yields: the oneof of PullImageResponse, in the order the server sends them.
PullProgress = Union[pb.PullResolved, pb.LayerProgress, pb.PullSummary, pb.PullDone]


class Image:
    """An image in the server's store. ``attrs`` is the ``cm.v1.Image`` message."""

    def __init__(self, client: "Client", attrs: pb.Image, config_json: Optional[str] = None):
        self.client = client
        self.attrs = attrs
        self._config_json = config_json

    @property
    def id(self) -> str:
        """The image id: the digest of its config, ``sha256:...``."""
        return self.attrs.id

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]

    @property
    def tags(self) -> List[str]:
        """Every reference that names this image."""
        return list(self.attrs.references)

    @property
    def config(self) -> Dict[str, Any]:
        """The image configuration (OCI config JSON: Env, Cmd, Entrypoint, WorkingDir, User ...)."""
        if self._config_json is None:
            self.reload()
        return json.loads(self._config_json or "{}")

    def reload(self) -> None:
        """Reads the image again from the server."""
        fresh = self.client.images.get(self.id)
        self.attrs, self._config_json = fresh.attrs, fresh._config_json

    def remove(self, force: bool = False) -> pb.RemoveImageResponse:
        """Removes every name of this image (and so its content)."""
        return self.client.images.remove(self.id, force=force)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<Image {self.short_id} {' '.join(self.tags)}>".replace(" >", ">")


class ImageCollection:
    """``client.images``."""

    def __init__(self, client: "Client"):
        self.client = client

    def pull(self, reference: str, username: Optional[str] = None, password: Optional[str] = None) -> Iterator[PullProgress]:
        """Pulls ``reference`` ([REGISTRY[:PORT]/]REPOSITORY[:TAG][@DIGEST]) and yields its progress:
        ``PullResolved`` first (manifest, platform, layers, total bytes), then ``LayerProgress`` per layer and
        ``PullSummary`` ticks, and ``PullDone`` (image id) last. A failure raises the matching APIError
        (NotFound, Unavailable, InvalidArgument, DataLoss ...). Closing the iterator early cancels the pull.

        >>> for progress in client.images.pull("127.0.0.1:5000/library/busybox"):
        ...     if isinstance(progress, cm.PullDone):
        ...         print(progress.image_id)
        """
        request = pb.PullImageRequest(reference=reference)
        if username is not None or password is not None:
            request.auth.CopyFrom(pb.RegistryAuth(username=username or "", password=password or ""))
        for response in translated_stream(self.client.api.PullImage(request)):
            yield getattr(response, response.WhichOneof("event"))

    def pull_image(self, reference: str, **kwargs: Any) -> Image:
        """Pulls ``reference`` to the end and returns the Image (``pull`` without the progress)."""
        done = None
        for progress in self.pull(reference, **kwargs):
            if isinstance(progress, pb.PullDone):
                done = progress
        assert done is not None, "a pull that succeeds ends with done"
        return self.get(done.image_id)

    @translated
    def list(self) -> List[Image]:
        """Every image in the store."""
        response = self.client.api.ListImages(pb.ListImagesRequest(), timeout=self.client.timeout)
        return [Image(self.client, image) for image in response.images]

    @translated
    def get(self, name: str) -> Image:
        """One image by reference, id or unique id prefix; NotFound otherwise."""
        response = self.client.api.InspectImage(pb.InspectImageRequest(image=name), timeout=self.client.timeout)
        return Image(self.client, response.image, response.config_json)

    @translated
    def remove(self, image: str, force: bool = False) -> pb.RemoveImageResponse:
        """Removes an image name (by id: every name); its content goes when no name is left. Returns what was
        untagged and deleted and the bytes reclaimed."""
        request = pb.RemoveImageRequest(image=image, force=force)
        return self.client.api.RemoveImage(request, timeout=self.client.timeout)
