"""Layer prefetch: when a client first pulls an image manifest (a cache miss), its config and
layers start downloading ahead of the client's own blob requests, a few at a time.

A prefetched blob is an ordinary `Fill` (the one download per digest): the client's own request
joins it when it comes, and it ends in the one publish. Only image manifests: an index names
platform manifests, whose own first pull prefetches the layers of the platform the client chose.

The schedule (bench/results/prefetch-2026-12-02b.md has the model and the figures): the config
first (a client reads it before any layer), then the layers largest first, at most `WIDTH` of
the image's blobs downloading at once (the client's own fills count), the next started as one
ends, whatever the client is doing: what it saves is the client's gap between one blob and the
next (its own work per blob, the next request's round trips). Largest first puts the pull's
critical path at the front; 4 at a time keeps it at its flow's full rate where each connection
is bounded (every blob at once shares the link so finely that the largest layer, which ends the
pull, runs slower: 1.06x in the model).

A blob is started only with a download slot free (`limits.max_downloads`), never queued: a
prefetch never makes a live pull wait for a slot, nor pushes it into 429. A blob already held,
already downloading or known absent is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edgecache.errors import EdgecacheError, NotFound
from edgecache.oci import DOCKER_MANIFEST, OCI_MANIFEST, Digest, manifest_document
from edgecache.proxy.fill import Fill, Fills
from edgecache.proxy.lookups import Lookups
from edgecache.proxy.manifests import ManifestAnswer
from edgecache.proxy.negative import Key
from edgecache.proxy.routing import Target
from edgecache.proxy.sources import Direct, GetCall, Sources
from edgecache.storage.store import Store
from edgecache.upstream.client import BlobStream, UpstreamClient

log = logging.getLogger(__name__)

IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
WIDTH = 4  # an image's blobs downloading at once: containerd's and Docker's 3, plus one
Download = Callable[[UpstreamClient, str, "str | Digest", "GetCall | None"],
                    Awaitable[ManifestAnswer]]


def image_blobs(answer: ManifestAnswer) -> list[Digest]:
    """The config, then the layers largest first (a stable order among equal sizes); none for
    an index or anything else."""
    if answer.body is None or answer.media_type not in IMAGE_TYPES:
        return []
    try:
        doc = manifest_document(answer.body)
    except EdgecacheError:
        return []
    layers = doc.get("layers")
    found = [_sized(doc.get("config"))] + [
        _sized(item) for item in sorted(layers if isinstance(layers, list) else [],
                                        key=lambda item: -_size(item))]
    return [digest for digest in found if digest is not None]


def _size(item: object) -> int:
    size = item.get("size") if isinstance(item, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) else 0


def _sized(item: object) -> Digest | None:
    text = item.get("digest") if isinstance(item, dict) else None
    try:
        return Digest.parse(text) if isinstance(text, str) else None
    except EdgecacheError:
        return None


@dataclass
class _Image:
    """One manifest's schedule: its blobs in order, and those not yet considered."""
    client: UpstreamClient
    repository: str
    lookups: Lookups
    blobs: list[Digest]
    pending: list[Digest]


class LayerPrefetch:
    """Owns each image's schedule task (`close` cancels and awaits them, before `Fills.close`:
    a schedule would otherwise start fills after the downloads were closed)."""

    def __init__(self, fills: Fills, store: Store, sources: Sources | None = None,
                 width: int = WIDTH) -> None:
        self._fills = fills
        self._store = store
        self._sources = sources or Direct()  # a cluster's: its fills ask the site first
        self._width = width
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def after(self, download: Download, lookups: Lookups) -> Download:
        """`download` (the service's manifest fetch, a miss), then its blobs' schedule."""
        async def fetch(client: UpstreamClient, repository: str, reference: str | Digest,
                        get: GetCall | None = None) -> ManifestAnswer:
            answer = await download(client, repository, reference, get)
            self.start(answer, client, repository, lookups)
            return answer
        return fetch

    def start(self, answer: ManifestAnswer, client: UpstreamClient, repository: str,
              lookups: Lookups) -> int:
        """Start the first of the manifest's blobs, and the schedule that starts the rest as
        they end; how many started now."""
        blobs = image_blobs(answer)
        if self._closed or not blobs:
            return 0
        image = _Image(client, repository, lookups, blobs, list(blobs))
        before = self._fills.in_flight
        if self._top_up(image):
            task = asyncio.create_task(self._follow(image), name=f"layer prefetch {answer.digest}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return self._fills.in_flight - before

    async def close(self) -> None:
        """At shutdown, before the fills close: no schedule starts a download after that."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _follow(self, image: _Image) -> None:
        """Each time one of the image's downloads ends, the next; until none is left."""
        try:
            while running := self._top_up(image):
                await _first_end(running)
        except Exception:  # a task's guard: a defect ends this schedule, logged, not unheard
            log.exception("layer prefetch of %s stopped", image.repository)

    def _top_up(self, image: _Image) -> list[Fill]:
        """Start pending blobs in order until `width` of the image's blobs download (a slot
        free for each); the image's downloads now running, none once nothing is left to do."""
        running = [f for d in image.blobs if (f := self._fills.get(d)) is not None and not f.ended]
        while image.pending and len(running) < self._width and not self._closed:
            if self._fills.in_flight >= self._fills.max_fills // 2:  # a free slot only
                break  # none now: perhaps when one of ours ends
            digest = image.pending.pop(0)
            if self._fills.get(digest) is not None or self._store.blob(digest) is not None:
                continue  # held, or downloading (then counted in `running` already)
            client = image.client
            key: Key = (client.name, image.repository, "blobs", str(digest))
            try:
                image.lookups.check(key)
                running.append(self._fills.start(digest, client.name, self._sources.opener(
                    Target(client.name, image.repository, "blobs", str(digest), digest),
                    _opener(client, key, image.lookups))))
            except NotFound:
                continue  # the upstream said it has no such blob, a moment ago
            except EdgecacheError as exc:  # the bound was reached: the client's ask will do
                log.debug("layer prefetch of %s not started: %s", digest, exc)
                break
        return running if image.pending else []


async def _first_end(fills: list[Fill]) -> None:
    """Until one of `fills` has ended (done, failed or bypassed)."""
    waits = [asyncio.ensure_future(_ended(fill)) for fill in fills]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def _ended(fill: Fill) -> None:
    """Bounded by the fill itself: every download ends within its upstream's timeouts."""
    while not fill.ended:
        with contextlib.suppress(EdgecacheError):  # a stall or a queue wait: keep waiting
            await fill.changed()


def _opener(client: UpstreamClient, key: Key, lookups: Lookups
            ) -> Callable[[int], Awaitable[BlobStream]]:
    """The blob's GET on the route, as the service's own (a 404 remembered on arrival)."""
    async def opener(offset: int) -> BlobStream:
        return await lookups.guard(key, client.open_blob(key[1], key[3], offset))
    return opener
