"""Eviction runs off the event loop, and stops when its owner does (issue 13, item 7).

The eviction child is held in the middle of its run by the test holding the index's write lock
(another SQLite connection, as an operator's sqlite3 would): the child has chosen its victims
and unlinked the first batch's files, and waits to delete their rows. Meanwhile the server must
answer other requests. Speed is not asserted here (bench/eviction.py measures it); only that
the server answers while an eviction is known to be in progress, and what a cancelled run
leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.fakes.registry import FakeRegistry
from tests.support.images import make_layer
from tests.support.waiting import await_until
from tests.unit.storage.test_quota import Store, fetch, published, serving, start_fake

KiB = 1 << 10
POLLS = 1000  # x 10 ms: every wait below is bounded


@contextlib.contextmanager
def write_lock(storage: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(storage / "index.db", isolation_level=None, timeout=0)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    finally:
        db.execute("ROLLBACK")
        db.close()


async def until(condition: object, what: str) -> None:
    await await_until(condition, what, timeout=POLLS * 0.01)  # type: ignore[arg-type]


async def test_cached_blobs_are_served_while_an_eviction_is_in_progress(
        tmp_path: Path) -> None:
    fake = FakeRegistry()
    server = await start_fake(fake)
    layers = [make_layer(256 * KiB, 900 + i) for i in range(4)]
    for layer in layers:
        fake.add_blob(layer)
    oldest, _, newest, incoming = layers
    storage = tmp_path / "cache"
    try:
        # 3 x 256 KiB cached in 1 MiB; the fourth crosses 95 %: the oldest must go first
        async with serving(fake.url, storage, max_size=str(1024 * KiB + 3 * 1024),
                           access_flush_interval="60s") as edge:
            for layer in layers[:3]:
                status, body, _ = await fetch(edge, f"/v2/team/app/blobs/{layer.digest}")
                assert status == 200 and body == layer.data
            with write_lock(storage):
                pull = asyncio.create_task(fetch(edge, f"/v2/team/app/blobs/{incoming.digest}"))
                # the child has unlinked its first victim and now waits for the lock
                await until(lambda: oldest.digest not in published(storage),
                            "the eviction removed its first victim")
                assert not pull.done()  # its reservation waits for the eviction
                status, body, _ = await fetch(edge, f"/v2/team/app/blobs/{newest.digest}")
                assert status == 200 and body == newest.data
                status, _, _ = await fetch(edge, "/healthz")
                assert status == 200
            status, body, _ = await pull
            assert status == 200 and body == incoming.data
            assert edge.sample("edgecache_evictions_total") >= 1
    finally:
        await server.close()


async def test_a_cancelled_eviction_stops_between_batches_and_leaves_files_and_rows_agreeing(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "store", max_size=1000 * 64)
    try:
        digests = [await store.add(64) for _ in range(1000)]  # 100 % of the budget
        with write_lock(store.root):
            task = asyncio.create_task(store.quota.enforce())
            await until(lambda: not store.on_disk(digests[0]), "the first batch was unlinked")
            task.cancel()  # as at shutdown; the child gets SIGTERM, held until the lock goes
        with pytest.raises(asyncio.CancelledError):
            await task
        # the child is gone (awaited), it stopped after a batch, and what it did is whole: 150
        # blobs were to go (down to 85 %), one batch of 128 went
        assert not [p for p in psutil.Process().children()
                    if "edgecache.storage.eviction" in " ".join(p.cmdline())]
        files = set(published(store.root))
        rows = {d for d in digests if store.indexed(d)}
        assert rows == files & set(digests)
        gone = len(digests) - len(rows)
        assert 0 < gone < 150
        assert all(not store.on_disk(d) for d in digests[:gone])  # the oldest, in order
    finally:
        store.index.close()
