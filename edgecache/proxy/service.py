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
- A blob is served from disk when cached; otherwise every request joins the one `Fill` for that
  digest. A HEAD of anything uncached asks the upstream without downloading, so a cache can be
  chained behind edgecache.
- Manifests are stored byte-exact, after their digest is checked, under the media type the
  upstream gave; they are never converted.
- Content that came from an authenticated (private) upstream, cached or still downloading, is
  handed out through another upstream's route only once that upstream confirms (HEAD) that it
  has the digest too; the confirmation is remembered. A public route cannot read a private image
  by knowing its digest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgecache.config import CacheConfig
from edgecache.errors import (
    DigestInvalid,
    DigestMismatch,
    StorageError,
    UpstreamBadResponse,
    UpstreamError,
)
from edgecache.metrics import Metrics
from edgecache.oci import Digest, manifest_children, manifest_media_type
from edgecache.proxy.fill import FillReader, Fills
from edgecache.proxy.routing import Target
from edgecache.proxy.singleflight import SingleFlight
from edgecache.storage.blobs import BlobStore
from edgecache.storage.index import Index
from edgecache.storage.quota import Quota
from edgecache.upstream.client import BlobStream, ManifestInfo, UpstreamClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ManifestAnswer:
    digest: str
    media_type: str
    size: int
    body: bytes | None  # None for a HEAD
    source: str  # "cache", "upstream" or "stale"


@dataclass(frozen=True, slots=True)
class BlobAnswer:
    digest: str
    size: int | None
    path: Path | None = None  # a cached file
    reader: FillReader | None = None  # a download in progress
    source: str = "cache"
    joined: bool = False  # True when this reader joined a download another request started


