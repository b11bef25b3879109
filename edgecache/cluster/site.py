"""Where this node gets what it does not hold: the owner, the site's caches, then the WAN.

Every question the service would put to an upstream (a blob's bytes, a manifest, a tag's
digest) is put through here first, in the mode of the request being answered:

- `client` (a client asked this node): the owner of the key by rendezvous order, asked as
  `owner`; if it fails, the next live node in that order; on reaching this node itself, this
  node acts as the owner (below). The owner single-flights the upstream for the whole site.
- `owner` (this node owns the key, or a peer asked it as the owner): never forwarded to
  another owner (no loops). For content named by digest, first a bounded HEAD to every live
  peer in `local` mode: a copy anywhere on the site is as good as the upstream's and costs no
  WAN; then the upstream. For a tag, the upstream first (a tag moves), then, when it cannot
  answer, what the peers' caches say (stale-if-error, site-wide).
- `local` is answered by the service from its store alone and never reaches here.

Blob sources are tried through the fill's opener, so a source that breaks mid-transfer costs
only time: `Download` calls the opener again with the offset it reached, and the next source
is asked with a Range from there. A peer that does not answer is marked down at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from edgecache.errors import NotFound, UpstreamAuthError, UpstreamError
from edgecache.metrics import Metrics
from edgecache.proxy.download import Opener
from edgecache.proxy.routing import Target
from edgecache.proxy.sources import GetCall, HeadCall, SizeCall
from edgecache.upstream.client import BlobStream, ManifestInfo

from .client import Asked, PeerClient, PeerFailed
from .peers import Peers
from .proof import TagDeleted
from .ring import tag_key

log = logging.getLogger(__name__)

OWNER, LOCAL, CLIENT = "owner", "local", "client"


class Site:
    def __init__(self, peers: Peers, client: PeerClient, metrics: Metrics,
                 ask_timeout: float = 1.0) -> None:
        self.peers = peers
        self.client = self._client = client
        self._metrics = metrics
        self.ask_timeout = self._ask_timeout = ask_timeout

    def _ahead(self, key: str, mode: str) -> list[str]:
        """The live nodes to ask as owner before this node acts as one: those ranked above it
        (none for a request a peer sent: it is never forwarded)."""
        if mode != CLIENT:
            return []
        ranked = self.peers.order(key)
        return ranked[:ranked.index(self.peers.me)]

    def _failed(self, exc: PeerFailed) -> None:
        log.info("%s; trying the next source", exc)
        self._metrics.peer_failures.inc()
        if exc.broken:
            self.peers.failed(exc.peer, str(exc))

    async def holders(self, target: Target, kind: str, reference: str,
                      skip: frozenset[str] = frozenset(), deleted: list[float] | None = None
                      ) -> list[tuple[str, Asked]]:
        """The live peers whose store holds the content, with their HEAD's answer (a `local`
        HEAD each, at once, bounded by `ask_timeout`), in rendezvous order; `deleted` gets
        the time of each peer's tombstone of a local tag."""
        asked = [p for p in self.peers.order(reference) if p != self.peers.me and p not in skip]

        async def has(peer: str) -> Asked | None:
            try:
                return await self._client.ask(peer, target, kind, reference, LOCAL, body=False,
                                              timeout=self._ask_timeout)
            except TagDeleted as exc:
                if deleted is not None and exc.at is not None:
                    deleted.append(exc.at)
                return None
            except NotFound:
                return None
            except PeerFailed as exc:
                self._failed(exc)
                return None

        answers = await asyncio.gather(*(has(p) for p in asked))
        return [(p, a) for p, a in zip(asked, answers, strict=True) if a is not None]

    def opener(self, target: Target, upstream: Opener) -> Opener:
        """The fill's opener: owner, next nodes, the site's copies, the upstream; each call
        after the first means the last source broke, so it moves on to the next."""
        sources = self._blob_sources(target, target.peer or CLIENT)
        at_upstream = False
        streaming: str | None = None  # the peer of the last stream: called again, it broke

        async def open_from(offset: int) -> BlobStream:
            nonlocal at_upstream, streaming
            if streaming is not None:
                self._failed(PeerFailed(streaming, f"stream broke at {offset} bytes", True))
                streaming = None
            while not at_upstream:
                source = await anext(sources, None)
                if source is None:
                    at_upstream = True
                    break
                peer, as_mode = source
                try:
                    stream = await self._client.open_blob(peer, target, offset, as_mode)
                except PeerFailed as exc:
                    self._failed(exc)
                    continue
                except NotFound:
                    if as_mode == OWNER:
                        raise  # the owner asked the site and the upstream: nobody has it
                    continue  # a holder that evicted it meanwhile
                self._metrics.cluster_fetches.labels("peer").inc()
                streaming = peer
                return stream
            self._metrics.cluster_fetches.labels("upstream").inc()
            return await upstream(offset)

        return open_from

    async def _blob_sources(self, target: Target, mode: str
                            ) -> AsyncIterator[tuple[str, str]]:
        key = target.reference
        tried: set[str] = set()
        for peer in self._ahead(key, mode):
            if self.peers.is_up(peer):
                tried.add(peer)
                yield peer, OWNER
        held = await self.holders(target, "blobs", key, frozenset(tried))
        if not held:
            self._metrics.owner_misses.inc()
        for peer, _ in held:
            if self.peers.is_up(peer):
                yield peer, LOCAL

    async def head_blob(self, target: Target, upstream: SizeCall) -> int | None:
        """A blob's size: its owner, else any copy on the site, else the upstream."""
        tried: set[str] = set()
        for peer in self._ahead(target.reference, target.peer or CLIENT):
            if self.peers.is_up(peer):
                tried.add(peer)
                try:
                    return (await self._client.ask(peer, target, "blobs", target.reference,
                                                   OWNER, body=False)).info.size
                except PeerFailed as exc:
                    self._failed(exc)
        for _, asked in await self.holders(target, "blobs", target.reference, frozenset(tried)):
            return asked.info.size
        return await upstream()

    async def head_manifest(self, target: Target, reference: str,
                            upstream: HeadCall) -> ManifestInfo:
        return (await self._manifest(target, reference, True, upstream)).info

    async def get_manifest(self, target: Target, reference: str,
                           upstream: GetCall) -> tuple[bytes, ManifestInfo]:
        asked = await self._manifest(target, reference, False, upstream)
        assert asked.body is not None  # a GET's answer, from a peer or the upstream
        return asked.body, asked.info

    async def _manifest(self, target: Target, reference: str, head: bool,
                        upstream: HeadCall | GetCall) -> Asked:
        """A manifest (its body, or for `head` its HEAD) by digest or tag: the owner of that
        digest or tag, this node as owner, then the site's caches around the upstream."""
        mode = target.peer or CLIENT
        by_digest = ":" in reference
        key = reference if by_digest else tag_key(target.upstream, target.repository,
                                                  reference)
        tried: set[str] = set()
        for peer in self._ahead(key, mode):
            if not self.peers.is_up(peer):
                continue
            tried.add(peer)
            try:
                return await self._client.ask(peer, target, "manifests", reference, OWNER,
                                              body=not head)
            except PeerFailed as exc:
                self._failed(exc)
        if by_digest:  # content-addressed: any copy on the site, before the WAN
            found = await self._from_holders(target, reference, head, frozenset(tried))
            if found is not None:
                return found
            self._metrics.owner_misses.inc()
            return _asked(await upstream())
        try:
            return _asked(await upstream())
        except (NotFound, UpstreamAuthError):
            raise
        except UpstreamError as exc:  # the upstream cannot say: what the site's caches say
            found = await self._from_holders(target, reference, head, frozenset(tried))
            if found is None:
                raise
            log.info("tag %s/%s:%s from a peer's cache: %s", target.upstream,
                     target.repository, reference, exc)
            return found

    async def _from_holders(self, target: Target, reference: str, head: bool,
                            skip: frozenset[str]) -> Asked | None:
        for peer, _ in await self.holders(target, "manifests", reference, skip):
            try:
                return await self._client.ask(peer, target, "manifests", reference, LOCAL,
                                              body=not head, timeout=self._ask_timeout * 5)
            except NotFound:
                continue
            except PeerFailed as exc:
                self._failed(exc)
        return None


def _asked(answer: tuple[bytes, ManifestInfo] | ManifestInfo) -> Asked:
    if isinstance(answer, ManifestInfo):
        return Asked(answer, None)
    return Asked(answer[1], answer[0])
