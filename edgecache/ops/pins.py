"""Runtime pins: `edgecache pin`/`unpin`/`pins` act on the running service (`admin.py`).

The config's `pins:` are the declarative base: listed, never removed at runtime (the file
would pin them again at the next start). Runtime pins live in the index's `pins` table
(`storage/pins.py`), so they survive restarts, and eviction protects the union of both, read
from the index at each run (`storage/eviction.py`): nothing here keeps a copy in step.

Pinning an image starts a job that fetches what is not yet held, through the service's own
pull path (`airgap/selfpull.py`, the code `edgecache warm` runs); a job records an event per
blob as it lands, which the admin API streams to a CLI that waits. Jobs belong to `Pinning`,
not to the request that started them: a CLI that goes away (or `--no-wait`) leaves the fetch
running; `close()` cancels and awaits them at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from edgecache.airgap.platform import Platform
from edgecache.airgap.selfpull import SelfPull
from edgecache.config import Config
from edgecache.errors import EdgecacheError
from edgecache.imagerefs import reference_problem
from edgecache.oci import ImageReference, official_repository
from edgecache.ops.prefetch import QuietProgress
from edgecache.storage import pins as rows
from edgecache.storage.index import Index

log = logging.getLogger(__name__)

MAX_EVENTS = 4096  # per job: a huge image's per-blob lines are bounded too
MAX_JOBS = 1024  # ended jobs kept for `pins` to show a failure; more are forgotten


@dataclass
class PinJob:
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


class Pinning:
    def __init__(self, index: Index, config: Config, puller: SelfPull) -> None:
        self._index = index
        self._config = config
        self._puller = puller
        self._jobs: dict[str, PinJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def problems(self, texts: Sequence[object]) -> list[str]:
        return [why for text in texts
                if (why := reference_problem(text, self._config.upstreams)) is not None]

    def pin(self, texts: Sequence[str], platforms: Sequence[Platform] = ()) -> list[PinJob]:
        """Record the pins (checked first: `problems`) and fetch each; its job, running or
        new. A config pin is pinned already: it is fetched all the same when asked."""
        runtime = [t for t in texts if t not in self._config.pins]
        rows.add(self._index, runtime)
        return [self._start(text, tuple(platforms)) for text in dict.fromkeys(texts)]

    def unpin(self, texts: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """Removed pins, and the refused ones with why (one line each)."""
        refused = {t: "pinned by the config (pins:); remove it there" for t in texts
                   if t in self._config.pins}
        removed = rows.remove(self._index, [t for t in texts if t not in refused])
        for text in removed:
            if (job := self._jobs.get(text)) is not None and job.done:
                del self._jobs[text]
        for text in texts:
            if text not in refused and text not in removed:
                refused[text] = "not pinned"
        return removed, refused

    def listing(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = [
            {"reference": text, "source": "config", "added_at": None, **self._state(text)}
            for text in self._config.pins]
        out += [{"reference": row.reference, "source": "runtime", "added_at": row.added_at,
                 **self._state(row.reference)} for row in rows.rows(self._index)
                if row.reference not in self._config.pins]
        return out

    def _state(self, text: str) -> dict[str, object]:
        job = self._jobs.get(text)
        if job is not None and not job.done:
            return {"state": "fetching", "blobs": job.landed, "total": job.blobs}
        held = self._held(text)
        if job is not None and job.error and not held:
            return {"state": "failed", "error": job.error}
        return {"state": "held" if held else "not held"}

    def _held(self, text: str) -> bool:
        """Whether the image's top manifest is in the store (what a pin then protects)."""
        try:
            ref = ImageReference.parse(text)
        except EdgecacheError:
            return False
        digest = ref.digest
        if digest is None and ref.tag is not None:
            record = self._index.tag(ref.registry,
                                     official_repository(ref.registry, ref.repository), ref.tag)
            digest = record.digest if record is not None else None
        return digest is not None and self._index.media_type(digest) is not None

    def _start(self, text: str, platforms: tuple[Platform, ...]) -> PinJob:
        job = self._jobs.get(text)
        if job is not None and not job.done:
            return job
        if len(self._jobs) >= MAX_JOBS:
            self._jobs = {k: j for k, j in self._jobs.items() if not j.done}
        job = self._jobs[text] = PinJob(text)
        task = asyncio.create_task(self._fetch(job, platforms), name=f"pin {text}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _fetch(self, job: PinJob, platforms: tuple[Platform, ...]) -> None:
        try:
            results = await self._puller.pull([job.reference], _JobProgress(job), platforms)
            job.error = results[0].error
        except (EdgecacheError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            job.error = str(exc) or type(exc).__name__
        finally:
            job.done = True
            if job.error:
                log.warning("pin %s: fetching failed: %s", job.reference, job.error)
            job.record({"event": "done", "reference": job.reference, "error": job.error,
                        "held": self._held(job.reference)})

    async def close(self) -> None:
        """At shutdown, before the listeners' clients and the index close."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
