"""`warm`, run by the service itself against its own listener: how runtime pins and the
prefetch schedule fetch images.

Why through the listener rather than into the store: the pull path is the one way content
enters the cache (verification, single-flight with clients' own requests, quota, links, tags),
exactly as `edgecache warm` uses it. Unlike `warm`, this never starts an in-process service
when nothing answers (inside the service that would be a second writer on the same storage):
the listeners start after the components, so a pull waits for `ready` (set by `server.py` once
every listener listens) when given one, and without one fails if asked for before then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import aiohttp

from edgecache.airgap.endpoint import credentials, find_service
from edgecache.airgap.platform import Platform
from edgecache.airgap.progress import Progress
from edgecache.config import Config
from edgecache.errors import EdgecacheError

if TYPE_CHECKING:  # warm.py is imported at the first pull: a service without pins skips it
    from edgecache.airgap.warmreport import ImageResult

Pace = Callable[[int], Awaitable[None]]


class NotListening(EdgecacheError):
    """The service's own listener does not answer (yet)."""


class SelfPull:
    def __init__(self, config: Config, ready: asyncio.Event | None = None) -> None:
        self._config = config
        self._ready = ready

    async def pull(self, references: Sequence[str], progress: Progress,
                   platforms: Sequence[Platform] = (), concurrency: int | None = None,
                   pace: Pace | None = None) -> list[ImageResult]:
        """One result per reference (its `error` set when it failed); NotListening when the
        service does not answer on its own listener. `concurrency`: warm's default if None."""
        if self._ready is not None:
            await self._ready.wait()
        from edgecache.airgap.warm import CONCURRENCY, READ_TIMEOUT, Warmer

        concurrency = CONCURRENCY if concurrency is None else concurrency
        endpoint = await find_service(self._config)
        if endpoint is None:
            raise NotListening("the service does not answer on its own listener yet")
        connector = aiohttp.TCPConnector(limit=2 * concurrency + 2,
                                         ssl=endpoint.ssl if endpoint.ssl is not None else True)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=READ_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         headers=credentials(self._config, endpoint),
                                         auto_decompress=False) as session:
            warmer = Warmer(session, endpoint, progress, platforms, concurrency, pace)
            return await warmer.warm(references)
