"""Malformed or unsupported requests: the right status and OCI error code, and no side effects
(no upstream request, nothing written under storage)."""

from __future__ import annotations

import json

import pytest

from tests.fakes.registry import FakeRegistry
from tests.support.images import make_image, make_layer
from tests.unit.conftest import Edge, MakeEdge, RawResponse

SHA = "sha256:" + "ab" * 32
MD5 = "md5:d41d8cd98f00b204e9800998ecf8427e"

# (method, request target as sent on the wire, status, OCI error code)
BAD_REQUESTS = [
    ("GET", "/v2/Team/app/manifests/latest", 400, "NAME_INVALID"),
    ("GET", "/v2/team/../app/manifests/latest", 400, "NAME_INVALID"),
    ("GET", "/v2/../../etc/passwd", 400, "NAME_INVALID"),
    ("GET", "/v2/team/./app/manifests/latest", 400, "NAME_INVALID"),
    ("GET", "/v2/a//b/manifests/latest", 400, "NAME_INVALID"),
    ("GET", "/v2/a/b/manifests/latest/", 404, "UNSUPPORTED"),  # no such endpoint
    ("GET", "/v2/team%2Fapp/manifests/latest", 400, "NAME_INVALID"),
    ("GET", "/v2/team%2fapp/blobs/" + SHA, 400, "NAME_INVALID"),
    ("GET", "/v2/team%00app/manifests/latest", 400, "NAME_INVALID"),
    ("GET", "/v2/app/manifests/lat%00est", 400, "NAME_INVALID"),
    ("GET", "/v2/" + "a" * 256 + "/manifests/latest", 400, "NAME_INVALID"),
    ("GET", "/v2/app/tags/all", 404, "UNSUPPORTED"),
    ("GET", "/v2/unknown.example/_catalog", 404, "NAME_UNKNOWN"),  # a catalog of no upstream
    ("GET", "/v2/_catalog?ns=unknown.example&n=10", 404, "NAME_UNKNOWN"),
    ("GET", "/v2/app/other/thing", 404, "UNSUPPORTED"),
    ("GET", "/v2/app/blobs/uploads/some-uuid", 404, "BLOB_UPLOAD_UNKNOWN"),
    ("HEAD", "/v2/app/blobs/uploads/", 404, None),
    ("GET", "/v2/app/referrers/sha256:xyz", 400, "DIGEST_INVALID"),
    ("GET", "/v2/app/referrers/latest", 400, "DIGEST_INVALID"),
    ("GET", "/v2/App/referrers/" + SHA, 400, "NAME_INVALID"),
    ("GET", "/v2/app/blobs/sha256:xyz", 400, "DIGEST_INVALID"),
    ("GET", "/v2/app/blobs/sha256:" + "ab" * 31, 400, "DIGEST_INVALID"),
    ("GET", "/v2/app/blobs/sha256:" + "AB" * 32, 400, "DIGEST_INVALID"),
    ("GET", "/v2/app/blobs/" + MD5, 400, "DIGEST_INVALID"),
    ("HEAD", "/v2/app/blobs/" + MD5, 400, None),
    ("GET", "/v2/app/blobs/latest", 400, "DIGEST_INVALID"),
    ("GET", "/v2/app/manifests/sha256:xyz", 400, "DIGEST_INVALID"),
    ("GET", "/v2/app/manifests/" + MD5, 400, "DIGEST_INVALID"),
    ("GET", "/v2/app/manifests/sha256:totallywrong", 400, "DIGEST_INVALID"),
    # neither a tag nor a digest: a manifest that does not exist, without asking the upstream
    ("GET", "/v2/app/manifests/-latest", 404, "MANIFEST_UNKNOWN"),
    ("GET", "/v2/app/manifests/.hidden", 404, "MANIFEST_UNKNOWN"),
    ("GET", "/v2/app/manifests/.INVALID_MANIFEST_NAME", 404, "MANIFEST_UNKNOWN"),
    ("HEAD", "/v2/app/manifests/.INVALID_MANIFEST_NAME", 404, None),
    ("GET", "/v2/app/manifests/" + "t" * 129, 404, "MANIFEST_UNKNOWN"),
    ("GET", "/v2/app/manifests/a+b", 404, "MANIFEST_UNKNOWN"),
    ("POST", "/v2/app/blobs/uploads/", 405, "UNSUPPORTED"),
    ("PUT", "/v2/app/manifests/latest", 405, "UNSUPPORTED"),
    ("DELETE", "/v2/app/manifests/latest", 405, "UNSUPPORTED"),
    ("DELETE", "/v2/app/blobs/" + SHA, 405, "UNSUPPORTED"),
    ("PATCH", "/v2/app/blobs/uploads/some-uuid", 405, "UNSUPPORTED"),
    ("POST", "/v2/", 405, "UNSUPPORTED"),
    ("GET", "/v2/app/manifests/latest?ns=unknown.example", 404, "NAME_UNKNOWN"),
    ("GET", "/v2/unknown.example/app/manifests/latest", 404, "NAME_UNKNOWN"),
]


def error_code(resp: RawResponse) -> str:
    doc = json.loads(resp.body)
    assert set(doc) == {"errors"} and len(doc["errors"]) == 1
    return str(doc["errors"][0]["code"])


@pytest.mark.parametrize(("method", "target", "status", "code"), BAD_REQUESTS,
                         ids=[f"{m} {t[:60]}" for m, t, _, _ in BAD_REQUESTS])
