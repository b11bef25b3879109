"""Local (pushed) content this node does not hold, copied from the site before a 404.

Content pushed into one node's local registry has no upstream: the only other place it lives
is the site. So a read of the local route that misses here asks the site as an upstream miss
does (`Site`: the owner of the key as `owner`, then the holders' bounded `local` HEADs; an
owner asks the holders; a `local` question never reaches here), tags of local repositories
included, and keeps what it gets.

The copy is local content on this node too (linked to the local registry's name): never
evicted, collected by this node's local GC like a push. Not cache, because nothing can fetch it
again once evicted if the node it was pushed to is gone: each node that pulled it is a replica,
so the site keeps pushed content as long as one node that ran it lives, and a node keeps what
its pods run. A copied tag keeps the time of its push (a holder's `X-Edgecache-Checked-At`), not
of the copy, and a client's read of a local tag asks every live peer for theirs: the newest
event wins (`refresh_tag`), a push or a delete (a peer's 404 carries its tombstone's time,
`storage/tombstones.py`), so a tag pushed again or deleted on any node is what every node
answers next. Deletes by digest are carried to the live peers when they are made
(`localdeletes.py`); a manifest's tombstone keeps this node from copying it back.

Blobs stream while they are copied: one `Fill` per digest (joined by every reader), resumed
from the next source with a Range when one breaks, published through the one publish path
linked to the local registry's name. Bytes this node holds from an upstream (cache) become
local content once a holder confirms the digest (its HEAD): the bytes are verified, so only the
link is new, as a claim check makes one.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from edgecache.errors import (
    BlobUnknown,
    DigestMismatch,
    ManifestUnknown,
    StorageError,
    UpstreamBadResponse,
    UpstreamUnavailable,
)
from edgecache.oci import Digest, manifest_children, manifest_media_type
from edgecache.proxy.download import Opener
from edgecache.proxy.fill import Fill, Fills
from edgecache.proxy.manifests import parse_upstream_digest
from edgecache.proxy.routing import Target
from edgecache.proxy.singleflight import SingleFlight
from edgecache.storage.localindex import LocalIndex
from edgecache.storage.store import Store
from edgecache.storage.tombstones import DIGESTS
from edgecache.upstream.client import BlobStream, ManifestInfo

from .client import PeerFailed
from .site import LOCAL, Site


class LocalCopies:
    def __init__(self, site: Site, store: Store, fills: Fills, registry: str) -> None:
        self.registry = registry
        self.site = self._site = site
        self._store = store
        self._fills = fills
        self._manifests: SingleFlight[str, Digest] = SingleFlight()
        self._tags: SingleFlight[tuple[str, str], None] = SingleFlight()  # one round at a time

    async def close(self) -> None:
        await asyncio.gather(self._manifests.close(), self._tags.close())

    async def manifest(self, target: Target, holder: str | None = None) -> Digest:
        """Copy the manifest `target` names by digest from the site (ManifestUnknown when no
        live node holds it), or from `holder` alone (a peer that answered for a tag)."""
        return await self._manifests.run(target.reference,
                                         lambda: self._copy_manifest(target, holder))

    def tag_time(self, target: Target) -> float | None:
        """When this node's record of a local tag was pushed (here or where it was copied
        from): what a peer compares to find the site's newest."""
        record = self._store.tag(self.registry, target.repository, target.reference)
        return None if record is None else record.checked_at

    async def refresh_tag(self, target: Target, index: LocalIndex) -> None:
        """Make this node's record of a local tag the site's newest event of it (last writer
        wins, by the time each push or tombstone carries), asked of every live peer at once
        (bounded `local` HEADs, so a re-push or a delete on any node is seen at the next pull
        through this one). Nothing newer, or no peer answering, leaves this node as it is."""
        await self._tags.run((target.repository, target.reference),
                             lambda: self._refresh_tag(target, index))

    async def _refresh_tag(self, target: Target, index: LocalIndex) -> None:
        repository, tag = target.repository, target.reference
        known = max((t for t in (self.tag_time(target), index.tombstones.at(repository, tag))
                     if t is not None), default=None)
        deleted: list[float] = []
        newest: tuple[float, Digest, str] | None = None
        for peer, asked in await self._site.holders(target, "manifests", tag, deleted=deleted):
            at = asked.info.checked_at
            try:
                digest = parse_upstream_digest(self.registry, asked.info.digest)
            except UpstreamBadResponse:  # that peer's answer is no evidence: the others' are
                continue
            if at is not None and digest is not None and (newest is None or at > newest[0]):
                newest = (at, digest, peer)
        last_delete = max(deleted, default=None)
        if last_delete is not None and (newest is None or last_delete >= newest[0]):
            if known is None or last_delete > known:  # deleted since: gone here too
                index.delete_tag(repository, tag, last_delete)
            return
        if newest is None or (known is not None and known >= newest[0]):
            return
        at, digest, holder = newest
        gone = index.tombstones.at(DIGESTS, str(digest))
        if gone is not None and gone >= at:  # its manifest was deleted after that push
            index.delete_tag(repository, tag, gone)
            return
        if not (self.registry in self._store.links(digest) and self._store.manifest(digest)):
            # from the holder itself: an owner between may hold an older tombstone of it
            await self.manifest(replace(target, reference=str(digest), digest=digest), holder)
        self._store.set_tag(self.registry, repository, tag, digest, at)
        index.pushed(repository, tag, str(digest))  # pushed again since any delete here

    async def _copy_manifest(self, target: Target, holder: str | None) -> Digest:
        if holder is None:
            body, info = await self._site.get_manifest(target, target.reference, _no_manifest)
        else:
            try:
                asked = await self._site.client.ask(holder, target, "manifests",
                                                    target.reference, LOCAL, body=True,
                                                    timeout=5 * self._site.ask_timeout)
            except PeerFailed as exc:
                raise UpstreamUnavailable(self.registry, str(exc)) from None
            assert asked.body is not None  # a GET's answer
            body, info = asked.body, asked.info
        expected = target.digest or parse_upstream_digest(self.registry, info.digest)
        actual = Digest.of(body, expected.algorithm if expected else "sha256")
        if expected is not None and actual != expected:
            raise DigestMismatch(str(expected), str(actual))
        stored = self._store.manifest(actual)
        if stored is not None and stored.media_type and stored.size == len(body):
            self._store.link(self.registry, actual)  # the same bytes, held as cache
        else:
            try:
                await self._store.put(actual, body, manifest_media_type(body, info.media_type),
                                      manifest_children(body), upstreams=(self.registry,))
            except StorageError as exc:
                raise UpstreamUnavailable(self.registry, f"cannot keep {actual}: {exc}") \
                    from None
        return actual

    async def head_blob(self, target: Target) -> int | None:
        """A local blob's size as the site knows it, without copying it (BlobUnknown if no
        live node holds it)."""
        return await self._site.head_blob(target, _no_size)

    async def held_as_cache(self, target: Target) -> bool:
        """Whether this node holds the blob's bytes from an upstream and a holder's local
        registry confirms the digest: then it is linked as local content here."""
        digest = target.content_digest()
        if self._store.blob(digest) is None:
            return False
        if not await self._site.holders(target, "blobs", target.reference):
            return False
        self._store.link(self.registry, digest)
        return True

    def blob(self, target: Target) -> Fill:
        """The copy of the blob in progress (started, or joined), read while it is written."""
        digest = target.content_digest()
        fill = self._fills.get(digest)
        if fill is not None and fill.upstream != self.registry:
            # another route's download (maybe a private upstream's): never joined from here
            raise UpstreamUnavailable(self.registry, f"{digest} is being downloaded for "
                                      "another route; try again shortly")
        return self._fills.start(digest, self.registry,
                                 self._site.opener(target, _no_blob(target)))


async def _no_manifest() -> tuple[bytes, ManifestInfo]:
    raise ManifestUnknown("manifest unknown: no node of the site holds it")


async def _no_size() -> int | None:
    raise BlobUnknown("blob unknown: no node of the site holds it")


def _no_blob(target: Target) -> Opener:
    async def opener(offset: int) -> BlobStream:
        raise BlobUnknown(f"blob unknown: no node of the site holds {target.reference}")
    return opener
