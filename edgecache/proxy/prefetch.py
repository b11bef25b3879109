"""Layer prefetch: when a client first pulls an image manifest (a cache miss), its config and
layers start downloading at once, in parallel, ahead of the client's own blob requests.

A client reads the manifest, then asks for the blobs it lacks, a few at a time (containerd
three, Docker three); behind a long link each ask costs a round trip before its bytes start. A
prefetched blob is an ordinary `Fill` (the one download per digest): the client's own request
joins it when it comes, and it ends in the one publish. It is started only with a download slot
free (`limits.max_downloads`), never queued: a prefetch never makes a live pull wait for a slot,
nor pushes it into 429. A blob already held, already downloading or known absent is skipped.
Only image manifests: an index names platform manifests, whose own first pull prefetches the
layers of the platform the client chose.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from edgecache.errors import EdgecacheError, NotFound
from edgecache.oci import DOCKER_MANIFEST, OCI_MANIFEST, Digest, manifest_children
from edgecache.proxy.fill import Fills
from edgecache.proxy.lookups import Lookups
from edgecache.proxy.manifests import ManifestAnswer
from edgecache.proxy.negative import Key
from edgecache.proxy.routing import Target
from edgecache.proxy.sources import Direct, GetCall, Sources
from edgecache.storage.store import Store
from edgecache.upstream.client import BlobStream, UpstreamClient

log = logging.getLogger(__name__)

IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
Download = Callable[[UpstreamClient, str, "str | Digest", "GetCall | None"],
                   Awaitable[ManifestAnswer]]


def image_blobs(answer: ManifestAnswer) -> list[Digest]:
    """The config and layers of an image manifest (none for an index or anything else)."""
    if answer.body is None or answer.media_type not in IMAGE_TYPES:
        return []
    try:
        return [Digest.parse(d) for d in manifest_children(answer.body)]
    except EdgecacheError:
        return []


class LayerPrefetch:
    def __init__(self, fills: Fills, store: Store, sources: Sources | None = None) -> None:
        self._fills = fills
        self._store = store
        self._sources = sources or Direct()  # a cluster's: its fills ask the site first

    def after(self, download: Download, lookups: Lookups) -> Download:
        """`download` (the service's manifest fetch, a miss), then its blobs' fills."""
        async def fetch(client: UpstreamClient, repository: str, reference: str | Digest,
                        get: GetCall | None = None) -> ManifestAnswer:
            answer = await download(client, repository, reference, get)
            self.start(answer, client, repository, lookups)
            return answer
        return fetch

    def start(self, answer: ManifestAnswer, client: UpstreamClient, repository: str,
              lookups: Lookups) -> int:
        """Start the fills of the manifest's blobs that nobody has or fetches; how many."""
        started = 0
        for digest in image_blobs(answer):
            if self._fills.in_flight >= self._fills.max_fills // 2:  # a free slot only
                break
            if self._fills.get(digest) is not None or self._store.blob(digest) is not None:
                continue
            key: Key = (client.name, repository, "blobs", str(digest))
            try:
                lookups.check(key)
                self._fills.start(digest, client.name, self._sources.opener(
                    Target(client.name, repository, "blobs", str(digest), digest),
                    _opener(client, key, lookups)))
            except NotFound:
                continue  # the upstream said it has no such blob, a moment ago
            except EdgecacheError as exc:  # the bound was reached: the client's ask will do
                log.debug("layer prefetch of %s not started: %s", digest, exc)
                break
            started += 1
        return started


def _opener(client: UpstreamClient, key: Key, lookups: Lookups
            ) -> Callable[[int], Awaitable[BlobStream]]:
    """The blob's GET on the route, as the service's own (a 404 remembered on arrival)."""
    async def opener(offset: int) -> BlobStream:
        return await lookups.guard(key, client.open_blob(key[1], key[3], offset))
    return opener
