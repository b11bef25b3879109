"""One pinned image's fetch, kept trying until the image is held.

A pin means "this image will be held", so a fetch that fails (the upstream down, a timeout,
the service stopped in the middle) is not the end of it: `PinFetch` tries again after a
backoff (`RETRY_FIRST` doubling to `RETRY_MAX`), and ends only once the image is held (or when
its owner, `Pinning`, cancels it: an unpin, shutdown). The owner starts one for every pin not
fully held at start and for every `edgecache pin`; asking again while it waits out a backoff
tries at once (`now`).

Each attempt is a `PinJob`: the events of one pull through the service's own listener
(`airgap/selfpull.py`, which waits until every listener listens), streamed by the admin API to
a CLI that waits for that attempt and no longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from edgecache.airgap.platform import Platform
from edgecache.airgap.selfpull import SelfPull
from edgecache.errors import EdgecacheError
from edgecache.ops.prefetch import QuietProgress

log = logging.getLogger(__name__)

MAX_EVENTS = 4096  # per job: a huge image's per-blob lines are bounded too
RETRY_FIRST = 30.0  # an upstream back after a blip is tried again soon,
RETRY_MAX = 1800.0  # one down for a day costs 48 tries, not thousands


@dataclass
class PinJob:
    """One attempt at fetching a pinned image."""

    reference: str
    events: list[dict[str, object]] = field(default_factory=list)
    blobs: int = 0  # discovered so far
    landed: int = 0
    done: bool = False
    error: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, event: dict[str, object]) -> None:
        if len(self.events) < MAX_EVENTS or event["event"] == "done":
            self.events.append(event)
        self.changed.set()
        self.changed = asyncio.Event()  # the old one wakes who waited; new waiters wait anew


class _JobProgress(QuietProgress):
    """Warm's progress, as events of one job instead of a bar on a terminal."""

    def __init__(self, job: PinJob) -> None:
        super().__init__("pinning")
        self._job = job

    def add_total(self, nbytes: int = 0, items: int = 0) -> None:
        super().add_total(nbytes, items)
        if not items:  # warm adds a blob's size once, when it first meets the blob
            self._job.blobs += 1

    def blob_done(self, digest: str, size: int, fetched: bool) -> None:
        self._job.landed += 1
        self._job.record({"event": "blob", "reference": self._job.reference, "digest": digest,
                          "size": size, "fetched": fetched, "done": self._job.landed,
                          "total": self._job.blobs})


def backoff(failures: int, first: float = RETRY_FIRST, most: float = RETRY_MAX) -> float:
    """Seconds before the next try after `failures` failed ones in a row (1: `first`)."""
    return min(most, first * 2.0 ** min(max(failures - 1, 0), 32))


class PinFetch:
    """A pin's attempts until its image is held; `held` is the owner's rule for that."""

    def __init__(self, reference: str, platforms: tuple[Platform, ...], puller: SelfPull,
                 held: Callable[[], bool], retry: tuple[float, float] = (RETRY_FIRST, RETRY_MAX)
                 ) -> None:
        self.reference = reference
        self.platforms = platforms
        self.job = PinJob(reference)  # the attempt running, or the last one
        self.failures = 0
        self.retry_at: float | None = None  # Unix time of the next try while waiting for it
        self._puller = puller
        self._held = held
        self._retry = retry
        self._wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"pin {reference}")

    def now(self, platforms: tuple[Platform, ...]) -> PinJob:
        """Asked again (`edgecache pin`): the attempt running, or a new one at once."""
        if self.job.done:
            self.platforms = platforms
            self.job = PinJob(self.reference)
            self._wake.set()
        return self.job

    def state(self) -> dict[str, object]:
        if not self.job.done:
            return {"state": "fetching", "blobs": self.job.landed, "total": self.job.blobs,
                    "failures": self.failures}
        return {"state": "failed", "error": self.job.error, "failures": self.failures,
                "next_retry": self.retry_at}

    async def _run(self) -> None:
        """Ends once held; each wait is bounded by the backoff (or cut short by `now`)."""
        try:
            while True:
                await self._attempt(self.job)
                if self._held():
                    self._end(self.job, held=True)
                    return
                self.failures += 1
                delay = backoff(self.failures, *self._retry)
                self.retry_at = time.time() + delay
                self._end(self.job, next_retry=self.retry_at)
                log.warning("pin %s: not held (%s); trying again in %.0fs", self.reference,
                            self.job.error, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                self._wake.clear()
                self.retry_at = None
                if self.job.done:  # the backoff ran out (else `now` made the next job)
                    self.job = PinJob(self.reference)
        except asyncio.CancelledError:
            if not self.job.done:
                self.job.error = "stopped (unpinned, or the service is stopping)"
                self._end(self.job)
            raise

    async def _attempt(self, job: PinJob) -> None:
        try:
            results = await self._puller.pull([job.reference], _JobProgress(job),
                                              self.platforms)
            job.error = results[0].error or None
        except (EdgecacheError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            job.error = str(exc) or type(exc).__name__

    def _end(self, job: PinJob, held: bool = False, next_retry: float | None = None) -> None:
        if not held and job.error is None:
            job.error = "fetched, but the image is not held in full"
        job.error = None if held else job.error
        job.done = True
        job.record({"event": "done", "reference": job.reference, "error": job.error,
                    "held": held, "next_retry": next_retry})