async def test_bad_request_is_refused_without_side_effects(
        fake: FakeRegistry, edge: Edge, method: str, target: str, status: int,
        code: str | None) -> None:
    fake.add_image("app", make_image([make_layer(1000, 1)]))
    body = b"{}" if method in ("PUT", "POST", "PATCH") else b""

    resp = await edge.raw(method, target, body=body)

    assert resp.status == status
    assert resp.headers.get("docker-distribution-api-version") == "registry/2.0"
    if code is not None:  # a HEAD answer has no body
        assert resp.headers["content-type"].startswith("application/json")
        assert error_code(resp) == code
    if status == 405:
        assert resp.headers.get("allow") == "GET, HEAD"
    assert fake.requests == []
    assert fake.token_requests == []
    assert edge.blob_files() == []
    assert edge.tmp_files() == []


# ---- Range --------------------------------------------------------------------------------------

BAD_RANGES = [
    "bytes=abc",
    "items=0-10",
    "bytes 0-10",
    "bytes=",
    "bytes=-",
    "bytes=0-10,20-30",
    "bytes=0-1, 5-6",
    "bytes=10-5",
    "bytes=--5",
    "bytes=1.5-2",
    "bytes=-0",
]


async def warm_blob(fake: FakeRegistry, edge: Edge, size: int) -> tuple[str, bytes, int]:
    """Cache a blob through edgecache; returns its digest, bytes and the upstream request count."""
    blob = make_layer(size, seed=7)
    digest = fake.add_blob(blob)
    async with edge.client.get(f"/v2/app/blobs/{digest}") as resp:
        assert await resp.read() == blob.data
    return digest, blob.data, len(fake.requests)


@pytest.mark.parametrize("spec", BAD_RANGES)
async def test_malformed_or_multipart_range(fake: FakeRegistry, edge: Edge, spec: str) -> None:
    digest, data, upstream_seen = await warm_blob(fake, edge, 5000)
    stored = edge.blob_files()

    async with edge.client.get(f"/v2/app/blobs/{digest}", headers={"Range": spec}) as resp:
        assert resp.status == 416
        assert (await resp.json())["errors"][0]["code"] == "SIZE_INVALID"
        assert resp.headers.get("Content-Range") == f"bytes */{len(data)}"

    assert len(fake.requests) == upstream_seen
    assert edge.blob_files() == stored
    assert edge.tmp_files() == []


@pytest.mark.parametrize("spec", BAD_RANGES)
async def test_malformed_range_on_a_cold_blob_starts_no_download(
        fake: FakeRegistry, edge: Edge, spec: str) -> None:
    digest = fake.add_blob(make_layer(5000, seed=8))

    async with edge.client.get(f"/v2/app/blobs/{digest}", headers={"Range": spec}) as resp:
        assert resp.status == 416
        assert (await resp.json())["errors"][0]["code"] == "SIZE_INVALID"
        assert "Content-Range" not in resp.headers  # the size is not known yet

    assert fake.requests == []
    assert edge.blob_files() == []
    assert edge.tmp_files() == []


@pytest.mark.parametrize("spec", ["bytes={size}-", "bytes={size}-{more}", "bytes={more}-"])
async def test_range_past_the_end(fake: FakeRegistry, edge: Edge, spec: str) -> None:
    digest, data, upstream_seen = await warm_blob(fake, edge, 5000)
    header = spec.format(size=len(data), more=len(data) + 100)

    async with edge.client.get(f"/v2/app/blobs/{digest}", headers={"Range": header}) as resp:
        assert resp.status == 416
        assert (await resp.json())["errors"][0]["code"] == "SIZE_INVALID"
        assert resp.headers.get("Content-Range") == f"bytes */{len(data)}"
    assert len(fake.requests) == upstream_seen


async def test_valid_ranges_on_a_cached_blob(fake: FakeRegistry, edge: Edge) -> None:
    """The counterpart of the refusals above: well-formed ranges are served from disk."""
    digest, data, upstream_seen = await warm_blob(fake, edge, 5000)
    size = len(data)
    for spec, (start, end) in {"bytes=100-199": (100, 200), "bytes=-10": (size - 10, size),
                               "bytes=4990-": (4990, size), "bytes=0-99999": (0, size),
                               "bytes=-99999": (0, size)}.items():
        async with edge.client.get(f"/v2/app/blobs/{digest}", headers={"Range": spec}) as resp:
            assert resp.status == 206, spec
            assert resp.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}", spec
            assert await resp.read() == data[start:end], spec
    assert len(fake.requests) == upstream_seen


# ---- configuration the router must agree with ---------------------------------------------------

@pytest.mark.parametrize("target", [
    "/v2/fake.test/app/manifests/latest",
    "/v2/FAKE.TEST/app/manifests/latest",
    "/v2/app/manifests/latest?ns=fake.test",
])
async def test_an_upstream_configured_in_upper_case_is_reachable(
        fake: FakeRegistry, make_edge: MakeEdge, target: str) -> None:
    """Registry names are case-insensitive and the router lower-cases what clients send: an
    upstream written `FAKE.TEST` in the config must answer, not be a name no request matches."""
    fake.add_image("app", make_image([make_layer(1000, 1)]))
    edge = await make_edge(upstream="FAKE.TEST")

    resp = await edge.raw("GET", target)

    assert resp.status == 200, resp.body[:200]
    assert fake.requests and all(r.path.startswith("/v2/app/manifests/") for r in fake.requests)
