"""Unit fixtures: the fake upstream, and edgecache's real app (build_app) in front of it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from edgecache import config as config_mod
from edgecache.app import METRICS, build_app
from edgecache.metrics import Metrics
from tests.fakes.registry import FakeRegistry
from tests.support.waiting import eventually

UPSTREAM = "fake.test"


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Edge:
    """edgecache in-process behind a TestClient, with its storage directory."""

    client: TestClient[web.Request, web.Application]
    storage: Path

    @property
    def metrics(self) -> Metrics:
        app = self.client.app
        assert app is not None
        return app[METRICS]

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def blob_files(self) -> list[Path]:
        root = self.storage / "blobs"
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []

    def tmp_files(self) -> list[Path]:
        root = self.storage / "tmp"
        return sorted(root.iterdir()) if root.exists() else []

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexpart = digest.partition(":")
        return self.storage / "blobs" / algorithm / hexpart[:2] / hexpart

    async def wait_published(self, digest: str, rounds: int = 400) -> bool:
        """Whether the blob appears in the store within `rounds` short polls (bounded)."""
        path = self.blob_path(digest)
        return await eventually(path.exists, timeout=rounds * 0.025, interval=0.025)

    async def raw(self, method: str, target: str, headers: dict[str, str] | None = None,
                  body: bytes = b"") -> RawResponse:
        """Send the request line byte for byte (no client-side normalisation of `..`, `%2F`)."""
        host, port = self.client.host, self.client.port
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return await self.send_bytes(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    async def send_bytes(self, request: bytes) -> RawResponse:
        """One request, exactly these bytes on the wire; the connection is closed after."""
        reader, writer = await asyncio.open_connection(self.client.host, self.client.port)
        try:
            writer.write(request)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
            await writer.wait_closed()
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parsed = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            parsed[name.strip().lower()] = value.strip()
        return RawResponse(int(status_line.split()[1]), parsed, body)


MakeEdge = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> FakeRegistry:
    return await FakeRegistry().start(aiohttp_server)


@pytest.fixture
def make_edge(aiohttp_client: AiohttpClient, tmp_path: Path, fake: FakeRegistry) -> MakeEdge:
    """Build edgecache with the fake as its only upstream; keyword arguments go to the
    upstream's settings (username, password_file, ...)."""
    count = 0

    async def make(upstream: str = UPSTREAM, top: dict[str, Any] | None = None,
                   **settings: Any) -> Edge:
        """`top` overrides top-level sections. Tags revalidate on every request by default
        (cache.tag_ttl 0s), so each tag request is visible at the fake."""
        nonlocal count
        count += 1
        storage = tmp_path / f"cache{count}"
        sections: dict[str, Any] = {
            "listen": {"http": None},
            "storage": {"path": str(storage)},
            "upstreams": {upstream: {"url": fake.url, **settings}},
            "default_upstream": upstream,
            "cache": {"tag_ttl": "0s"},
        }
        for key, value in (top or {}).items():  # merged, so storage keeps its tmp path
            merge = isinstance(value, dict) and isinstance(sections.get(key), dict)
            sections[key] = {**sections[key], **value} if merge else value
        config = config_mod.from_mapping(sections)
        client = await aiohttp_client(build_app(config, Metrics()))
        return Edge(client, storage)

    return make


@pytest.fixture
async def edge(make_edge: MakeEdge) -> Edge:
    return await make_edge()
