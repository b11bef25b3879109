"""Pins fetched until held, in-process: edgecache's real app in front of the fake upstream,
listening as `edgecache serve` does (components first, then the listener, then LISTENING set).

A pin sent before the listener listens waits for it instead of failing; a failed fetch is tried
again after a backoff until the image is held, at once when pinned again, never after an
unpin; at start, a pin whose image is not held in full (its manifest is, a layer is not) is
fetched again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from edgecache.airgap.selfpull import SelfPull
from edgecache.app import LISTENING, PINNING, build_app
from edgecache.config import Config, from_mapping
from edgecache.metrics import Metrics
from edgecache.ops.pinfetch import backoff
from edgecache.ops.pins import Pinning
from edgecache.storage.index import Index
from edgecache.storage.layout import Layout
from tests.fakes.registry import BlobFault, FakeRegistry
from tests.support.images import make_image, make_layer
from tests.support.registry import free_port
from tests.support.waiting import await_until, eventually
from tests.unit.conftest import UPSTREAM

REFERENCE = f"{UPSTREAM}/team/app:1"
FAST = (0.05, 0.2)  # the backoff, first and longest, in seconds (the service's: 30 s, 30 min)


def settings(fake: FakeRegistry, storage: Path, port: int, **top: object) -> Config:
    return from_mapping({"listen": {"http": f"127.0.0.1:{port}"}, "metrics": {"listen": None},
                         "storage": {"path": str(storage)},
                         "upstreams": {UPSTREAM: {"url": fake.url}},
                         "default_upstream": UPSTREAM, "cache": {"tag_ttl": "0s"}, **top})


@contextlib.asynccontextmanager
async def service(config: Config, *, listening: bool = True
                  ) -> AsyncIterator[tuple[web.Application, web.TCPSite]]:
    """The app with its components up; with `listening`, also as `serve` goes on: the
    listener, LISTENING set, the pins not held in full started."""
    app = build_app(config, Metrics())
    runner = web.AppRunner(app)
    await runner.setup()
    host, port = config.listen.http.rsplit(":", 1) if config.listen.http else ("", "")
    site = web.TCPSite(runner, host, int(port))
    try:
        if listening:
            await listen(app, site)
        yield app, site
    finally:
        await runner.cleanup()


async def listen(app: web.Application, site: web.TCPSite) -> None:
    await site.start()
    app[LISTENING].set()
    app[PINNING].start()


def state(pinning: Pinning, reference: str = REFERENCE) -> dict[str, object]:
    return {p["reference"]: p for p in pinning.listing()}[reference]


def pin_task_running(reference: str) -> bool:
    return any(task.get_name() == f"pin {reference}" for task in asyncio.all_tasks())


def test_the_backoff_doubles_from_30_seconds_to_30_minutes() -> None:
    assert [backoff(n) for n in range(1, 10)] == [30, 60, 120, 240, 480, 960, 1800, 1800, 1800]
    assert backoff(10_000) == 1800 and backoff(0) == 30


async def test_a_pin_sent_before_the_listener_listens_waits_for_it_and_is_fetched(
        fake: FakeRegistry, tmp_path: Path) -> None:
    image = make_image([make_layer(4096, 1)])
    fake.add_image("team/app", image, tags=["1"])
    async with service(settings(fake, tmp_path / "s", free_port()), listening=False) \
            as (app, site):
        job = app[PINNING].pin([REFERENCE])[0]  # the metrics listener's admin API, this early
        # a refused connection comes back in milliseconds: a second bounds it generously
        assert not await eventually(lambda: job.done, timeout=1.0), job.error
        await listen(app, site)
        await await_until(lambda: job.done, "the pin's fetch ended")
        assert job.error is None and state(app[PINNING])["state"] == "held"
        assert {r.path for r in fake.api_requests("GET")} >= {
            f"/v2/team/app/blobs/{blob.digest}" for blob in image.blobs}


async def test_a_failed_fetch_is_tried_again_with_backoff_until_the_image_is_held(
        fake: FakeRegistry, tmp_path: Path) -> None:
    fake.add_image("team/app", make_image([make_layer(4096, 2)]), tags=["1"])
    config = settings(fake, tmp_path / "s", free_port())
    async with service(config) as (app, _):
        index = Index(Layout(config.storage.path).index_file)
        pinning = Pinning(index, config, SelfPull(config, app[LISTENING]), retry=FAST)
        try:
            fake.down = True
            pinning.pin([REFERENCE])
            seen: list[dict[str, object]] = []

            def failed_twice() -> bool:
                seen[:] = [state(pinning)]
                return seen[0]["state"] == "failed" and int(str(seen[0]["failures"])) >= 2

            await await_until(failed_twice, "a second failed try", describe=lambda: str(seen))
            assert "503" in str(seen[0]["error"]) and isinstance(seen[0]["next_retry"], float)
            fake.down = False
            await await_until(lambda: state(pinning)["state"] == "held", "held after a retry",
                              describe=lambda: str(state(pinning)))
            await await_until(lambda: not pin_task_running(REFERENCE), "the fetch ended")
        finally:
            await pinning.close()
            index.close()


async def test_pinning_again_tries_at_once_and_unpin_stops_the_tries(
        fake: FakeRegistry, tmp_path: Path) -> None:
    fake.add_image("team/app", make_image([make_layer(4096, 3)]), tags=["1"])
    other = f"{UPSTREAM}/team/other:1"
    config = settings(fake, tmp_path / "s", free_port())
    async with service(config) as (app, _):
        index = Index(Layout(config.storage.path).index_file)
        pinning = Pinning(index, config, SelfPull(config, app[LISTENING]), retry=(60.0, 60.0))
        try:
            fake.down = True
            pinning.pin([REFERENCE, other])
            await await_until(lambda: state(pinning)["state"] == "failed"
                              and state(pinning, other)["state"] == "failed", "both failed")
            retry_at = state(pinning)["next_retry"]
            assert isinstance(retry_at, float) and state(pinning)["failures"] == 1
            fake.down = False
            job = pinning.pin([REFERENCE])[0]  # well before the minute's backoff is out
            await await_until(lambda: job.done, "the new try ended")
            assert job.error is None and state(pinning)["state"] == "held"
            assert pinning.unpin([other]) == ([other], {})
            await await_until(lambda: not pin_task_running(other), "the unpinned stops")
            assert other not in {p["reference"] for p in pinning.listing()}
        finally:
            await pinning.close()
            index.close()


async def test_at_start_a_pin_whose_image_is_not_held_in_full_is_fetched_again(
        fake: FakeRegistry, tmp_path: Path) -> None:
    layer = make_layer(8192, 4)
    image = make_image([make_layer(4096, 5), layer])
    fake.add_image("team/app", image, tags=["1"])
    fake.fault(layer.digest, BlobFault(wrong_bytes=True))
    storage = tmp_path / "s"
    config = settings(fake, storage, free_port(), pins=[REFERENCE])
    async with service(config) as (app, _):
        await await_until(lambda: state(app[PINNING])["state"] == "failed", "the fetch failed",
                          describe=lambda: str(state(app[PINNING])))
    index = Index(Layout(storage).index_file)
    try:
        assert index.media_type(image.digest) is not None, "the manifest was held"
        assert index.size(layer.digest) is None, "the bad layer was not"
    finally:
        index.close()
    fake.clear_fault(layer.digest)
    async with service(settings(fake, storage, free_port(), pins=[REFERENCE])) as (app, _):
        await await_until(lambda: state(app[PINNING])["state"] == "held", "fetched after start",
                          describe=lambda: str(state(app[PINNING])))
        assert app[PINNING].listing()[0]["source"] == "config"
        index = Index(Layout(storage).index_file)
        try:
            assert index.size(layer.digest) == len(layer.data), "the layer was fetched"
        finally:
            index.close()
