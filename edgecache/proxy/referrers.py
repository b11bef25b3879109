"""`GET /v2/<name>/referrers/<digest>` for cached upstream content: the upstream's answer, kept.

Two sources, one answer shape (an OCI image index of descriptors, `artifactType` filtered here):
- An OCI 1.1 upstream's referrers API. Its answer (every page, unfiltered: one stored copy
  answers every filter) is stored as an index through `Store.put`, linked to that upstream,
  its descriptors recorded as children (a use refreshes them; export follows them), and named
  by the `referrers` table per (upstream, repository, subject). It is revalidated as a tag is:
  fresh within `cache.tag_ttl`; then asked again, waiting at most `cache.revalidate_timeout`
  when a copy is kept, and that copy served (stale) when the upstream fails, is late or is
  suspect (then the refresh runs in the background).
- An upstream without the API (Distribution 2.8 answers 404; garbage and 4XX count the same):
  the referrers tag schema, the tag `<alg>-<hex>` naming an index of the referrers, read
  through the ordinary manifest path, so it is cached, revalidated, served stale and scoped as
  any tag; none is an empty answer. An answer that is no referrers answer at all (a 400, 405,
  HTML) is remembered per upstream for `cache.tag_ttl`; a 404 is not (an API may 404 one
  subject), so Distribution 2.8 is asked once per referrers request before its tag.
  An upstream that cannot be reached, with no kept answer, is asked for the tag too: a copy of
  it may be cached (or imported: `export` carries referrers as that tag).
edgecache therefore offers the API itself: it never answers 404 to a referrers request for a
digest (the spec forbids it where the API is offered). Nothing crosses routes: the stored
answer is keyed by the route's upstream and asked with its credentials; the tag path has the
claim rules; descriptors are pulled by digest through the ordinary path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from yarl import URL

from edgecache import jsondoc
from edgecache.config import CacheConfig
from edgecache.errors import (
    DigestInvalid,
    NotFound,
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamError,
)
from edgecache.metrics import Metrics
from edgecache.oci import MANIFEST_LIMIT, OCI_INDEX, Digest, children_of
from edgecache.proxy.manifests import ManifestAnswer
from edgecache.proxy.routing import Target
from edgecache.proxy.singleflight import SingleFlight
from edgecache.storage.store import Store
from edgecache.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

MAX_PAGES = 16  # an upstream's pages are merged into one answer; more are cut (and logged)
FILTER = "artifactType"  # the only filter the spec defines
_LINK = re.compile(r"<([^>]*)>\s*;[^,]*rel\s*=\s*\"?next\"?", re.IGNORECASE)

Key = tuple[str, str, str]  # upstream, repository, subject
TagManifest = Callable[[Target, bool], Awaitable[ManifestAnswer]]


@dataclass(frozen=True, slots=True)
class Referrers:
    body: bytes  # an OCI image index
    filters: str | None  # OCI-Filters-Applied
    source: str  # "cache", "upstream" or "stale"


def schema_tag(subject: Digest) -> str:
    """The referrers tag schema's tag for `subject` (64 characters of its hex at most)."""
    return f"{subject.algorithm}-{subject.hex[:64]}"


def index_body(descriptors: list[dict[str, Any]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors},
                      separators=(",", ":")).encode()


def descriptors_of(body: bytes | None) -> list[dict[str, Any]]:
    """The entries of an index that are descriptors (a mapping with a valid digest): they
    are pulled next, by digest, so nothing else is passed on."""
    try:
        doc = jsondoc.parse(body or b"", MANIFEST_LIMIT)
    except jsondoc.JsonUnreadable:
        return []
    items = doc.get("manifests") if isinstance(doc, dict) else None
    return [item for item in items if isinstance(item, dict) and _is_digest(item.get("digest"))
            ] if isinstance(items, list) else []


def _is_digest(value: object) -> bool:
    try:
        return isinstance(value, str) and bool(Digest.parse(value))
    except DigestInvalid:
        return False


def shaped(descriptors: list[dict[str, Any]], query: Mapping[str, str],
           source: str) -> Referrers:
    """The answer to one request: filtered by `artifactType` when asked (and said so)."""
    wanted = query.get(FILTER)
    if wanted:
        chosen = [d for d in descriptors if d.get("artifactType") == wanted]
        return Referrers(index_body(chosen), FILTER, source)
    return Referrers(index_body(descriptors), None, source)


def next_query(link: str | None) -> dict[str, str] | None:
    """The query of the upstream's rel="next" Link: only its query is read (its host and path
    may be anything an upstream writes); None when there is no next page or it is garbage."""
    match = _LINK.search(link or "")
    if match is None:
        return None
    query = match.group(1).partition("?")[2].partition("#")[0]
    try:
        return dict(URL.build(path="/", query_string=query).query) or None
    except ValueError:
        return None


