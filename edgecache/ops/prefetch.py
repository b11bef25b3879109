"""The `prefetch:` schedule: images kept fresh ahead of need.

Every `prefetch.interval`, each image's tag is asked of its upstream (a HEAD: Docker Hub does
not count those against the pull limit); what it names now is fetched by digest through the
service's own pull path (`airgap/selfpull.py`, as `edgecache warm` does: verified, single-flight
with clients, within quota), and only then is the tag recorded as naming it. So a moved tag is
fetched before the first pull that asks, and that pull is answered from the cache. Fetching by
digest also puts back whatever eviction took of the image since the last pass (the HEADs of
blobs already held cost a loopback round trip each, no upstream request).

Never starving live pulls: at most `prefetch.concurrency` blob transfers at a time (and they
count toward `limits.max_downloads` like any download), and with `prefetch.bandwidth` each blob
starts only when the bytes already started, at that rate, would be done (`Pacer`): a bound on
the average. A single blob is read at the link's speed: its download is the ordinary fill a
client may join, and throttling it would slow that client too.

The task belongs to `app.py`'s components, cancelled and awaited at shutdown before the
upstream clients and the index close.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable, Mapping

import aiohttp

from edgecache.airgap.progress import Progress
from edgecache.airgap.selfpull import NotListening, SelfPull
from edgecache.errors import EdgecacheError
from edgecache.oci import ImageReference, official_repository
from edgecache.ops.prefetchsettings import PrefetchConfig, PrefetchImage
from edgecache.proxy.manifests import parse_upstream_digest
from edgecache.storage.store import Store
from edgecache.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

RETRY_FIRST = 0.5  # the listener is not up yet at start: try again soon, then back off


class Pacer:
    """Blob starts spaced so the bytes started never run ahead of `rate` per second."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._clock = clock
        self._next = clock()

    def delay(self, size: int) -> float:
        """Seconds to wait before a blob of `size` bytes starts; books its bytes."""
        now = self._clock()
        start = max(now, self._next)
        self._next = start + size / self._rate
        return start - now

    async def __call__(self, size: int) -> None:
        wait = self.delay(size)
        if wait > 0:
            await asyncio.sleep(wait)  # the pacing itself, not a stand-in for an event


class QuietProgress(Progress):
    """Warm's progress with nowhere to draw: the schedule reports in the log, per image (and a
    pin job in its events: `pinning.py`)."""

    def __init__(self, verb: str) -> None:
        super().__init__(verb, "images", io.StringIO(), tty=False)

    def refresh(self, force: bool = False) -> None:
        return None

    def finish(self) -> None:
        return None


class Prefetcher:
    def __init__(self, config: PrefetchConfig, clients: Mapping[str, UpstreamClient],
                 store: Store, puller: SelfPull) -> None:
        self._config = config
        self._clients = clients
        self._store = store
        self._puller = puller
        self._pace = Pacer(config.bandwidth) if config.bandwidth else None
        self.passes = 0

    async def run(self) -> None:
        """Forever, one pass per interval (owned and cancelled by app.py)."""
        retry = RETRY_FIRST
        while True:
            try:
                await self.refresh()
            except NotListening:
                await asyncio.sleep(min(retry, self._config.interval))
                retry *= 2
                continue
            retry = RETRY_FIRST
            self.passes += 1
            await asyncio.sleep(self._config.interval)

    async def refresh(self) -> None:
        """One pass over the images, one at a time (each image's blobs `concurrency` wide)."""
        for image in self._config.images:
            try:
                await self._refresh(image)
            except NotListening:
                raise
            except (EdgecacheError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("prefetch %s: %s", image.reference, exc)

    async def _refresh(self, image: PrefetchImage) -> None:
        ref = ImageReference.parse(image.reference)  # checked at config load
        assert ref.tag is not None
        repository = official_repository(ref.registry, ref.repository)
        info = await self._clients[ref.registry].head_manifest(repository, ref.tag)
        digest = parse_upstream_digest(ref.registry, info.digest)
        wanted = f"{ref.registry}/{ref.repository}" + (f"@{digest}" if digest else f":{ref.tag}")
        progress = QuietProgress("prefetching")
        results = await self._puller.pull([wanted], progress, image.platforms,
                                          self._config.concurrency, self._pace)
        if results[0].error:
            raise EdgecacheError(results[0].error)
        if digest is not None:
            record = self._store.tag(ref.registry, repository, ref.tag)
            if record is None or record.digest != digest:
                log.info("prefetch %s: now %s", image.reference, digest)
            self._store.set_tag(ref.registry, repository, ref.tag, digest)
