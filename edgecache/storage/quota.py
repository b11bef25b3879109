"""Keeping the cache within its budget: accounting, space reservations, eviction batches.

`used` is exact: the index's sum of sizes at start (after reconciliation), then kept by every
publish and eviction. A blob of known size reserves its bytes before the first one is written;
when no room can be made (everything left is pinned, or the blob is larger than the whole
budget) the reservation is refused and the blob is streamed to clients without being cached.
Eviction runs only when usage crosses the high watermark, never because time passed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import NamedTuple

from edgecache.config import StorageConfig
from edgecache.errors import EdgecacheError
from edgecache.metrics import Metrics
from edgecache.oci import Digest, ImageReference, official_repository
from edgecache.policy import Limits, Usage, budget, bytes_to_free, closure, select_victims
from edgecache.storage.blobs import BlobStore
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


def pinned_digests(index: Index, pins: tuple[str, ...]) -> set[str]:
    """The closure (index → manifests → configs and layers) of every pinned image we hold."""
    roots = []
    for text in pins:
        try:
            ref = ImageReference.parse(text)
        except EdgecacheError:
            continue  # validated at config load; a bad one protects nothing rather than crash
        if ref.digest:
            roots.append(ref.digest)
        elif ref.tag:
            record = index.tag(ref.registry, official_repository(ref.registry, ref.repository),
                               ref.tag)
            if record is not None:
                roots.append(record.digest)
    return closure(roots, index.children)


class Quota:
    def __init__(self, config: StorageConfig, blobs: BlobStore, index: Index,
                 pins: tuple[str, ...], metrics: Metrics,
                 probe: DiskProbe = disk_usage) -> None:
        self._config = config
        self._blobs = blobs
        self._index = index
        self._pins = pins
        self._metrics = metrics
        self._probe = probe
        self.used = index.total_size()
        self.reserved = 0

    def disk(self) -> DiskUsage:
        return self._probe(str(self._blobs.layout.root))

    def limits(self) -> tuple[Limits, Usage]:
        disk = self.disk()
        max_size = (self._config.max_size.resolve(disk.total)
                    if self._config.max_size is not None else None)
        limits = Limits(max_size, self._config.min_free.resolve(disk.total),
                        self._config.high_watermark, self._config.low_watermark)
        return limits, Usage(self.used + self.reserved, disk.free, self.reserved)

    def budget(self) -> int:
        return budget(*self.limits())

    def reserve(self, size: int) -> bool:
        """Reserve room for `size` more bytes, evicting if needed; False if it cannot fit."""
        limits, usage = self.limits()
        need = bytes_to_free(limits, usage, size)
        if need and self._eviction_can_make_room(size, budget(limits, usage)):
            self.evict(need)
            limits, usage = self.limits()
        if usage.cache_bytes + size > budget(limits, usage):
            self._metrics.uncacheable.inc()
            log.info("no room for a blob of %d bytes (budget %d, used %d); serving it uncached",
                     size, budget(limits, usage), usage.cache_bytes)
            return False
        self.reserved += size
        return True

    def _eviction_can_make_room(self, size: int, room: int) -> bool:
        """Whether evicting everything that is not pinned would let `size` fit: otherwise
        evicting would destroy cached images and still leave the blob uncached."""
        if size + self.reserved > room:
            return False
        sizes = self._index.sizes()
        pinned = sum(sizes.get(d, 0) for d in pinned_digests(self._index, self._pins))
        return pinned + self.reserved + size <= room

    def release(self, size: int) -> None:
        self.reserved = max(0, self.reserved - size)

    def added(self, size: int) -> None:
        """A blob or manifest was published."""
        self.used += size

    def check(self) -> int:
        """Evict down to the low watermark if usage is above the high one; bytes freed."""
        need = bytes_to_free(*self.limits())
        return self.evict(need) if need else 0

    def evict(self, need: int) -> int:
        protected = pinned_digests(self._index, self._pins)
        sizes = self._index.sizes()
        victims = select_victims(self._index.entries(), need, protected, self._index.parents,
                                 sizes)
        freed = 0
        for digest in victims:
            self._blobs.remove(Digest.parse(digest))
            freed += sizes.get(digest, 0)
        self._index.forget(victims)
        self.used = max(0, self.used - freed)
        if victims:
            self._metrics.evictions.inc(len(victims))
            self._metrics.evicted_bytes.inc(freed)
            log.info("evicted %d blobs (%d bytes) to free %d bytes; %d bytes pinned",
                     len(victims), freed, need, sum(sizes.get(d, 0) for d in protected))
        elif need:
            log.warning("cache is over its budget by %d bytes but nothing can be evicted "
                        "(pinned: %d bytes)", need, sum(sizes.get(d, 0) for d in protected))
        return freed
