"""The cache rules, each small enough to read at once.

- A manifest by digest is answered locally when cached; the upstream is asked only otherwise.
- A tag confirmed within `cache.tag_ttl` is answered from cache without asking anyone. An older
  one is revalidated with an upstream HEAD (Docker Hub does not count HEADs against its pull
  limit); the manifest body is fetched only when its digest is not cached. When the upstream
  cannot answer (or is marked down, or has not answered within `cache.revalidate_timeout`) and
  the tag is cached, the cached digest is served (stale-if-error); a late answer still updates
  the index in the background. Once an upstream has left a request unanswered (that timeout, or
  its own response timeout) it is suspect until it next answers anything: cached tags on it are
  then served at once while their HEAD goes on in the background, so a black hole costs the
  first request `revalidate_timeout`, not every request until it is marked down (threshold x
  response_timeout). Uncached tags still wait: there is nothing else to give.
- A blob is served from disk when cached, else every request joins the digest's one `Fill`; a
  HEAD of anything uncached asks the upstream without downloading (a cache may chain behind).
- Manifests are kept by `proxy/manifests.py`: byte-exact, after their digest is checked.
- Everything shared between requests passes the claim check (`proxy/claims.py`) before it
  answers a route: cached content, a download another request started, a size. Upstream work a
  request waits for is keyed by upstream and repository (manifest fetches, HEADs), or, for a
  blob download (one per digest), joined only after the claim check; a joiner whose download
  fails for another route's reason (another upstream, another repository's 404) asks its own.
- Absent content: concurrent identical questions share one upstream request and a confirmed 404
  is remembered for `cache.negative_ttl` (`proxy/lookups.py`); never for a cached tag.
- A tag list is the upstream's (sorted and paged by `proxy/tags.py`), or the tags the index
  knows when the upstream cannot answer (stale); referrers are the upstream's answer, kept and
  revalidated as a tag is, or its referrers tag schema (`proxy/referrers.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from edgecache.config import CacheConfig
from edgecache.errors import EdgecacheError, NotFound, UpstreamAuthError, UpstreamError
from edgecache.metrics import Metrics
from edgecache.oci import Digest
from edgecache.proxy.claims import Claims
from edgecache.proxy.fill import Fill, FillReader, Fills
from edgecache.proxy.lookups import Lookups, absent
from edgecache.proxy.manifests import ManifestAnswer, Manifests, parse_upstream_digest
from edgecache.proxy.negative import Absences, Key
from edgecache.proxy.referrers import ReferrerLists, Referrers
from edgecache.proxy.routing import Target
from edgecache.proxy.singleflight import SingleFlight
from edgecache.proxy.sources import Direct, Sources
from edgecache.proxy.tags import TagPage, TagQuery, page, upstream_page
from edgecache.storage.store import Store, Stored
from edgecache.upstream.client import ManifestInfo, UpstreamClient

if TYPE_CHECKING:
    from edgecache.proxy.prefetch import LayerPrefetch  # imported when configured

__all__ = ["BlobAnswer", "ManifestAnswer", "RegistryService"]

log = logging.getLogger(__name__)

JOIN_ATTEMPTS = 3  # a joined download that failed for another route, then one of our own


@dataclass(frozen=True, slots=True)
class BlobAnswer:
    digest: Digest
    size: int | None
    stored: Stored | None = None  # cached: `stored.open()` reads it
    reader: FillReader | None = None  # a download in progress
    source: str = "cache"
    joined: bool = False  # True when this reader joined a download another request started


class RegistryService:
    def __init__(self, store: Store, upstreams: Mapping[str, UpstreamClient], fills: Fills,
                 metrics: Metrics, cache: CacheConfig | None = None,
                 private: frozenset[str] = frozenset(), layers: LayerPrefetch | None = None,
                 sources: Sources | None = None) -> None:
        self._cache = cache or CacheConfig()
        self._sources = sources or Direct()  # a cluster's: the site before the upstream
        self._store = store
        self._upstreams = upstreams
        self._fills = fills
        self._metrics = metrics
        self._manifests = Manifests(store, metrics)
        self._lookups = Lookups(Absences(self._cache.negative_ttl), metrics)
        self._download = (self._manifests.download if layers is None  # `prefetch.layers`
                          else layers.after(self._manifests.download, self._lookups))
        self._claims = Claims(store, self._lookups, private)
        self._manifest_fetches: SingleFlight[Key, ManifestAnswer] = SingleFlight()
        self._tag_heads: SingleFlight[tuple[str, ...], ManifestInfo] = SingleFlight()
        self._referrers = ReferrerLists(store, upstreams, self._cache, metrics, self.manifest)

    async def close(self) -> None:
        """At shutdown, before the clients and index they use close: end background flights."""
        await asyncio.gather(self._manifest_fetches.close(), self._tag_heads.close(),
                             self._lookups.close(), self._referrers.close())

    async def manifest(self, target: Target, head: bool) -> ManifestAnswer:
        client = self._upstreams[target.upstream]
        if target.peer == "local":  # a peer's question about this store: nothing is asked
            return await self._manifests.held(target, head, self._claims, client)
        if target.is_digest:
            return await self._by_digest(target, client, head)
        return await self._by_tag(target, client, head)

    async def _by_digest(self, target: Target, client: UpstreamClient,
                         head: bool) -> ManifestAnswer:
        """Cached (after the claim check) or asked: a HEAD without the body when it can."""
        digest = target.content_digest()
        local = self._manifests.local(digest, head)
        if local is not None:
            await self._claims.check(target, client)
            return local
        if head:
            info = await self._sources.head_manifest(target, target.reference, lambda: (
                self._lookups.head_manifest(client, target.repository, target.reference)))
            if info.media_type and info.size is not None:
                return ManifestAnswer(digest, info.media_type, info.size, None, "upstream")
        return await self._fetch_manifest(client, target, digest)

    async def _by_tag(self, target: Target, client: UpstreamClient,
                      head: bool) -> ManifestAnswer:
        key = (target.upstream, target.repository, target.reference)
        record = self._store.tag(*key)
        cached = self._manifests.tagged(record, head)  # with when it was confirmed
        if cached is not None and record and time.time() - record.checked_at < self._cache.tag_ttl:
            return cached
        if cached is not None and client.health.suspect:
            # It has left someone waiting since it last answered: ask, but do not wait.
            self._tag_heads.start(key, lambda: self._revalidate(client, target))
            return self._stale(key, cached, "upstream suspect, revalidating in the background")
        info = await self._revalidated(target, client, key, cached)
        if isinstance(info, ManifestAnswer):
            return info  # stale
        digest = parse_upstream_digest(target.upstream, info.digest)
        if digest is not None:
            local = self._manifests.local(digest, head)
            if local is not None:
                return local
            if head and info.media_type and info.size is not None:
                if record is None:  # what the tag gives, so a pin on it holds from this pull on
                    self._store.set_tag(*key, digest, info.checked_at)
                return ManifestAnswer(digest, info.media_type, info.size, None, "upstream")
        answer = await self._fetch_manifest(client, target, digest or target.reference,
                                            check=False, remember=cached is None or bool(digest))
        self._store.set_tag(*key, answer.digest, info.checked_at)
        return answer if not head else replace(answer, body=None)

    async def _revalidated(self, target: Target, client: UpstreamClient,
                           key: tuple[str, str, str],
                           cached: ManifestAnswer | None) -> ManifestInfo | ManifestAnswer:
        """The stale decision: the tag's HEAD, or, when it fails or is late and the tag is
        cached, the cached answer (stale-if-error). An uncached tag waits and fails."""
        absence: Key = (target.upstream, target.repository, "manifests", target.reference)
        if cached is None:  # a cached tag is always asked: never answered from the memory
            self._lookups.check(absence)
        revalidation = self._lookups.guard(
            absence, self._tag_heads.run(key, lambda: self._revalidate(client, target)),
            remember=cached is None)
        try:
            if cached is None:
                return await revalidation
            return await asyncio.wait_for(revalidation, self._cache.revalidate_timeout)
        except TimeoutError as exc:
            if cached is None:
                raise
            timeout = self._cache.revalidate_timeout
            client.health.no_answer(str(exc) or f"no answer to a tag HEAD within {timeout:g}s")
            return self._stale(key, cached, str(exc) or "no answer in time")
        except UpstreamError as exc:
            if cached is None:
                raise
            return self._stale(key, cached, str(exc))

    def _stale(self, key: tuple[str, str, str], cached: ManifestAnswer,
               why: str) -> ManifestAnswer:
        """The cached digest of an expired tag, counted: a client got a possibly old answer."""
        self._metrics.stale_serves.labels(key[0]).inc()
        log.debug("serving cached %s/%s:%s: %s", *key, why)
        return replace(cached, source="stale")

    async def _revalidate(self, client: UpstreamClient, target: Target) -> ManifestInfo:
        """HEAD the tag (`sources`); when its digest is cached, confirm the tag. Runs to the end
        even if every waiter has given up, so a late answer still refreshes the index."""
        info = await self._sources.head_manifest(target, target.reference, lambda: (
            client.head_manifest(target.repository, target.reference)))
        if (digest := parse_upstream_digest(client.name, info.digest)) is not None and (
                self._store.media_type(digest) is not None):  # a peer's time kept, if it says
            self._store.set_tag(client.name, target.repository, target.reference, digest,
                                info.checked_at)
        return info

    async def _fetch_manifest(self, client: UpstreamClient, target: Target,
                              reference: str | Digest, check: bool = True,
                              remember: bool = True) -> ManifestAnswer:
        """One GET per upstream, repository and reference at a time. Never shared wider: a
        request on another route (or for another repository) must not get this one's answer,
        neither its manifest (another route's claim) nor its failure."""
        key: Key = (client.name, repository := target.repository, "manifests", str(reference))
        if check:
            self._lookups.check(key)
        return await self._lookups.guard(key, self._manifest_fetches.run(
            key, lambda: self._download(client, repository, reference, lambda: (
                self._sources.get_manifest(target, str(reference), lambda: (
                    client.get_manifest(repository, str(reference))))))), remember)

    def known_size(self, target: Target) -> int | None:
        """The blob's size if we know it without asking anyone (cached, or downloading) and the
        route may know it without asking either: a size says the blob exists, and so would
        asking its upstream (a 404 or a 503 where a blob we do not hold gets neither)."""
        digest = target.content_digest()
        fill = self._fills.get(digest)
        if not self._claims.free(target, {fill.upstream} if fill is not None else frozenset()):
            return None
        if fill is not None:
            return fill.size
        stored = self._store.blob(digest)
        return None if stored is None else stored.size

    async def _shared_blob(self, target: Target, digest: Digest
                           ) -> tuple[Fill | None, Stored | None]:
        """The download in progress, or else the cached blob, that may answer `target`: after
        the claim check (NotFound when the route's upstream does not have the digest)."""
        client = self._upstreams[target.upstream]
        fill = self._fills.get(digest)
        stored = self._store.blob(digest) if fill is None else None
        if (fill is not None or stored is not None) and await self._claims.check(
                target, client, {fill.upstream} if fill is not None else frozenset()):
            fill = self._fills.get(digest)  # it awaited: look again; the route has the digest
            stored = self._store.blob(digest) if fill is None else None
        return fill, stored

    async def blob(self, target: Target, head: bool) -> BlobAnswer:
        digest = target.content_digest()
        client = self._upstreams[target.upstream]
        key: Key = (target.upstream, target.repository, "blobs", target.reference)
        attempts = 0
        while True:  # bounded: a joiner tries again at most JOIN_ATTEMPTS - 1 times
            attempts += 1
            fill, stored = await self._shared_blob(target, digest)
            if fill is None and stored is not None:
                if not head:
                    self._store.touch(digest)
                return BlobAnswer(digest, stored.size, stored=stored)
            if target.peer == "local":  # a peer's question about this store: nothing else
                raise absent(key)
            if head:
                if fill is not None and fill.size is not None:
                    return BlobAnswer(digest, fill.size, source="upstream")
                size = await self._sources.head_blob(target, lambda: self._lookups.head_blob(
                    client, target.repository, target.reference))
                return BlobAnswer(digest, size, source="upstream")
            joined = fill is not None
            if fill is None:
                self._lookups.check(key)
                fill = self._fills.start(digest, client.name, self._sources.opener(  # 404s kept
                    target, lambda at: self._lookups.guard(key, client.open_blob(
                        target.repository, target.reference, at))))
            reader = fill.open_reader()
            try:
                size = await fill.wait_size()
            except BaseException as exc:
                reader.close()
                if not isinstance(exc, EdgecacheError):
                    raise
                if joined and attempts < JOIN_ATTEMPTS and _not_ours(exc, fill, client):
                    continue
                if isinstance(exc, NotFound):
                    raise absent(key) from None
                raise
            return BlobAnswer(digest, size, reader=reader, source="upstream", joined=joined)

    async def tags(self, target: Target, query: TagQuery) -> tuple[TagPage, str]:
        """The page of the upstream's tag list (`proxy/tags.py`: sorted, paged by us), or of the
        tags we know of when it cannot answer; and the source ("upstream" or "stale")."""
        client = self._upstreams[target.upstream]
        try:
            return await upstream_page(client, target.repository, query), "upstream"
        except UpstreamError:
            known = self._store.tags(target.upstream, target.repository)
            if not known:
                raise
            self._metrics.stale_serves.labels(target.upstream).inc()
        return page(known, query), "stale"

    async def referrers(self, target: Target, query: Mapping[str, str]) -> Referrers:
        """The route's own upstream's referrers, kept (`proxy/referrers.py`)."""
        return await self._referrers.answer(target, query)


def _not_ours(exc: EdgecacheError, fill: Fill, client: UpstreamClient) -> bool:
    """Whether a joined download's failure may be another route's alone: it ran on another
    upstream, or the content (or the right to it) is missing in the repository it was started
    for. An upstream that fails outright fails everyone on it; asking again would double it."""
    return fill.upstream != client.name or isinstance(exc, NotFound | UpstreamAuthError)
