"""HEAD of uncached content asks the upstream with HEAD and downloads nothing."""

from __future__ import annotations

from tests.fakes.registry import FakeRegistry
from tests.support.images import make_image, make_layer
from tests.unit.conftest import Edge

REPO = "team/app"


def assert_nothing_downloaded(fake: FakeRegistry, edge: Edge) -> None:
    assert {r.method for r in fake.requests} == {"HEAD"}
    assert edge.blob_files() == []
    assert edge.tmp_files() == []


async def test_head_uncached_blob(fake: FakeRegistry, edge: Edge) -> None:
    blob = make_layer(70_000, 1)
    digest = fake.add_blob(blob)

    async with edge.client.head(f"/v2/{REPO}/blobs/{digest}") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(blob.data))
        assert resp.headers["Docker-Content-Digest"] == digest
        assert await resp.read() == b""

    assert [(r.method, r.path) for r in fake.requests] == [("HEAD", f"/v2/{REPO}/blobs/{digest}")]
    assert_nothing_downloaded(fake, edge)


async def test_head_uncached_manifest_by_tag_and_digest(fake: FakeRegistry, edge: Edge) -> None:
    img = make_image([make_layer(1000, 2)])
    fake.add_image(REPO, img)

    for reference in ("latest", img.digest):
        async with edge.client.head(f"/v2/{REPO}/manifests/{reference}") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(len(img.manifest))
            assert resp.headers["Docker-Content-Digest"] == img.digest
            assert resp.headers["Content-Type"] == img.media_type

    assert [(r.method, r.path) for r in fake.requests] == [
        ("HEAD", f"/v2/{REPO}/manifests/latest"), ("HEAD", f"/v2/{REPO}/manifests/{img.digest}")]
    assert_nothing_downloaded(fake, edge)


async def test_head_unknown_blob_is_404(fake: FakeRegistry, edge: Edge) -> None:
    digest = make_layer(100, 3).digest  # never added to the fake

    async with edge.client.head(f"/v2/{REPO}/blobs/{digest}") as resp:
        assert resp.status == 404
    async with edge.client.head(f"/v2/{REPO}/manifests/missing") as resp:
        assert resp.status == 404
    assert_nothing_downloaded(fake, edge)


async def test_head_of_cached_content_is_local(fake: FakeRegistry, edge: Edge) -> None:
    img = make_image([make_layer(5000, 4)])
    fake.add_image(REPO, img)
    layer = img.layers[0]
    async with edge.client.get(f"/v2/{REPO}/blobs/{layer.digest}") as resp:
        assert await resp.read() == layer.data
    async with edge.client.get(f"/v2/{REPO}/manifests/{img.digest}") as resp:
        assert await resp.read() == img.manifest
    seen = len(fake.requests)

    async with edge.client.head(f"/v2/{REPO}/blobs/{layer.digest}") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(layer.data))
    async with edge.client.head(f"/v2/{REPO}/manifests/{img.digest}") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(img.manifest))
    assert len(fake.requests) == seen
