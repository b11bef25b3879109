"""An upstream blob read from an offset, resumed with Range when the connection breaks.

Used by a `Fill` (from 0, into the cache) and by a reader that bypasses the cache (from where it
stands). A resumed response that starts earlier than asked (an upstream that ignores Range) is
skipped forward; one that starts later is refused. Breaks are retried a bounded number of times
with a growing pause; readers only see the pause.

`stall_bound` is how long a download may go without a byte while still being healthy: the
longest silence its upstream's timeouts allow (a read that times out, the pauses, a new
connection, a token and the new response's headers). A reader that hears nothing for longer
gives up on it: the bound every reader's wait has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable

from edgecache.config import UpstreamConfig
from edgecache.errors import UpstreamBadResponse, UpstreamUnavailable
from edgecache.metrics import Metrics
from edgecache.upstream.client import BlobStream

log = logging.getLogger(__name__)

RESUME_ATTEMPTS = 3
RESUME_BACKOFF = 0.5

DEFAULT_STALL = 120.0  # seconds; the bound for the default timeouts is 89.5

Opener = Callable[[int], Awaitable[BlobStream]]


def stall_bound(upstream: UpstreamConfig) -> float:
    """The longest a healthy download from `upstream` can go without news (see above)."""
    pauses = RESUME_BACKOFF * RESUME_ATTEMPTS * (RESUME_ATTEMPTS + 1) / 2
    return (upstream.read_timeout + pauses + upstream.connect_timeout
            + 2 * upstream.response_timeout + 1.0)


class Download:
    def __init__(self, opener: Opener, start: int, upstream: str, metrics: Metrics) -> None:
        self.pos = start
        self.total: int | None = None
        self._opener = opener
        self._upstream = upstream
        self._metrics = metrics
        self._stream: BlobStream | None = None
        self._skip = 0

    @property
    def source(self) -> str:
        """Where the bytes now come from ("upstream", or a cluster's "peer")."""
        return self._stream.source if self._stream is not None else "upstream"

    async def open(self) -> int | None:
        """First connection; its failure is the caller's (nothing to resume yet)."""
        await self._connect()
        return self.total

    async def _connect(self) -> None:
        stream = await self._opener(self.pos)
        if stream.start > self.pos:
            stream.close()
            raise UpstreamBadResponse(self._upstream, "resumed at a later offset than asked")
        if stream.total is not None:
            if self.total is None:
                self.total = stream.total
            elif stream.total != self.total:
                stream.close()
                raise UpstreamBadResponse(self._upstream, "blob size changed while resuming")
        self._skip = self.pos - stream.start
        self._stream = stream

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        failures = 0
        while True:
            try:
                if self._stream is None:
                    await self._connect()
                assert self._stream is not None
                async for data in self._stream.chunks():
                    if self._skip:
                        cut = min(self._skip, len(data))
                        self._skip -= cut
                        data = data[cut:]
                        if not data:
                            continue
                    self.pos += len(data)
                    if self.total is not None and self.pos > self.total:
                        raise UpstreamBadResponse(self._upstream, "blob longer than announced")
                    yield data
                if self.total is None or self.pos == self.total:
                    return
                raise UpstreamUnavailable(self._upstream, "blob download ended early")
            except UpstreamUnavailable as exc:
                self.close()
                if failures >= RESUME_ATTEMPTS:
                    raise
                failures += 1
                log.info("download from %s broke at %d bytes (%s); resuming", self._upstream,
                         self.pos, exc)
                self._metrics.resumed_downloads.labels(self._upstream).inc()
                await asyncio.sleep(RESUME_BACKOFF * failures)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
