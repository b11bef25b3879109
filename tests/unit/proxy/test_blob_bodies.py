"""Blob bodies. Cached files on the loop edgecache serves with (uvloop): zero-copy os.sendfile
on plain HTTP, TLS pieces, ranges, slow readers (backpressure), clients that leave, and no leaked
descriptors (the server runs in-process on a uvloop loop; clients are raw sockets). And readers
joining a download at the moment it is published."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trustme
import uvloop
from aiohttp import web

from edgecache.storage.blobs import BlobWriter
from edgecache.storage.files import BlobFile
from edgecache.web import responses
from edgecache.web.responses import BlobFileResponse, parse_range
from tests.fakes.registry import FakeRegistry
from tests.support.images import make_layer
from tests.support.waiting import await_until, eventually
from tests.unit.conftest import Edge

SIZE = 24 * 1024 * 1024 + 12345  # several sendfile windows and TLS pieces, not a multiple


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    data = os.urandom(SIZE)
    path = tmp_path_factory.mktemp("blob") / "blob"
    path.write_bytes(data)
    return path, data


def run_server(path: Path, test: Callable[[int, int, ssl.SSLContext], Awaitable[None]]) -> None:
    """Serve `path` at /blob on plain HTTP and HTTPS on a uvloop loop and run `test`; no more
    descriptors may be open after it than before."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def handler(request: web.Request) -> web.StreamResponse:
        size = path.stat().st_size
        span = parse_range(request.headers.get("Range"), size)
        return BlobFileResponse(lambda: BlobFile.open(str(path)), size, span,
                                {"Content-Type": "application/octet-stream"})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/blob", handler)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        plain = web.TCPSite(runner, "127.0.0.1", 0)
        tls = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
        await plain.start()
        await tls.start()
        ports = [s._server.sockets[0].getsockname()[1] for s in (plain, tls)]  # type: ignore[union-attr]
        try:
            before = open_fds()
            await asyncio.wait_for(test(ports[0], ports[1], client_ctx), 60)
            # the server closes its side of finished connections: wait for that, then judge
            assert await eventually(lambda: open_fds() <= before, timeout=10), \
                "a descriptor leaked"
        finally:
            await runner.cleanup()

    uvloop.run(main())


async def get(port: int, tls: ssl.SSLContext | None, headers: str = "",
              pause_every: int = 0) -> tuple[bytes, bytes]:
    """One GET /blob; the head and the body (read to Content-Length). With `pause_every`, the
    client stalls 20 ms after each such many bytes, so the server's socket buffer fills."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls,
                                                   server_hostname="127.0.0.1" if tls else None)
    writer.write(f"GET /blob HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    body = bytearray()
    since = 0
    while len(body) < length:
        data = await reader.read(min(1 << 20, length - len(body)))
        assert data, "connection closed inside the body"
        body += data
        since += len(data)
        if pause_every and since >= pause_every:
            since = 0
            await asyncio.sleep(0.02)  # the scenario: a slow client, not a wait for an event
    writer.close()
    return head, bytes(body)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("cached", [True, False], ids=["page-cache", "executor"])
def test_whole_and_ranges_plain_and_tls(blob: tuple[Path, bytes], cached: bool,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path, data = blob
    if not cached:  # as if the blob were not in the page cache: every read goes to a thread
        monkeypatch.setattr(BlobFile, "in_page_cache", lambda file, offset, count: False)
        monkeypatch.setattr(BlobFile, "read_nowait", lambda file, size, offset: None)

    async def test(port: int, tls_port: int, ctx: ssl.SSLContext) -> None:
        for p, c in ((port, None), (tls_port, ctx)):
            head, body = await get(p, c)
            assert head.startswith(b"HTTP/1.1 200")
            assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
            head, body = await get(p, c, "Range: bytes=5000001-20000000\r\n")
            assert head.startswith(b"HTTP/1.1 206")
            assert body == data[5000001:20000001]
            head, body = await get(p, c, "Range: bytes=-7\r\n")
            assert body == data[-7:]
        # slow readers on both listeners at once: backpressure, bytes still in order
        results = await asyncio.gather(get(port, None, pause_every=4 << 20),
                                       get(tls_port, ctx, pause_every=4 << 20))
        for _, body in results:
            assert body == data

    run_server(path, test)


def test_client_leaving_mid_body_leaks_nothing(blob: tuple[Path, bytes]) -> None:
    path, _ = blob

    async def test(port: int, tls_port: int, ctx: ssl.SSLContext) -> None:
        idle = open_fds()  # no client connected yet
        for p, c in ((port, None), (tls_port, ctx)):
            for _ in range(5):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", p, ssl=c, server_hostname="127.0.0.1" if c else None)
                writer.write(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
                await reader.readexactly(1 << 20)
                writer.transport.abort()
        await await_until(lambda: open_fds() <= idle,  # the server noticed and ended them
                          "the server to close the aborted connections", timeout=10)
        _, body = await get(port, None)  # and still serves
        assert len(body) == SIZE

    run_server(path, test)


async def test_readers_joining_while_a_fill_is_published_get_its_bytes(
        fake: FakeRegistry, edge: Edge, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests that join a download while its file is being fsynced and renamed (in the
    executor) duplicate the download's descriptor: it must still be open then (it was closed in
    the executor: 500s, and with the number reused, another file's or socket's bytes)."""
    blob = make_layer(2 << 20, seed=21)
    digest = fake.add_blob(blob)
    published, release = threading.Event(), threading.Event()
    original = BlobWriter._publish

    def slow_publish(self: BlobWriter) -> None:
        original(self)
        published.set()
        release.wait(10)  # renamed into place; the executor has not returned yet

    monkeypatch.setattr(BlobWriter, "_publish", slow_publish)

    async def get() -> tuple[int, bytes]:
        async with edge.client.get(f"/v2/team/app/blobs/{digest}") as resp:
            return resp.status, await resp.read()

    first = asyncio.create_task(get())
    assert await asyncio.to_thread(published.wait, 10)
    joiners = [asyncio.create_task(get()) for _ in range(5)]
    await await_until(lambda: edge.sample("edgecache_download_readers") == 6,
                      "the five joiners to open their readers of the fill")
    release.set()
    for status, body in await asyncio.gather(first, *joiners):
        assert status == 200
        assert body == blob.data


def test_a_sendfile_thread_owns_the_descriptors_it_writes_with(tmp_path: Path) -> None:
    """The executor's sendfile gets duplicates and closes them itself: the request may close
    its own descriptors (the client left) while the thread is still on its way to the syscall,
    and a number closed under a thread can be handed to a new connection meanwhile."""
    data = os.urandom(50_000)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    sender, receiver = socket.socketpair()
    fd = os.open(blob, os.O_RDONLY)
    try:
        out, source = os.dup(sender.fileno()), os.dup(fd)
        sent = responses._sendfile_owned(out, BlobFile(source), 1000, 20_000)
        os.close(fd)  # the caller's own copies close independently
        sender.close()
        assert sent == 20_000
        got = b""
        for _ in range(100):  # bounded: 20,000 bytes arrive in a few reads
            chunk = receiver.recv(65536)
            if not chunk:
                break
            got += chunk
        assert got == data[1000:21_000]
        for number in (out, source):  # closed by the thread (unless reused since: not here)
            with pytest.raises(OSError):
                os.fstat(number)
    finally:
        receiver.close()
        with contextlib.suppress(OSError):
            os.close(fd)
