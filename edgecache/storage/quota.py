"""Keeping the cache within its budget: accounting, space reservations, eviction batches.

`used` is the index's sum of sizes at start (after reconciliation), then kept by every publish
and eviction here, and re-read from the index (one row) by every janitor pass: `edgecache
import` publishes, and may evict, from another process. A blob of known size reserves its bytes
before the first one is written; when no room can be made (everything left is pinned, or the
blob is larger than the whole budget) the reservation is refused and the blob is streamed to
clients without being cached.
Eviction runs only when usage crosses the high watermark, never because time passed, and never
on the event loop: `storage/eviction.py` runs it in a child process, one run at a time. A
reservation that needs room awaits it; `check()` after a publish only asks for it, and the
janitor (app.py) runs it. Nothing on the loop here grows with the store: the index keeps its
totals (flushing access times before an eviction costs what was accessed since the last flush).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from edgecache import children
from edgecache.config import StorageConfig
from edgecache.errors import StorageError
from edgecache.metrics import Metrics
from edgecache.policy import Limits, Usage, budget, bytes_to_free
from edgecache.storage.blobs import BlobStore
from edgecache.storage.eviction import Evicted
from edgecache.storage.index import Index

log = logging.getLogger(__name__)


class DiskUsage(NamedTuple):
    total: int
    free: int


DiskProbe = Callable[[str], DiskUsage]


def disk_usage(path: str) -> DiskUsage:
    """Size and space available to unprivileged writers (what psutil.disk_usage reports)."""
    st = os.statvfs(path)
    return DiskUsage(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)


class Quota:
    def __init__(self, config: StorageConfig, blobs: BlobStore, index: Index,
                 pins: tuple[str, ...], metrics: Metrics,
                 probe: DiskProbe = disk_usage, local: str | None = None) -> None:
        self._config = config
        self._blobs = blobs
        self._index = index
        self._pins = pins
        self._metrics = metrics
        self._probe = probe
        self._local = local  # the local registry's name: its content is never evicted
        self.used = index.total_size()
        self.reserved = 0
        self.wanted = asyncio.Event()  # set when a publish crossed the high watermark
        self._evicting = asyncio.Lock()

    def disk(self) -> DiskUsage:
        return self._probe(str(self._blobs.layout.root))

    def limits(self) -> tuple[Limits, Usage]:
        disk = self.disk()
        max_size = (self._config.max_size.resolve(disk.total)
                    if self._config.max_size is not None else None)
        limits = Limits(max_size, self._config.min_free.resolve(disk.total),
                        self._config.high_watermark, self._config.low_watermark)
        return limits, Usage(self.used + self.reserved, disk.free, self.reserved)

    def room(self) -> int:
        """Free bytes above min_free not promised to a download (what a push may write)."""
        limits, usage = self.limits()
        return max(0, usage.fs_free - limits.min_free - self.reserved)

    def budget(self) -> int:
        return budget(*self.limits())

    def watermarks(self) -> tuple[int, int]:
        """(high, low) in bytes: where eviction starts and where it stops, for the gauges."""
        limits, usage = self.limits()
        total = budget(limits, usage)
        return int(total * limits.high_watermark), int(total * limits.low_watermark)

    async def reserve(self, size: int) -> bool:
        """Reserve room for `size` more bytes, evicting if needed; False if it cannot fit."""
        await self._make_room(size)
        limits, usage = self.limits()
        if usage.cache_bytes + size > budget(limits, usage):
            self._metrics.uncacheable.inc()
            log.info("no room for a blob of %d bytes (budget %d, used %d); serving it uncached",
                     size, budget(limits, usage), usage.cache_bytes)
            return False
        self.reserved += size
        return True

    def release(self, size: int) -> None:
        self.reserved = max(0, self.reserved - size)

    def added(self, size: int) -> None:
        """A blob or manifest was published."""
        self.used += size

    def check(self) -> int:
        """Bytes to evict now (0 below the high watermark); when above, ask for an eviction,
        which the janitor runs (`enforce`): a publish does not wait for it."""
        need = bytes_to_free(*self.limits())
        if need:
            self.wanted.set()
        return need

    async def enforce(self) -> int:
        """Evict down to the low watermark if usage is above the high one; bytes freed."""
        self.wanted.clear()
        return await self._make_room(0)

    async def _make_room(self, incoming: int) -> int:
        """One eviction at a time; what is needed is worked out once the previous one is done
        (a reservation that waited for it may need nothing more)."""
        async with self._evicting:
            limits, usage = self.limits()
            need = bytes_to_free(limits, usage, incoming)
            if not need:
                if not incoming:  # below the high watermark: no eviction falls short
                    self._metrics.eviction_shortfall.set(0)
                return 0
            allowance = None
            if incoming:  # evict only if that lets the blob fit; pins are checked off the loop
                allowance = budget(limits, usage) - self.reserved - incoming
                if allowance < 0:
                    return 0
            self._index.flush_access()  # pending access times count before anything is chosen
            try:
                result = await _evict(self._blobs.layout.root, self._pins, need, allowance,
                                      self._local)
            except StorageError as exc:  # the blob may still fit, or is served uncached
                log.error("%s", exc)
                self._metrics.eviction_shortfall.set(need)
                return 0
            self._account(result, need)
            return result.freed

    def _account(self, result: Evicted, need: int) -> None:
        self.used = max(0, self.used - result.freed)
        self._metrics.eviction_shortfall.set(max(0, need - result.freed))
        if result.count:
            self._metrics.evictions.inc(result.count)
            self._metrics.evicted_bytes.inc(result.freed)
            log.info("evicted %d blobs (%d bytes) to free %d bytes in %.3fs; %d bytes pinned",
                     result.count, result.freed, need, result.seconds, result.pinned)
        elif need and not result.refused:
            log.warning("cache is over its budget by %d bytes but nothing can be evicted "
                        "(pinned: %d bytes)", need, result.pinned)


async def _evict(root: Path, pins: tuple[str, ...], need: int, allowance: int | None,
                 local: str | None = None) -> Evicted:
    """Run one eviction in a child process and wait for it. Cancelled (shutdown), it stops the
    child (SIGTERM: it finishes the batch in progress) and waits for it: nothing of the run
    outlives its owner."""
    request = {"root": str(root), "pins": list(pins), "need": need, "allowance": allowance,
               "local": local}
    try:
        done = await children.run("edgecache.storage.eviction", request)
    except OSError as exc:
        raise StorageError(f"cannot start the eviction: {exc.strerror or exc}") from exc
    try:
        return Evicted(**json.loads(done.out))
    except (ValueError, TypeError) as exc:
        raise StorageError(f"eviction failed (exit {done.returncode}): {done.last_line}"
                           ) from exc

