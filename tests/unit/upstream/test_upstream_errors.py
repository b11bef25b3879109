"""What clients see when the upstream fails or misbehaves, and that nothing bad is stored."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.fakes.registry import FakeRegistry
from tests.support.images import OCI_MANIFEST, make_image, make_layer, sha256
from tests.unit.conftest import UPSTREAM, Edge

REPO = "team/app"
MANIFEST_LIMIT = 4 * 1024 * 1024


async def error_of(resp: aiohttp.ClientResponse) -> str:
    assert resp.content_type == "application/json"
    return str((await resp.json())["errors"][0]["code"])


def huge_manifest(size: int) -> bytes:
    config = make_layer(100, 1)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                      "digest": config.digest, "size": len(config.data)},
           "layers": [], "annotations": {"pad": ""}}
    overhead = len(json.dumps(doc).encode())
    doc["annotations"] = {"pad": "x" * (size - overhead)}
    body = json.dumps(doc).encode()
    assert len(body) == size
    return body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("by_digest", [False, True], ids=["by-tag", "by-digest"])
async def test_oversized_manifest_is_refused_and_not_stored(
        fake: FakeRegistry, edge: Edge, chunked: bool, by_digest: bool) -> None:
    body = huge_manifest(MANIFEST_LIMIT + 1)
    digest = fake.add_manifest(REPO, body, OCI_MANIFEST, tags=["huge"])
    fake.chunked_manifests = chunked

    async with edge.client.get(f"/v2/{REPO}/manifests/{digest if by_digest else 'huge'}") as resp:
        assert resp.status == 502
        assert await error_of(resp) == "MANIFEST_INVALID"

    assert len(fake.api_requests("GET")) == 1
    assert edge.blob_files() == []
    assert edge.tmp_files() == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("size", [1024 * 1024, MANIFEST_LIMIT], ids=["1MiB", "limit"])
async def test_large_manifest_within_the_limit_is_accepted(
        fake: FakeRegistry, edge: Edge, chunked: bool, size: int) -> None:
    """The counterpart: up to exactly 4 MiB is fine, however the body arrives, and is stored
    byte-exact (a body read in one `read(n)` call would be cut at the first network chunk)."""
    body = huge_manifest(size)
    digest = fake.add_manifest(REPO, body, OCI_MANIFEST, tags=["big"])
    fake.chunked_manifests = chunked

    async with edge.client.get(f"/v2/{REPO}/manifests/big") as resp:
        assert resp.status == 200
        assert resp.headers["Docker-Content-Digest"] == digest
        assert await resp.read() == body
    assert edge.blob_path(digest).read_bytes() == body


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_upstream_error_for_uncached_blob_is_unavailable(
        fake: FakeRegistry, edge: Edge, status: int) -> None:
    blob = make_layer(10_000, 2)
    digest = fake.add_blob(blob)
    fake.fail(status, path_contains="/blobs/")

    async with edge.client.get(f"/v2/{REPO}/blobs/{digest}") as resp:
        assert resp.status == 503
        assert await error_of(resp) == "UNAVAILABLE"
    assert [r.status for r in fake.requests] == [status]
    assert edge.blob_files() == []
    assert edge.tmp_files() == []


async def test_upstream_error_is_not_cached(fake: FakeRegistry, edge: Edge) -> None:
    blob = make_layer(10_000, 3)
    digest = fake.add_blob(blob)
    fake.fail(503, path_contains="/blobs/", times=1)

    async with edge.client.get(f"/v2/{REPO}/blobs/{digest}") as resp:
        assert resp.status == 503
    async with edge.client.get(f"/v2/{REPO}/blobs/{digest}") as resp:
        assert resp.status == 200
        assert await resp.read() == blob.data
    assert edge.blob_path(digest).exists()


async def test_upstream_503_for_uncached_manifest(fake: FakeRegistry, edge: Edge) -> None:
    fake.add_image(REPO, make_image([make_layer(1000, 4)]))
    fake.fail(503)

    for reference in ("latest", sha256(b"not cached")):
        async with edge.client.get(f"/v2/{REPO}/manifests/{reference}") as resp:
            assert resp.status == 503
            assert await error_of(resp) == "UNAVAILABLE"
    assert edge.blob_files() == []


async def test_upstream_down_entirely(fake: FakeRegistry, edge: Edge) -> None:
    blob = make_layer(1000, 5)
    digest = fake.add_blob(blob)
    await fake.stop()  # connections are refused from now on

    async with edge.client.get(f"/v2/{REPO}/blobs/{digest}") as resp:
        assert resp.status == 503
        assert await error_of(resp) == "UNAVAILABLE"
    async with edge.client.get(f"/v2/{REPO}/manifests/latest") as resp:
        assert resp.status == 503
        assert await error_of(resp) == "UNAVAILABLE"
    assert edge.blob_files() == []
    assert edge.tmp_files() == []


async def test_cached_content_survives_upstream_outage(fake: FakeRegistry, edge: Edge) -> None:
    img = make_image([make_layer(5000, 6)])
    fake.add_image(REPO, img)
    async with edge.client.get(f"/v2/{REPO}/manifests/latest") as resp:
        assert await resp.read() == img.manifest
    for blob in img.blobs:
        async with edge.client.get(f"/v2/{REPO}/blobs/{blob.digest}") as resp:
            assert await resp.read() == blob.data
    fake.down = True

    async with edge.client.get(f"/v2/{REPO}/manifests/latest") as resp:  # stale-if-error
        assert resp.status == 200
        assert await resp.read() == img.manifest
    async with edge.client.get(f"/v2/{REPO}/manifests/{img.digest}") as resp:
        assert resp.status == 200
        assert await resp.read() == img.manifest
    for blob in img.blobs:
        async with edge.client.get(f"/v2/{REPO}/blobs/{blob.digest}") as resp:
            assert await resp.read() == blob.data
    assert edge.sample("edgecache_stale_serves_total", upstream=UPSTREAM) == 1


async def test_upstream_not_found(fake: FakeRegistry, edge: Edge) -> None:
    fake.add_image(REPO, make_image([make_layer(1000, 7)]))

    async with edge.client.get(f"/v2/{REPO}/blobs/{sha256(b'missing')}") as resp:
        assert resp.status == 404
        assert await error_of(resp) == "BLOB_UNKNOWN"
    async with edge.client.get(f"/v2/{REPO}/manifests/nope") as resp:
        assert resp.status == 404
        assert await error_of(resp) == "MANIFEST_UNKNOWN"
    async with edge.client.get("/v2/other/tags/list") as resp:
        assert resp.status == 404
        assert await error_of(resp) == "NAME_UNKNOWN"
    assert edge.blob_files() == []
    assert edge.tmp_files() == []


async def test_manifest_with_wrong_digest_is_refused(fake: FakeRegistry, edge: Edge) -> None:
    """A manifest fetched by digest whose bytes hash differently is never stored."""
    img = make_image([make_layer(1000, 8)])
    other = make_image([make_layer(1000, 9)])
    fake.manifests[(REPO, img.digest)] = (other.manifest, other.media_type)

    async with edge.client.get(f"/v2/{REPO}/manifests/{img.digest}") as resp:
        assert resp.status == 502
        assert await error_of(resp) == "DIGEST_INVALID"
    assert edge.sample("edgecache_digest_mismatches_total", upstream=UPSTREAM) == 1
    assert edge.blob_files() == []
