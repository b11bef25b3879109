"""Absent content against a real docker-registry: requests for digests and tags it does not have
cost one upstream request each, not one per client request (issue 13, item 12: 600 anonymous
requests for 300 absent digests were 600 upstream requests), and the memory of a 404 stays with
the upstream that gave it."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.edgecache import StartEdgecache
from tests.support.images import make_image, make_layer
from tests.support.registry import DockerRegistry

pytestmark = pytest.mark.integration

HUB, MIRROR = "docker.io", "mirror.test"  # two names for the same registry


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    registry = DockerRegistry(tmp_path / "registry")
    try:
        registry.push_image("library/app", "1", make_image([make_layer(4000, seed=101)]))
        yield registry
    finally:
        registry.close()


def answered(registry: DockerRegistry) -> list[str]:
    """Every API request path the registry answered, errors included (its log says "response
    completed with error" for those; `DockerRegistry.requests` counts successes only)."""
    registry.mark()  # settles the log: every request answered so far is in it
    paths = []
    for line in registry.log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        uri = str(entry.get("http.request.uri", ""))
        api = uri.startswith("/v2/") and uri != "/v2/" and not uri.startswith("/v2/?")
        if api and str(entry.get("msg", "")).startswith("response completed"):
            paths.append(uri)  # not the base endpoint (probes) nor the log markers
    return paths


def absent(count: int, salt: str) -> list[str]:
    return ["sha256:" + hashlib.sha256(f"{salt} {i}".encode()).hexdigest() for i in range(count)]


async def storm(base: str, paths: list[str], copies: int,
                method: str = "GET") -> list[tuple[int, str | None]]:
    """Every path `copies` times at once; each answer's status and OCI error code."""
    async def one(session: aiohttp.ClientSession, path: str) -> tuple[int, str | None]:
        async with session.request(method, base + path) as resp:
            body = await resp.read()
            code = json.loads(body)["errors"][0]["code"] if body else None
            return resp.status, code

    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        return await asyncio.gather(*(one(session, p) for p in paths for _ in range(copies)))


def test_absent_content_is_asked_for_once(registry: DockerRegistry,
                                          edgecaches: StartEdgecache) -> None:
    ec = edgecaches("edgecache", {HUB: registry.url, MIRROR: registry.url},
                    default_upstream=HUB)
    blobs = [f"/v2/library/app/blobs/{d}" for d in absent(100, "blob")]
    blobs += [f"/v2/library/nothing-here/blobs/{d}" for d in absent(50, "repo")]
    manifests = [f"/v2/library/app/manifests/{d}" for d in absent(50, "manifest")]
    tags = ["/v2/library/app/manifests/no-such-tag"]
    paths = blobs + manifests + tags
    before = len(answered(registry))

    first = asyncio.run(storm(ec.url, paths, 2))
    again = asyncio.run(storm(ec.url, paths, 1)) + asyncio.run(storm(ec.url, paths, 1, "HEAD"))
    assert {status for status, _ in first + again} == {404}
    assert {code for _, code in first} == {"BLOB_UNKNOWN", "MANIFEST_UNKNOWN"}

    seen = collections.Counter(answered(registry)[before:])
    assert seen == collections.Counter(paths), "one upstream request per absent reference"

    # another upstream name's route asks for itself, even for the same registry
    mirror = [f"{path}?ns={MIRROR}" for path in paths[:10]]
    assert {status for status, _ in asyncio.run(storm(ec.url, mirror, 2))} == {404}
    assert len(answered(registry)) - before == len(paths) + 10
