"""A client that stops reading a blob body is cut off after `listen.idle_timeout` without
progress, and everything its response held is freed: the plain sendfile path, the TLS pieces
path, and a reader of a download in progress (sendfile on plain HTTP, pieces under TLS).

edgecache's real app (build_app) on loopback, plain and HTTPS listeners, in front of the fake
upstream; the clients are raw sockets with a tiny receive buffer that send a GET and then read
nothing. The server's own socket buffers absorb a few MiB, so the blob is larger than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from edgecache import config as config_mod
from edgecache.app import METRICS, build_app
from edgecache.metrics import Metrics
from tests.fakes.registry import BlobFault, FakeRegistry
from tests.support.images import make_layer
from tests.unit.conftest import UPSTREAM
from tests.unit.edge_runner import poll

REPO = "team/app"
SIZE = 16 << 20
TCP_ESTABLISHED = 1


@dataclass
class Running:
    port: int
    tls_port: int
    client_tls: ssl.SSLContext
    storage: Path
    runner: web.AppRunner

    def sample(self, name: str) -> float:
        value = self.runner.app[METRICS].registry.get_sample_value(name, {})
        return 0.0 if value is None else value

    def tmp_files(self) -> list[Path]:
        root = self.storage / "tmp"
        return sorted(root.iterdir()) if root.exists() else []

    def hung_up(self) -> bool:
        server = self.runner.server
        return server is not None and all(h.transport is None for h in server.connections)

    def open_into_storage(self) -> list[str]:
        """This process's descriptors on blob files and temporary files."""
        found = []
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{name}")
                if target.startswith((f"{self.storage}/blobs/", f"{self.storage}/tmp/")):
                    found.append(target)
        return found


@contextlib.asynccontextmanager
async def running(fake: FakeRegistry, tmp_path: Path,
                  top: dict[str, Any] | None = None) -> AsyncIterator[Running]:
    """build_app as `edgecache serve` runs it (handlers cancelled when their client leaves),
    on a plain and a TLS loopback listener."""
    storage = tmp_path / "storage"
    sections: dict[str, Any] = {
        "listen": {"http": None, "idle_timeout": "0.2s"},
        "storage": {"path": str(storage)},
        "upstreams": {UPSTREAM: {"url": fake.url}},
        "default_upstream": UPSTREAM,
        **(top or {}),
    }
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    runner = web.AppRunner(build_app(config_mod.from_mapping(sections), Metrics()),
                           access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        ports = []
        for context in (None, server_tls):
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        yield Running(ports[0], ports[1], client_tls, storage, runner)
    finally:
        await runner.cleanup()


def _connect(port: int, tls: ssl.SSLContext | None, path: str) -> socket.socket:
    """A client that sends one GET and then never reads (a 4 KiB receive buffer). Blocking
    calls: run in a thread, so the server's loop can answer the TLS handshake."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def _state(sock: socket.socket) -> int:
    """The kernel's TCP state of the client's socket (tcp_info.tcpi_state)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


async def _fetch(port: int, path: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.read()


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "download"])
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_a_client_that_stops_reading_is_cut_off_and_freed(
        fake: FakeRegistry, tmp_path: Path, tls: bool, cached: bool) -> None:
    blob = make_layer(SIZE, seed=131)
    digest = fake.add_blob(blob)
    path = f"/v2/{REPO}/blobs/{digest}"
    async with running(fake, tmp_path) as edge:
        if cached:
            assert await _fetch(edge.port, path) == (200, blob.data)
        port = edge.tls_port if tls else edge.port
        sock = await asyncio.to_thread(_connect, port, edge.client_tls if tls else None, path)
        try:
            assert await poll(lambda: _state(sock) != TCP_ESTABLISHED), \
                "the server kept a connection whose client reads nothing"
            assert await poll(edge.hung_up)
            # what the response held is closed; a download carries on for the cache
            assert await poll(lambda: edge.open_into_storage() == []), edge.open_into_storage()
            assert await poll(lambda: edge.sample("edgecache_downloads_in_flight") == 0)
        finally:
            sock.close()
        assert await _fetch(edge.port, path) == (200, blob.data)


async def test_a_client_waiting_on_a_slow_upstream_is_not_cut_off(
        fake: FakeRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Time a download's reader spends waiting for the upstream is not a stalled write: the
    guard looks (every 0.2 s here) several times while the upstream holds the body, and the
    client still gets all of it."""
    blob = make_layer(SIZE, seed=132)
    digest = fake.add_blob(blob)
    gate = fake.fault(digest, BlobFault(gate_after=100_000)).gate
    caplog.set_level(logging.DEBUG, logger="edgecache.web.stalls")

    def looks() -> int:
        return sum(r.name == "edgecache.web.stalls" for r in caplog.records)

    url = f"/v2/{REPO}/blobs/{digest}"
    async with running(fake, tmp_path) as edge, aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{edge.port}{url}") as resp:
        assert resp.status == 200
        try:
            assert await poll(lambda: looks() >= 3)  # the upstream is holding the body
        finally:
            gate.set()
        assert await resp.read() == blob.data
