"""The downloads in flight are bounded: a queued download nobody waits for any more is dropped
with its temporary file, and a request that would start one beyond `2 x limits.max_downloads`
running or queued is answered 429 at once. (edgecache's app on loopback, handlers cancelled
when their client leaves, as `edgecache serve` runs it; the fake upstream holds the download
that has the only slot.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.fakes.registry import BlobFault, FakeRegistry
from tests.support.images import make_layer
from tests.unit.edge_runner import poll
from tests.unit.proxy.test_fills import READ_TIMEOUT, upstream_gets
from tests.unit.web.test_stalled_clients import running

REPO = "team/app"
ONE_SLOT = {"limits": {"max_downloads": 1}}


async def _get(session: aiohttp.ClientSession, port: int, digest: str) -> tuple[int, bytes]:
    async with session.get(f"http://127.0.0.1:{port}/v2/{REPO}/blobs/{digest}") as resp:
        return resp.status, await resp.read()


async def test_a_queued_download_whose_clients_left_is_dropped(
        fake: FakeRegistry, tmp_path: Path) -> None:
    held, queued = make_layer(300_000, seed=141), make_layer(200_000, seed=142)
    fake.add_blob(held)
    fake.add_blob(queued)
    gate = fake.fault(held.digest, BlobFault(gate_after=1000)).gate
    async with running(fake, tmp_path, ONE_SLOT) as edge, aiohttp.ClientSession() as session:
        first = asyncio.create_task(_get(session, edge.port, held.digest))
        try:
            assert await poll(lambda: upstream_gets(fake, held.digest) == 1)
            _reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
            writer.write(f"GET /v2/{REPO}/blobs/{queued.digest} HTTP/1.1\r\nHost: x\r\n\r\n"
                         .encode())
            assert await poll(lambda: edge.sample("edgecache_downloads_in_flight") == 2)
            assert len(edge.tmp_files()) == 2  # the queued fill holds a temporary file
            writer.transport.abort()  # its only client leaves while it is still queued
            assert await poll(lambda: edge.sample("edgecache_downloads_in_flight") == 1)
            assert await poll(lambda: len(edge.tmp_files()) == 1), edge.tmp_files()
        finally:
            gate.set()
        assert await asyncio.wait_for(first, 10) == (200, held.data)
        assert await poll(lambda: edge.sample("edgecache_downloads_in_flight") == 0)
        assert upstream_gets(fake, queued.digest) == 0  # it never started for nobody
        assert edge.tmp_files() == []
        assert await _get(session, edge.port, queued.digest) == (200, queued.data)


async def test_fills_beyond_the_bound_are_refused_at_once(
        fake: FakeRegistry, tmp_path: Path) -> None:
    """One slot: one running, one queued; a third blob is refused (429) without waiting, while
    a request joining the queued one is not refused; once the slot frees, all are served."""
    held, queued, third = (make_layer(100_000, seed=s) for s in (143, 144, 145))
    for blob in (held, queued, third):
        fake.add_blob(blob)
    gate = fake.fault(held.digest, BlobFault(gate_after=1000)).gate
    async with running(fake, tmp_path, ONE_SLOT) as edge, aiohttp.ClientSession() as session:
        first = asyncio.create_task(_get(session, edge.port, held.digest))
        try:
            assert await poll(lambda: upstream_gets(fake, held.digest) == 1)
            waiting = [asyncio.create_task(_get(session, edge.port, queued.digest))
                       for _ in range(2)]
            assert await poll(lambda: edge.sample("edgecache_downloads_in_flight") == 2)
            async with asyncio.timeout(READ_TIMEOUT), session.get(  # not queued: answered now
                    f"http://127.0.0.1:{edge.port}/v2/{REPO}/blobs/{third.digest}") as resp:
                assert resp.status == 429
                assert (await resp.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
            assert not any(task.done() for task in waiting)
            assert len(edge.tmp_files()) == 2
        finally:
            gate.set()
        assert await asyncio.wait_for(first, 10) == (200, held.data)
        for task in waiting:
            assert await asyncio.wait_for(task, 10) == (200, queued.data)
        assert upstream_gets(fake, third.digest) == 0
        assert await _get(session, edge.port, third.digest) == (200, third.data)
