"""Questions to an upstream about whether it has something, asked once and answered alike.

Identical concurrent questions (a blob or manifest HEAD for the same upstream, repository and
reference) share one request, and a confirmed 404 is remembered for a while (`Absences`), so
absent content does not turn every client request into an upstream request. The key always
holds the upstream and the repository: one route's answer never stands for another's.

Every "not there" leaves here in one form per kind, whatever the upstream said and whichever
request found out (a HEAD for a claim check, a GET for a download, the memory): the message a
client gets must not tell a public route whether a private upstream's content is cached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from edgecache.errors import BlobUnknown, ManifestUnknown, NotFound
from edgecache.metrics import Metrics
from edgecache.proxy.negative import Absences, Key
from edgecache.proxy.singleflight import SingleFlight
from edgecache.upstream.client import ManifestInfo, UpstreamClient

V = TypeVar("V")


def absent(key: Key) -> NotFound:
    """The one answer for content `key`'s upstream does not have (a fresh exception each
    time: a shared one would grow its traceback on every raise)."""
    upstream, _, kind, _ = key
    if kind == "blobs":
        return BlobUnknown(f"blob unknown to upstream {upstream}")
    return ManifestUnknown(f"manifest unknown to upstream {upstream}")


class Lookups:
    def __init__(self, absences: Absences, metrics: Metrics) -> None:
        self._absences = absences
        self._metrics = metrics
        self._blob_heads: SingleFlight[Key, int | None] = SingleFlight()
        self._manifest_heads: SingleFlight[Key, ManifestInfo] = SingleFlight()

    async def close(self) -> None:
        """At shutdown: end the HEADs in flight before the clients they use close."""
        await asyncio.gather(self._blob_heads.close(), self._manifest_heads.close())

    def check(self, key: Key) -> None:
        """Raise the 404 without asking when the upstream said so recently."""
        if self._absences.known(key):
            self._metrics.negative_hits.labels(key[0]).inc()
            raise absent(key)

    async def guard(self, key: Key, call: Awaitable[V], remember: bool = True) -> V:
        """Await an upstream question about `key`; a 404 is remembered (unless told not to)
        and leaves in the one form."""
        try:
            result = await call
        except NotFound:
            if remember:
                self._absences.remember(key)
            raise absent(key) from None
        self._absences.forget(key)
        return result

    async def head_blob(self, client: UpstreamClient, repository: str, digest: str) -> int | None:
        key = (client.name, repository, "blobs", digest)
        self.check(key)
        return await self.guard(key, self._blob_heads.run(
            key, lambda: client.head_blob(repository, digest)))

    async def head_manifest(self, client: UpstreamClient, repository: str,
                            reference: str) -> ManifestInfo:
        key = (client.name, repository, "manifests", reference)
        self.check(key)
        return await self.guard(key, self._manifest_heads.run(
            key, lambda: client.head_manifest(repository, reference)))
