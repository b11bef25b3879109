"""Every byte counter counts the body bytes actually sent (issue 14 item 6).

A cache hit on plain HTTP goes out with os.sendfile, past aiohttp's writer: its access line
said 460 (the headers) for a 25 MB blob. Through the real app (build_app, edgecache's access
logger, an AppRunner as `serve` runs it) against the fake upstream: the `bytes` of each access
line, and the served/saved byte metrics, for cache hits (sendfile), ranges, downloads in
progress, HEAD, manifests, errors and a client that leaves half-way; and TLS pieces.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from edgecache.storage.files import BlobFile
from edgecache.web.responses import BlobFileResponse
from tests.fakes.registry import FakeRegistry
from tests.support.edgecache import ACCESS_RE
from tests.support.images import make_image, make_layer
from tests.unit.edge_runner import Served, poll, serve

REPO = "team/app"
BYTES_RE = re.compile(ACCESS_RE.pattern + r" (?P<bytes>\d+) ")


async def request(served: Served, method: str, path: str, headers: str = "",
                  keep: int | None = None) -> tuple[int, bytes]:
    """One request on its own connection; the status and the body (to the end, or only the
    first `keep` bytes before hanging up)."""
    reader, writer = await asyncio.open_connection(served.host, served.port)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     f"{headers}\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if keep is not None:
            body = await asyncio.wait_for(reader.readexactly(keep), 10)
        else:
            body = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    return int(head.split()[1]), body


def access_bytes(caplog: pytest.LogCaptureFixture, method: str, path: str) -> list[int]:
    lines = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.name == "aiohttp.access"]
    return [int(m.group("bytes")) for line in lines if (m := BYTES_RE.search(line))
            and m.group("method") == method and m.group("path") == path]


async def logged(caplog: pytest.LogCaptureFixture, method: str, path: str,
                 count: int = 1) -> list[int]:
    """The byte counts of the access lines for this request, once `count` are written (the
    line follows the response's end)."""
    assert await poll(lambda: len(access_bytes(caplog, method, path)) >= count)
    return access_bytes(caplog, method, path)


@pytest.fixture(autouse=True)
def access_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")


async def test_every_access_line_counts_the_body_bytes_sent(
        fake: FakeRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    layer = make_layer(3 * 1024 * 1024 + 17, seed=51)
    image = make_image([layer])
    fake.add_image(REPO, image, tags=("latest",))
    blob = f"/v2/{REPO}/blobs/{layer.digest}"
    manifest = f"/v2/{REPO}/manifests/{image.digest}"
    async with serve(fake, tmp_path) as served:
        assert await request(served, "GET", blob) == (200, layer.data)  # a download
        assert await logged(caplog, "GET", blob) == [len(layer.data)]
        assert await poll(lambda: served.blob_path(layer.digest).exists())

        assert await request(served, "GET", blob) == (200, layer.data)  # a hit: sendfile
        assert await logged(caplog, "GET", blob, 2) == [len(layer.data)] * 2
        status, body = await request(served, "GET", blob, "Range: bytes=1000-2999\r\n")
        assert (status, body) == (206, layer.data[1000:3000])
        assert (await logged(caplog, "GET", blob, 3))[2] == 2000
        assert (await request(served, "HEAD", blob))[0] == 200
        assert await logged(caplog, "HEAD", blob) == [0]

        status, body = await request(served, "GET", manifest)
        assert (status, body) == (200, image.manifest)
        assert await logged(caplog, "GET", manifest) == [len(image.manifest)]
        missing = f"/v2/{REPO}/blobs/sha256:{'0' * 64}"
        status, body = await request(served, "GET", missing)
        assert status == 404
        assert await logged(caplog, "GET", missing) == [len(body)]

        served_total = served.sample("edgecache_served_bytes_total", source="cache")
        assert served_total == len(layer.data) + 2000
        assert served.sample("edgecache_served_bytes_total", source="upstream") == len(
            layer.data)


async def test_a_client_that_leaves_half_way_is_counted_for_what_it_got(
        fake: FakeRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cache hit of 48 MiB, the client reads 64 KiB and hangs up: the line and the metrics
    count what went out (at most what the socket buffers took), not the blob's size."""
    layer = make_layer(48 * 1024 * 1024, seed=52)
    fake.add_blob(layer)
    blob = f"/v2/{REPO}/blobs/{layer.digest}"
    async with serve(fake, tmp_path) as served:
        assert await request(served, "GET", blob) == (200, layer.data)
        assert await poll(lambda: served.blob_path(layer.digest).exists())
        before = served.sample("edgecache_served_bytes_total", source="cache")
        assert before == 0
        status, _ = await request(served, "GET", blob, keep=64 * 1024)
        assert status == 200
        counts = await logged(caplog, "GET", blob, 2)
        assert 64 * 1024 <= counts[1] < len(layer.data)
        assert served.sample("edgecache_served_bytes_total", source="cache") == counts[1]
        assert served.sample("edgecache_saved_bytes_total") == counts[1]


async def test_a_blob_too_big_to_cache_is_counted_as_it_is_written(
        fake: FakeRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No room for it: each reader streams it from upstream itself, through the writer (not
    sendfile): counted there."""
    layer = make_layer(2 * 1024 * 1024, seed=53)
    fake.add_blob(layer)
    blob = f"/v2/{REPO}/blobs/{layer.digest}"
    async with serve(fake, tmp_path, storage_settings={"max_size": "1MiB"}) as served:
        assert await request(served, "GET", blob) == (200, layer.data)
        assert await logged(caplog, "GET", blob) == [len(layer.data)]
        assert not served.blob_path(layer.digest).exists()
        assert served.sample("edgecache_served_bytes_total", source="upstream") == len(
            layer.data)


async def test_tls_pieces_are_counted(tmp_path: Path) -> None:
    """Under TLS a cached blob goes out in pieces through the transport: body_length (what any
    access logger reads) is the body, not the headers plus it."""
    data = bytes(range(256)) * 4096 + b"tail"
    path = tmp_path / "blob"
    path.write_bytes(data)
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    lengths: list[int] = []
    responses: list[web.StreamResponse] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        responses.append(BlobFileResponse(lambda: BlobFile.open(str(path)), len(data), None, {},
                                          lengths.append))
        return responses[-1]

    app = web.Application()
    app.router.add_get("/blob", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        writer.write(b"GET /blob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        assert received.endswith(data)
        assert await poll(lambda: lengths == [len(data)])
        assert responses[0].body_length == len(data)
    finally:
        await runner.cleanup()