class ReferrerLists:
    def __init__(self, store: Store, upstreams: Mapping[str, UpstreamClient], cache: CacheConfig,
                 metrics: Metrics, tag_manifest: TagManifest) -> None:
        self._store = store
        self._upstreams = upstreams
        self._cache = cache
        self._metrics = metrics
        self._tag_manifest = tag_manifest
        self._asks: SingleFlight[Key, list[dict[str, Any]] | None] = SingleFlight()
        self._no_api: dict[str, float] = {}  # upstream -> until (monotonic); one per upstream

    async def close(self) -> None:
        await self._asks.close()

    async def answer(self, target: Target, query: Mapping[str, str]) -> Referrers:
        descriptors, source = await self._listing(target)
        return shaped(descriptors, query, source)

    async def _listing(self, target: Target) -> tuple[list[dict[str, Any]], str]:
        client = self._upstreams[target.upstream]
        subject = target.content_digest()
        key: Key = (target.upstream, target.repository, str(subject))
        kept = self._kept(key, subject)
        if kept is not None and time.time() - kept[1] < self._cache.tag_ttl:
            return kept[0], "cache"
        if kept is not None and client.health.suspect:
            self._asks.start(key, lambda: self._ask(client, target, key))
            return self._stale(key, kept[0], "upstream suspect, revalidating in the background")
        asked = self._asks.run(key, lambda: self._ask(client, target, key))
        try:
            found = await (asked if kept is None
                           else asyncio.wait_for(asked, self._cache.revalidate_timeout))
        except TimeoutError as exc:
            if kept is None:
                raise
            timeout = self._cache.revalidate_timeout
            client.health.no_answer(str(exc) or f"no referrers answer within {timeout:g}s")
            return self._stale(key, kept[0], "no answer in time")
        except UpstreamError as exc:
            if kept is not None:
                return self._stale(key, kept[0], str(exc))
            if isinstance(exc, UpstreamAuthError):
                raise  # the operator has credentials to fix
            log.debug("referrers of %s/%s@%s: %s; reading the tag schema", *key, exc)
            found = None
        if found is not None:
            return found, "upstream"
        return await self._from_tag(target, subject)

    def _kept(self, key: Key, subject: Digest) -> tuple[list[dict[str, Any]], float] | None:
        record = self._store.referrers(key[0], key[1], subject)
        body = self._store.read(record.digest) if record is not None else None
        if record is None or body is None:
            return None
        self._store.touch(record.digest)
        return descriptors_of(body), record.checked_at

    def _stale(self, key: Key, descriptors: list[dict[str, Any]],
               why: str) -> tuple[list[dict[str, Any]], str]:
        self._metrics.stale_serves.labels(key[0]).inc()
        log.debug("serving the kept referrers of %s/%s@%s: %s", *key, why)
        return descriptors, "stale"

    async def _ask(self, client: UpstreamClient, target: Target,
                   key: Key) -> list[dict[str, Any]] | None:
        """The upstream's whole answer, kept; None when it offers no referrers API. Runs to
        the end even if every waiter gave up, so a late answer still refreshes the copy."""
        if self._no_api.get(client.name, 0.0) > time.monotonic():
            return None
        try:
            descriptors = await self._pages(client, target)
        except NotFound as exc:
            # Distribution 2.8's "404 page not found", or an API that does not know this
            # subject or repository (some answer 404 where the spec wants an empty list): not
            # remembered, so one subject's 404 never hides the API for the others
            log.debug("no referrers API answer from %s (%s)", client.name, exc)
            return None
        except UpstreamBadResponse as exc:
            log.debug("upstream %s offers no referrers API (%s)", client.name, exc)
            self._no_api[client.name] = time.monotonic() + self._cache.tag_ttl
            return None
        body = index_body(descriptors)
        digest = Digest.of(body)
        if client.name not in self._store.links(digest) or self._store.manifest(digest) is None:
            await self._store.put(digest, body, OCI_INDEX,  # unchanged answers: not rewritten
                                  children_of({"manifests": descriptors}), [client.name])
        self._store.set_referrers(key[0], key[1], target.content_digest(), digest)
        return descriptors

    async def _pages(self, client: UpstreamClient, target: Target) -> list[dict[str, Any]]:
        """Every page, asked unfiltered, merged in the upstream's order, each digest once (an
        upstream repeating a page adds nothing), bounded in pages and bytes."""
        descriptors: list[dict[str, Any]] = []
        seen: set[str] = set()
        query: dict[str, str] = {}
        for _ in range(MAX_PAGES):
            body, link, _filters = await client.get_referrers(target.repository,
                                                              target.reference, query)
            for descriptor in descriptors_of(body):
                if descriptor["digest"] not in seen:
                    seen.add(descriptor["digest"])
                    descriptors.append(descriptor)
            following = next_query(link)
            if following is None or len(index_body(descriptors)) > MANIFEST_LIMIT // 2:
                return descriptors
            query = following
        log.warning("referrers of %s/%s@%s: more than %d pages; the rest is left out",
                    client.name, target.repository, target.reference, MAX_PAGES)
        return descriptors

    async def _from_tag(self, target: Target,
                        subject: Digest) -> tuple[list[dict[str, Any]], str]:
        """The referrers tag schema through the manifest path; no such tag: no referrers."""
        tag = Target(target.upstream, target.repository, "manifests", schema_tag(subject))
        try:
            found = await self._tag_manifest(tag, False)
        except NotFound:
            return [], "upstream"
        body = found.body if found.body is not None else self._store.read(found.digest)
        return descriptors_of(body), found.source
