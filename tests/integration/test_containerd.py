"""containerd pulls docker.io images through edgecache, configured with a hosts.toml mirror.

A private containerd (own root/state/socket, see tests/support/containerd.py) is told by
<hosts>/docker.io/hosts.toml to use edgecache (plain http on 127.0.0.1) for pull and resolve.
containerd then adds `?ns=docker.io` to every request, which edgecache routes to the upstream
named "docker.io": a real docker-registry on loopback seeded with generated images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.containerd import Containerd, write_hosts
from tests.support.edgecache import EdgecacheProcess
from tests.support.images import Image, make_image, make_index, make_layer
from tests.support.registry import DockerRegistry

pytestmark = pytest.mark.integration

NS = "?ns=docker.io"


@dataclass(frozen=True)
class Access:
    method: str
    target: str
    status: int


def edge_requests(edge: EdgecacheProcess) -> list[Access]:
    """Requests edgecache served, from its access log (targets keep their query string)."""
    return [Access(r.method, r.path, r.status) for r in edge.requests()]


def upstream_blob_gets(registry: DockerRegistry) -> list[str]:
    return [r.path for r in registry.requests() if r.method == "GET" and "/blobs/" in r.path]


@pytest.fixture
def edgecache(tmp_path: Path, docker_registry: DockerRegistry) -> Iterator[EdgecacheProcess]:
    edge = EdgecacheProcess(tmp_path / "edgecache", {"docker.io": docker_registry.url})
    try:
        yield edge
    finally:
        edge.close()


@pytest.fixture
def hosts_dir(tmp_path: Path, edgecache: EdgecacheProcess) -> Path:
    hosts = tmp_path / "hosts"
    write_hosts(hosts, "docker.io", edgecache.url)
    return hosts


def assert_content_identical(containerd: Containerd, image: Image) -> None:
    assert containerd.content_get(image.digest) == image.manifest
    for blob in image.blobs:
        assert containerd.content_get(blob.digest) == blob.data, blob.digest


def assert_blobs_via_edgecache(requests: list[Access], repo: str, image: Image) -> None:
    for blob in image.blobs:
        target = f"/v2/{repo}/blobs/{blob.digest}{NS}"
        assert Access("GET", target, 200) in requests, (target, requests)


@pytest.mark.parametrize("docker_types", [False, True], ids=["oci", "docker-schema2"])
def test_containerd_pulls_image_through_edgecache(
    docker_types: bool, containerd: Containerd, edgecache: EdgecacheProcess,
    docker_registry: DockerRegistry, hosts_dir: Path,
) -> None:
    image = make_image([make_layer(3 << 20, 11), make_layer(1 << 20, 12)], docker=docker_types)
    docker_registry.push_image("library/alpine", "3.20", image)
    ref = "docker.io/library/alpine:3.20"

    containerd.pull(ref, hosts_dir, "--platform", "linux/amd64")

    assert containerd.image_digest(ref) == image.digest
    assert_content_identical(containerd, image)
    # Unpacked: the first layer's chain ID is its (uncompressed) digest.
    assert image.layers[0].digest in containerd.snapshots()

    requests = edge_requests(edgecache)
    registry_requests = [r for r in requests if r.target != "/v2/"]
    assert registry_requests, edgecache.log()
    # Every registry request containerd made went to edgecache, tagged with the registry name.
    assert all(r.target.endswith(NS) for r in registry_requests), registry_requests
    assert any(r.target.startswith("/v2/library/alpine/manifests/") and r.status == 200
               for r in registry_requests), registry_requests
    assert_blobs_via_edgecache(registry_requests, "library/alpine", image)
    # The upstream served each blob once, to edgecache.
    assert sorted(upstream_blob_gets(docker_registry)) == sorted(
        f"/v2/library/alpine/blobs/{blob.digest}" for blob in image.blobs)

    # Forget everything containerd has (image, content, snapshots) and pull again.
    containerd.remove_images(ref)
    assert not containerd.content_digests() & {image.digest, *(b.digest for b in image.blobs)}
    edge_before, upstream_before = len(requests), len(upstream_blob_gets(docker_registry))

    containerd.pull(ref, hosts_dir, "--platform", "linux/amd64")

    assert containerd.image_digest(ref) == image.digest
    assert_content_identical(containerd, image)
    again = edge_requests(edgecache)[edge_before:]
    assert_blobs_via_edgecache(again, "library/alpine", image)
    assert upstream_blob_gets(docker_registry)[upstream_before:] == []

    # containerd keeps `docker.io/alpine` as written; edgecache adds `library/` for docker.io.
    short_ref = "docker.io/alpine:3.20"
    containerd.pull(short_ref, hosts_dir, "--platform", "linux/amd64")
    assert containerd.image_digest(short_ref) == image.digest
    assert Access("HEAD", f"/v2/alpine/manifests/3.20{NS}", 200) in edge_requests(edgecache)
    assert upstream_blob_gets(docker_registry)[upstream_before:] == []


def test_containerd_pulls_multi_arch_index_through_edgecache(
    containerd: Containerd, edgecache: EdgecacheProcess, docker_registry: DockerRegistry,
    hosts_dir: Path,
) -> None:
    shared = make_layer(1 << 20, 21)
    amd64 = make_image([shared, make_layer(2 << 20, 22)], "amd64")
    arm64 = make_image([shared, make_layer(2 << 20, 23)], "arm64")
    index = make_index([amd64, arm64])
    docker_registry.push_index("library/multi", "1", index)
    ref = "docker.io/library/multi:1"

    containerd.pull(ref, hosts_dir, "--all-platforms")

    assert containerd.image_digest(ref) == index.digest
    assert containerd.content_get(index.digest) == index.manifest
    for image in index.images:
        assert_content_identical(containerd, image)
    snapshots = containerd.snapshots()
    assert shared.digest in snapshots  # both platforms unpacked on the shared base layer

    requests = [r for r in edge_requests(edgecache) if r.target != "/v2/"]
    assert all(r.target.endswith(NS) for r in requests), requests
    for image in index.images:
        assert_blobs_via_edgecache(requests, "library/multi", image)
    all_blobs = {blob.digest for image in index.images for blob in image.blobs}
    gets = upstream_blob_gets(docker_registry)
    assert sorted(gets) == sorted(f"/v2/library/multi/blobs/{d}" for d in all_blobs)

    # Fresh state, then a single-platform pull of the same index: served from edgecache's store.
    containerd.remove_images(ref)
    assert not containerd.content_digests() & (all_blobs | {index.digest})
    edge_before, upstream_before = len(edge_requests(edgecache)), len(gets)

    containerd.pull(ref, hosts_dir, "--platform", "linux/arm64")

    assert containerd.image_digest(ref) == index.digest
    assert containerd.content_get(index.digest) == index.manifest
    assert_content_identical(containerd, arm64)
    assert amd64.layers[1].digest not in containerd.content_digests()
    assert_blobs_via_edgecache(edge_requests(edgecache)[edge_before:], "library/multi", arm64)
    assert upstream_blob_gets(docker_registry)[upstream_before:] == []
