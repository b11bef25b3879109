"""Blob GETs redirected to another host (a CDN): bytes arrive, credentials stay home."""

from __future__ import annotations

import re

from pytest_aiohttp import AiohttpServer

from tests.fakes.registry import BlobFault, FakeRegistry
from tests.support.images import make_layer
from tests.unit.conftest import Edge

REPO = "team/app"


async def test_redirected_blob_never_carries_authorization_to_the_cdn(
        fake: FakeRegistry, edge: Edge, aiohttp_server: AiohttpServer) -> None:
    cdn = await fake.start_cdn(aiohttp_server)
    assert cdn.url != fake.url  # another origin (another port)
    blob = make_layer(300_000, seed=1)
    digest = fake.add_blob(blob)
    fake.require_bearer()
    fake.redirect_blobs_to(cdn)

    async with edge.client.get(f"/v2/{REPO}/blobs/{digest}") as resp:
        assert resp.status == 200
        assert await resp.read() == blob.data

    at_registry = fake.api_requests("GET", f"/v2/{REPO}/blobs/{digest}")
    assert [r.status for r in at_registry] == [401, 307]
    assert at_registry[1].authorization == "Bearer token-1"
    assert len(cdn.requests) == 1
    assert cdn.requests[0].path == f"/cdn/{digest}"
    assert cdn.requests[0].query == {"sig": "signed"}
    assert cdn.requests[0].authorization is None
    assert cdn.requests[0].status == 200
    assert edge.blob_path(digest).read_bytes() == blob.data


async def test_resume_through_a_redirect(fake: FakeRegistry, edge: Edge,
                                         aiohttp_server: AiohttpServer) -> None:
    """A CDN download cut short resumes via the registry again, Range kept across the redirect."""
    cdn = await fake.start_cdn(aiohttp_server)
    blob = make_layer(800_000, seed=2)
    digest = fake.add_blob(blob)
    fake.fault(digest, BlobFault(truncate_at=200_000, truncate_times=1))
    fake.require_bearer()
    fake.redirect_blobs_to(cdn)

    async with edge.client.get(f"/v2/{REPO}/blobs/{digest}") as resp:
        assert await resp.read() == blob.data

    assert [r.status for r in cdn.requests] == [200, 206]
    assert all(r.authorization is None for r in cdn.requests)
    assert re.fullmatch(r"bytes=\d+-", cdn.requests[1].headers.get("Range", ""))
    redirects = [r for r in fake.api_requests("GET") if r.status == 307]
    assert len(redirects) == 2
    assert all(r.authorization == "Bearer token-1" for r in redirects)
    assert len(fake.token_requests) == 1
