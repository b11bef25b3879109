"""Shutdown order: background work ends, cancelled and awaited, before what it uses closes.

A tag revalidation left running in the background (its waiter gave up after
`revalidate_timeout`) is the case that used to outlive the app: the upstream clients and the
index closed under it, and it ended later (or was destroyed pending) against closed resources.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from edgecache.app import READY
from tests.fakes.registry import FakeRegistry
from tests.support.images import make_image, make_layer
from tests.unit.conftest import MakeEdge

REPO = "team/app"
TAG_URL = f"/v2/{REPO}/manifests/latest"
NO_PROBE = {"probe_min_interval": "1h", "probe_max_interval": "1h"}


def revalidations() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", "").endswith("._revalidate")]


async def test_a_background_revalidation_ends_before_the_index_closes(
        fake: FakeRegistry, make_edge: MakeEdge, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    image = make_image([make_layer(1000, 140)])
    fake.add_image(REPO, image)
    edge = await make_edge(response_timeout="60s", top={
        "cache": {"tag_ttl": "0s", "revalidate_timeout": "100ms"}, "health": NO_PROBE})
    async with edge.client.get(TAG_URL) as resp:
        assert resp.status == 200
    fake.hold(TAG_URL, method="HEAD")  # the upstream never answers the next HEAD
    async with edge.client.get(TAG_URL) as resp:
        assert resp.status == 200 and resp.headers["X-Edgecache-Cache"] == "stale"
    running = revalidations()
    assert len(running) == 1, "the revalidation should go on in the background"
    task = running[0]
    app = edge.client.app
    assert app is not None
    ready = app[READY]
    ended: list[tuple[bool, list[str]]] = []
    # what the index said at the moment the task ended
    task.add_done_callback(lambda t: ended.append((t.cancelled(), ready())))

    await edge.client.close()

    assert task.done(), "shutdown returned with the revalidation still running"
    assert ended == [(True, [])], "the revalidation was not cancelled while the index was open"
    assert ready() == ["index not answering"]  # closed now, after the task
    del task, running
    gc.collect()
    assert not [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]


async def test_a_probe_cancelled_by_a_success_is_still_awaited_at_close() -> None:
    """The upstream answered a request while its probe slept: the probe is cancelled, and the
    owner still waits for it to end when it closes."""
    from edgecache.upstream.health import UpstreamHealth

    async def probe() -> bool:
        return False

    health = UpstreamHealth("up.test", probe, threshold=1, backoff_initial=3600)
    health.failure("refused")
    probes = [t for t in asyncio.all_tasks() if t.get_name() == "probe up.test"]
    assert len(probes) == 1 and not health.up
    health.success()
    assert health.up
    await health.close()
    assert probes[0].done() and probes[0].cancelled()
