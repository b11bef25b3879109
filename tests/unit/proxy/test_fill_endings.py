"""Every fill ends, every reader hears how, every wait is bounded, every descriptor is closed.

Issue 13 items 9, 10 and 13 through edgecache's HTTP interface, against the fake upstream's
faults: a resumed 206 with a Content-Range that int() refuses, a rate-limit header of 5,000
digits, a download queued behind another for longer than its stall bound, a client gone
before the headers of a download it waited for.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.registry import BlobFault, FakeRegistry
from tests.support.images import make_image, make_layer
from tests.unit.conftest import Edge, MakeEdge
from tests.unit.edge_runner import poll, serve
from tests.unit.proxy.test_fills import READ_TIMEOUT, blob_url, read_until_broken, upstream_gets

REPO = "team/app"


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.levelno >= logging.ERROR or r.exc_info]


async def test_unparsable_content_range_on_resume_ends_the_fill_for_every_reader(
        fake: FakeRegistry, edge: Edge, caplog: pytest.LogCaptureFixture) -> None:
    """The body breaks, the resume answers 206 with `Content-Range: bytes ²-...` ('²' passes
    str.isdigit, int() refuses it): every reader's stream must end broken, not wait forever."""
    blob = make_layer(1 << 20, seed=91)
    digest = fake.add_blob(blob)
    fake.fault(digest, BlobFault(truncate_at=200_000, truncate_times=1))
    fake.extra_headers = {"Content-Range": f"bytes ²-{len(blob.data) - 1}/{len(blob.data)}"}

    async def pull() -> tuple[int, bytes, BaseException | None]:
        async with asyncio.timeout(READ_TIMEOUT):
            async with edge.client.get(blob_url(digest)) as resp:
                received, error = await read_until_broken(resp)
                return resp.status, received, error

    results = await asyncio.gather(pull(), pull(), pull())

    for status, received, error in results:
        assert status == 200
        assert isinstance(error, aiohttp.ClientPayloadError)
        assert len(received) < len(blob.data) and blob.data.startswith(received)
    assert not edge.blob_path(digest).exists() and edge.tmp_files() == []
    assert tracebacks(caplog) == []
    fake.extra_headers = {}  # the upstream is sane again: the next pull downloads afresh
    async with edge.client.get(blob_url(digest)) as resp:
        assert resp.status == 200 and await resp.read() == blob.data


async def test_a_header_of_5000_digits_is_ignored_not_a_dead_fill(
        fake: FakeRegistry, edge: Edge, caplog: pytest.LogCaptureFixture) -> None:
    """int() refuses over 4,300 digits: a rate-limit count that long used to escape from the
    first response of a fill (its readers waited for a size forever) and from manifests."""
    image = make_image([make_layer(100_000, seed=92)])
    fake.add_image(REPO, image, tags=("latest",))
    fake.extra_headers = {"RateLimit-Remaining": "9" * 5000 + ";w=21600"}

    async with asyncio.timeout(READ_TIMEOUT):
        async with edge.client.get(f"/v2/{REPO}/manifests/latest") as resp:
            assert resp.status == 200 and await resp.read() == image.manifest
        async with edge.client.get(blob_url(image.layers[0].digest)) as resp:
            assert resp.status == 200 and await resp.read() == image.layers[0].data
    assert tracebacks(caplog) == []


async def test_a_reader_queued_longer_than_its_stall_bound_is_answered_429(
        fake: FakeRegistry, make_edge: MakeEdge) -> None:
    """One download slot, held by a blob whose upstream stalls (its own read_timeout is long):
    a reader of a second blob on an upstream with short timeouts waits at most its stall
    bound (read + pauses + connect + 2 x response + 1 s: 4.8 s here), then hears 429."""
    held = make_layer(300_000, seed=93)
    queued = make_layer(100_000, seed=94)
    fake.add_blob(held)
    fake.add_blob(queued)
    fault = fake.fault(held.digest, BlobFault(gate_after=1000))
    edge = await make_edge(top={
        "limits": {"max_downloads": 1},
        "upstreams": {"quick.test": {"url": fake.url, "connect_timeout": "0.2s",
                                     "response_timeout": "0.2s", "read_timeout": "0.2s"}}})
    first = await edge.client.get(blob_url(held.digest))
    try:
        assert first.status == 200
        async with asyncio.timeout(READ_TIMEOUT):
            async with edge.client.get(f"/v2/quick.test/{REPO}/blobs/{queued.digest}") as resp:
                assert resp.status == 429, await resp.text()
                assert (await resp.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert upstream_gets(fake, queued.digest) == 0
    finally:
        fault.gate.set()
        first.release()


def _open_into(root: Path) -> list[str]:
    """This process's descriptors that point into `root`'s blobs or temporary files."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        inside = target.removeprefix(str(root))
        if inside != target and inside.startswith(("/blobs/", "/tmp/")):
            found.append(target)
    return found


async def test_a_client_gone_before_the_headers_leaks_no_descriptor(
        fake: FakeRegistry, tmp_path: Path) -> None:
    """The request waits for the upstream's headers (held), the client hangs up, then the
    upstream answers: the headers cannot be sent, and the reader opened for the client must be
    closed anyway. (Served by an AppRunner that lets handlers finish when their client leaves,
    aiohttp's default, as `edgecache warm` runs the app in-process.)"""
    blob = make_layer(200_000, seed=95)
    digest = fake.add_blob(blob)
    gate = fake.hold(digest, method="GET")
    async with serve(fake, tmp_path, cancellation=False) as server:
        _reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(f"GET {blob_url(digest)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        assert await poll(lambda: bool(fake.api_requests("GET", blob_url(digest))))
        writer.close()
        await writer.wait_closed()
        assert await poll(server.all_hung_up)  # the server saw the client leave
        gate.set()

        assert await poll(lambda: os.path.exists(server.blob_path(digest)))
        assert await poll(lambda: _open_into(server.storage) == []), _open_into(server.storage)
