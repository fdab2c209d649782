"""Fixtures: a client of a real cm-server ($CM_HOST) and an image in a registry it can pull from
($CM_TEST_IMAGE). tests/tests/clients.rs runs these with its own server and registry."""

import os
import uuid

import pytest

import cm


@pytest.fixture(scope="session")
def host() -> str:
    host = os.environ.get("CM_HOST")
    if not host:
        pytest.skip("CM_HOST is not set: these tests need a running cm-server (see tests/tests/clients.rs)")
    return host


@pytest.fixture(scope="session")
def image(host) -> str:
    image = os.environ.get("CM_TEST_IMAGE")
    if not image:
        pytest.skip("CM_TEST_IMAGE is not set: a busybox image reference the server can pull")
    return image


@pytest.fixture(scope="session")
def client(host, image) -> cm.Client:
    with cm.Client(host) as client:
        client.images.pull_image(image)
        yield client


@pytest.fixture
def name() -> str:
    """A container name of this test."""
    return f"py-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sleeper(client, image, name):
    """A running container (sleep), removed afterwards."""
    container = client.containers.run(image, ["sleep", "600"], detach=True, name=name)
    yield container
    container.remove(force=True)
