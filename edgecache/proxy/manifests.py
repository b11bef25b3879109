"""Manifests in the store: read back, or taken in from an upstream once they are proven.

A fetched manifest is kept only after its digest matches (the one asked for, or the upstream's
Docker-Content-Digest) and it parses as a manifest of a known type, stored byte-exact under the
media type its body declares (`oci.manifest_media_type`); a contradiction stores nothing.
Manifests live in the same content-addressed tree as blobs and are published as blobs are
(`Store.put`: one publish, so the index keeps their media type and references, linked to the
upstream they came from (the claim check reads those), and the quota counts them).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from edgecache.errors import (
    DigestInvalid,
    DigestMismatch,
    ManifestUnknown,
    StorageError,
    UpstreamBadResponse,
)
from edgecache.metrics import Metrics
from edgecache.oci import Digest, manifest_children, manifest_media_type
from edgecache.proxy.claims import Claims
from edgecache.proxy.routing import Target
from edgecache.storage.store import Store
from edgecache.upstream.client import ManifestInfo, UpstreamClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ManifestAnswer:
    digest: Digest
    media_type: str
    size: int
    body: bytes | None  # None for a HEAD
    source: str  # "cache", "upstream" or "stale"


class Manifests:
    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    def local(self, digest: Digest, head: bool) -> ManifestAnswer | None:
        if head:
            stored = self._store.manifest(digest)
            if stored is None or stored.media_type is None:
                return None
            return ManifestAnswer(digest, stored.media_type, stored.size, None, "cache")
        media_type = self._store.media_type(digest)
        if media_type is None:
            return None
        body = self._store.read(digest)
        if body is None:
            return None
        self._store.touch(digest)  # pulling a manifest uses every blob it references
        return ManifestAnswer(digest, media_type, len(body), body, "cache")

    async def held(self, target: Target, head: bool, claims: Claims,
                   client: UpstreamClient) -> ManifestAnswer:
        """What the store holds for `target`, a tag at any age, after the claim check: a
        cluster peer's `local` question, asked before the WAN."""
        digest = target.digest
        if digest is None:
            record = self._store.tag(target.upstream, target.repository, target.reference)
            digest = record.digest if record else None
        local = self.local(digest, head) if digest is not None else None
        if local is None:
            raise ManifestUnknown("manifest not cached on this node")
        await claims.check(replace(target, reference=str(local.digest), digest=local.digest),
                           client)
        return local

    async def download(self, client: UpstreamClient, repository: str,
                       reference: str | Digest,
                       get: Callable[[], Awaitable[tuple[bytes, ManifestInfo]]] | None = None
                       ) -> ManifestAnswer:
        """`reference` a tag, or the digest the manifest must match; `get` fetches it when
        someone else than the upstream may have it (a cluster's peers)."""
        body, info = await (get() if get is not None
                            else client.get_manifest(repository, str(reference)))
        expected = (reference if isinstance(reference, Digest)
                    else parse_upstream_digest(client.name, info.digest))
        actual = Digest.of(body, expected.algorithm if expected else "sha256")
        if expected is not None and actual != expected:
            self._metrics.digest_mismatches.labels(client.name).inc()
            log.error("upstream %s sent a manifest that does not match %s", client.name, expected)
            raise DigestMismatch(str(expected), str(actual))
        media_type = manifest_media_type(body, info.media_type)
        stored = self._store.manifest(actual)
        if stored is not None and stored.media_type and stored.size == len(body):
            # The same bytes came through another route or repository meanwhile: kept once.
            self._store.link(client.name, actual)
            self._store.touch(actual)
            return ManifestAnswer(actual, stored.media_type, len(body), body, "upstream")
        try:  # the row and its link are one transaction: no crash between
            await self._store.put(actual, body, media_type, manifest_children(body),
                                  upstreams=(client.name,))
        except StorageError as exc:  # verified and in memory: serve it even if it cannot stay
            log.warning("could not store manifest %s: %s", actual, exc)
            self._metrics.storage_errors.inc()
            return ManifestAnswer(actual, media_type, len(body), body, "upstream")
        self._store.touch(actual)  # its references, already cached or not, are used too
        return ManifestAnswer(actual, media_type, len(body), body, "upstream")


def parse_upstream_digest(upstream: str, value: str | None) -> Digest | None:
    if not value:
        return None
    try:
        return Digest.parse(value)
    except DigestInvalid as exc:
        raise UpstreamBadResponse(upstream, f"invalid Docker-Content-Digest {value[:100]!r}") \
            from exc
