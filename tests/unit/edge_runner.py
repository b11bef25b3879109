"""edgecache's app (build_app) served as `edgecache serve` serves it: an AppRunner with
edgecache's access logger on a loopback port, in front of the fake upstream. For tests that
need what the TestClient fixture does not give: handlers left running when their client
leaves (aiohttp's default, `edgecache warm`'s in-process runner), and the real access line."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from edgecache import config as config_mod
from edgecache.app import METRICS, build_app
from edgecache.metrics import Metrics
from edgecache.web.observability import AccessLogger
from tests.fakes.registry import FakeRegistry
from tests.support.waiting import eventually
from tests.unit.conftest import UPSTREAM

POLL_ROUNDS = 400  # x 25 ms


@dataclass
class Served:
    host: str
    port: int
    storage: Path
    runner: web.AppRunner

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexpart = digest.partition(":")
        return self.storage / "blobs" / algorithm / hexpart[:2] / hexpart

    def sample(self, name: str, **labels: str) -> float:
        metrics: Metrics = self.runner.app[METRICS]
        value = metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def all_hung_up(self) -> bool:
        server = self.runner.server
        return server is not None and all(h.transport is None for h in server.connections)


async def poll(check: Callable[[], bool], rounds: int = POLL_ROUNDS) -> bool:
    """Whether `check` holds within `rounds` short polls (bounded)."""
    return await eventually(check, timeout=rounds * 0.025, interval=0.025)


@contextlib.asynccontextmanager
async def serve(fake: FakeRegistry, tmp_path: Path, *, cancellation: bool = True,
                storage_settings: dict[str, Any] | None = None,
                **upstream: Any) -> AsyncIterator[Served]:
    storage = tmp_path / "served"
    config = config_mod.from_mapping({
        "listen": {"http": None},
        "storage": {"path": str(storage), **(storage_settings or {})},
        "upstreams": {UPSTREAM: {"url": fake.url, **upstream}},
        "default_upstream": UPSTREAM,
        "cache": {"tag_ttl": "0s"},
    })
    runner = web.AppRunner(build_app(config, Metrics()), access_log_class=AccessLogger,
                           handler_cancellation=cancellation)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield Served("127.0.0.1", port, storage, runner)
    finally:
        await runner.cleanup()