class RegistryService:
    def __init__(self, blobs: BlobStore, index: Index, quota: Quota,
                 upstreams: Mapping[str, UpstreamClient], fills: Fills, metrics: Metrics,
                 cache: CacheConfig | None = None, private: frozenset[str] = frozenset()) -> None:
        self._cache = cache or CacheConfig()
        self._private = private
        self._blobs = blobs
        self._index = index
        self._quota = quota
        self._upstreams = upstreams
        self._fills = fills
        self._metrics = metrics
        self._manifest_fetches: SingleFlight[tuple[str, ...], ManifestAnswer] = SingleFlight()
        self._tag_heads: SingleFlight[tuple[str, ...], ManifestInfo] = SingleFlight()

    # ---- manifests ----------------------------------------------------------------------------

    async def manifest(self, target: Target, head: bool) -> ManifestAnswer:
        client = self._upstreams[target.upstream]
        if target.is_digest:
            local = self._local_manifest(target.reference, head)
            if local is not None:
                await self._claim(target, client, set())
                return local
            if head:
                info = await client.head_manifest(target.repository, target.reference)
                if info.media_type and info.size is not None:
                    return ManifestAnswer(target.reference, info.media_type, info.size, None,
                                          "upstream")
            return await self._fetch_manifest(client, target.repository, target.reference)
        key = (target.upstream, target.repository, target.reference)
        record = self._index.tag(*key)
        cached = self._local_manifest(record.digest, head) if record else None
        if cached is not None and record and time.time() - record.checked_at < self._cache.tag_ttl:
            return cached
        if cached is not None and client.health.suspect:
            # It has left someone waiting since it last answered: ask, but do not wait.
            self._tag_heads.start(key, lambda: self._revalidate(client, key))
            return self._stale(key, cached, "upstream suspect, revalidating in the background")
        revalidation = self._tag_heads.run(key, lambda: self._revalidate(client, key))
        try:
            if cached is None:
                info = await revalidation
            else:
                info = await asyncio.wait_for(revalidation, self._cache.revalidate_timeout)
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
        digest = _upstream_digest(target.upstream, info.digest)
        if digest is not None:
            local = self._local_manifest(digest, head)
            if local is not None:
                return local
            if head and info.media_type and info.size is not None:
                if record is None:  # what the tag gives, so a pin on it holds from this pull on
                    self._index.set_tag(*key, digest)
                return ManifestAnswer(digest, info.media_type, info.size, None, "upstream")
        answer = await self._fetch_manifest(client, target.repository, digest or target.reference)
        self._index.set_tag(*key, answer.digest)
        return answer if not head else replace(answer, body=None)

    def _stale(self, key: tuple[str, str, str], cached: ManifestAnswer,
               why: str) -> ManifestAnswer:
        """The cached digest of an expired tag, counted: a client got a possibly old answer."""
        self._metrics.stale_serves.labels(key[0]).inc()
        log.debug("serving cached %s/%s:%s: %s", *key, why)
        return replace(cached, source="stale")

    async def _revalidate(self, client: UpstreamClient, key: tuple[str, str, str]) -> ManifestInfo:
        """HEAD the tag; when its digest is cached, confirm the tag. Runs to the end even if
        every waiter has given up, so a late answer still refreshes the index."""
        info = await client.head_manifest(key[1], key[2])
        digest = _upstream_digest(client.name, info.digest)
        if digest is not None and self._index.media_type(digest) is not None:
            self._index.set_tag(*key, digest)
        return info

    async def _claim(self, target: Target, client: UpstreamClient, owners: set[str]) -> bool:
        """Let content we hold answer a by-digest request on `target.upstream`'s route: free
        unless it came from a private upstream (recorded links, or `owners`: the upstream of a
        download in progress); then the route's upstream must have it too (NotFound if not).
        True when it had to ask (and so awaited)."""
        if not self._private:
            return False
        owners = owners | self._index.links(target.reference)
        if target.upstream in owners or not (owners & self._private):
            return False
        if target.kind == "blobs":
            await client.head_blob(target.repository, target.reference)
        else:
            await client.head_manifest(target.repository, target.reference)
        self._index.link(target.upstream, target.reference)
        return True

    def _local_manifest(self, digest: str, head: bool) -> ManifestAnswer | None:
        media_type = self._index.media_type(digest)
        if media_type is None:
            return None
        parsed = Digest.parse(digest)
        if head:
            size = self._blobs.size(parsed)
            return None if size is None else ManifestAnswer(digest, media_type, size, None, "cache")
        body = self._blobs.read(parsed)
        if body is None:
            return None
        self._index.touch(digest)  # pulling a manifest uses every blob it references
        return ManifestAnswer(digest, media_type, len(body), body, "cache")

    async def _fetch_manifest(self, client: UpstreamClient, repository: str,
                              reference: str) -> ManifestAnswer:
        key = (reference,) if ":" in reference else (client.name, repository, reference)
        return await self._manifest_fetches.run(
            key, lambda: self._download_manifest(client, repository, reference))

    async def _download_manifest(self, client: UpstreamClient, repository: str,
                                 reference: str) -> ManifestAnswer:
        body, info = await client.get_manifest(repository, reference)
        expected = (Digest.parse(reference) if ":" in reference
                    else _parse_upstream_digest(client.name, info.digest))
        actual = Digest.of(body, expected.algorithm if expected else "sha256")
        if expected is not None and actual != expected:
            self._metrics.digest_mismatches.labels(client.name).inc()
            log.error("upstream %s sent a manifest that does not match %s", client.name, expected)
            raise DigestMismatch(str(expected), str(actual))
        media_type = manifest_media_type(body, info.media_type)
        try:
            await self._blobs.put(actual, body)
        except StorageError as exc:  # verified and in memory: serve it even if it cannot stay
            log.warning("could not store manifest %s: %s", actual, exc)
            return ManifestAnswer(str(actual), media_type, len(body), body, "upstream")
        self._index.record_blob(str(actual), len(body), media_type, manifest_children(body),
                                upstreams=(client.name,))
        self._index.touch(str(actual))  # its references, already cached or not, are used too
        self._quota.added(len(body))
        self._quota.check()
        return ManifestAnswer(str(actual), media_type, len(body), body, "upstream")

    # ---- blobs --------------------------------------------------------------------------------

    def known_size(self, target: Target) -> int | None:
        """The blob's size if we know it without asking anyone (cached, or downloading)."""
        digest = Digest.parse(target.reference)
        fill = self._fills.get(digest)
        return fill.size if fill is not None else self._blobs.size(digest)

    async def blob(self, target: Target, head: bool) -> BlobAnswer:
        digest = Digest.parse(target.reference)
        client = self._upstreams[target.upstream]
        fill = self._fills.get(digest)
        size = self._blobs.size(digest) if fill is None else None
        if (fill is not None or size is not None) and await self._claim(
                target, client, {fill.upstream} if fill is not None else set()):
            fill = self._fills.get(digest)  # it awaited: look again
            size = self._blobs.size(digest) if fill is None else None
        if fill is None and size is not None:
            if not head:
                self._index.touch(target.reference)
            return BlobAnswer(target.reference, size, path=self._blobs.path(digest))
        if head:
            if fill is not None and fill.size is not None:
                return BlobAnswer(target.reference, fill.size, source="upstream")
            size = await client.head_blob(target.repository, target.reference)
            return BlobAnswer(target.reference, size, source="upstream")
        joined = fill is not None
        if fill is None:
            repository = target.repository

            async def opener(offset: int) -> BlobStream:
                return await client.open_blob(repository, str(digest), offset)

            fill = self._fills.start(digest, client.name, opener)
        reader = fill.open_reader()
        try:
            size = await fill.wait_size()
        except BaseException:
            reader.close()
            raise
        return BlobAnswer(target.reference, size, reader=reader, source="upstream", joined=joined)

    # ---- tags ---------------------------------------------------------------------------------

    async def tags(self, target: Target,
                   query: Mapping[str, str]) -> tuple[Any, str | None, str]:
        """The upstream's tag list, or the tags we know of when it cannot answer; and the
        source ("upstream" or "stale")."""
        client = self._upstreams[target.upstream]
        try:
            doc, link = await client.list_tags(target.repository, query)
            return doc, link, "upstream"
        except UpstreamError:
            known = self._index.tags(target.upstream, target.repository)
            if not known:
                raise
            self._metrics.stale_serves.labels(target.upstream).inc()
        last = query.get("last")
        if last:
            known = [tag for tag in known if tag > last]
        limit = query.get("n", "")
        if limit.isascii() and limit.isdigit():  # '²'.isdigit() is True; int() refuses it
            known = known[: int(limit)]
        return {"name": target.repository, "tags": known}, None, "stale"


def _parse_upstream_digest(upstream: str, value: str | None) -> Digest | None:
    if not value:
        return None
    try:
        return Digest.parse(value)
    except DigestInvalid as exc:
        raise UpstreamBadResponse(upstream, f"invalid Docker-Content-Digest {value[:100]!r}") \
            from exc


def _upstream_digest(upstream: str, value: str | None) -> str | None:
    digest = _parse_upstream_digest(upstream, value)
    return None if digest is None else str(digest)
