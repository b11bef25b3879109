"""The local registry's route on a node of a site: a read this node's store cannot answer is
asked of the site before it is a 404 (`cluster/localcopy.py` copies it), so content pushed
into any node pulls through every node, by every routing style.

A client's read and an owner's (a peer asking this node as the owner of the key) ask the site;
a peer's `local` question is answered from this store alone, as for upstream content. A local
tag is read as the site's newest event of it (`LocalCopies.refresh_tag`): a peer asked for a
tag it deleted answers 404 with the delete's time (`X-Edgecache-Deleted`). A client's DELETE
is the local registry's, then carried to the live peers (`cluster/localdeletes.py`); a
manifest deleted by digest is not copied back (its tombstone). A client's tags list is the
union of the live nodes' (`cluster/localtags.py`), stale when a member could not be asked. A
client's HEAD of a blob held only elsewhere copies it first: a pusher that skips the upload
on that answer must find the blob here when its manifest is checked. Other writes are the
local registry's (`web/pushes.py`), unchanged.
"""

from __future__ import annotations

import time
from typing import Protocol

from aiohttp import web

from edgecache.cluster.client import checked_time
from edgecache.cluster.localcopy import LocalCopies
from edgecache.cluster.localdeletes import LocalDeletes
from edgecache.cluster.localtags import LocalTags, TagEvents, merged
from edgecache.cluster.proof import CHECKED_HEADER, DELETED_HEADER
from edgecache.errors import BlobUnknown, ManifestUnknown, NameUnknown, NotFound
from edgecache.local.registry import LocalRegistry
from edgecache.proxy.routing import Target
from edgecache.proxy.tags import TagQuery, page
from edgecache.storage.tombstones import DIGESTS
from edgecache.web.errors import error_response
from edgecache.web.handlers import CACHE_HEADER, STALE_WARNING, next_link
from edgecache.web.ranges import parse_range
from edgecache.web.responses import stream_fill

READS = frozenset({"GET", "HEAD"})
ANY_SIZE = 1 << 62  # a Range checked before the size is known (its bounds are checked after)


class LocalRoute(Protocol):
    """What the handlers need of the local route: its name, and a request answered."""

    name: str

    async def handle(self, request: web.Request, target: Target) -> web.StreamResponse: ...


class SiteLocal:
    def __init__(self, local: LocalRoute, copies: LocalCopies, registry: LocalRegistry) -> None:
        self.name = local.name
        self._local = local
        self._copies = copies
        self._registry = registry
        self._index = registry.index
        self._deletes = LocalDeletes(copies.site)
        self._tags = LocalTags(copies.site)

    async def handle(self, request: web.Request, target: Target) -> web.StreamResponse:
        if target.kind == "manifests" and target.digest is None and request.method in READS:
            return await self._tag(request, target)
        if target.kind == "tags" and request.method == "GET":
            return await self._tag_list(request, target)
        if request.method == "DELETE" and target.kind in ("manifests", "blobs"):
            return await self._delete(request, target)
        try:
            return await self._local.handle(request, target)
        except NotFound:
            if (request.method not in READS or target.peer == "local"
                    or target.kind not in ("manifests", "blobs")):
                raise
        if target.kind == "manifests":  # by digest
            if self._index.tombstones.at(DIGESTS, str(target.digest)) is not None:
                raise ManifestUnknown(f"manifest unknown: {target.reference} was deleted")
            await self._copies.manifest(target)
            return await self._local.handle(request, target)
        if await self._copies.held_as_cache(target):
            return await self._local.handle(request, target)
        digest = str(target.content_digest())
        headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest,
                   "ETag": f'"{digest}"', "Accept-Ranges": "bytes"}
        if request.method == "HEAD" and not target.peer:
            return await self._head_copied(request, target)
        if request.method == "HEAD":
            size = await self._copies.head_blob(target)
            if size is not None:
                headers["Content-Length"] = str(size)
            return web.Response(headers=headers)
        parse_range(request.headers.get("Range"), ANY_SIZE)  # a malformed one copies nothing
        fill = self._copies.blob(target)
        with fill.open_reader() as reader:
            try:
                size = await fill.wait_size()
            except NotFound:
                raise BlobUnknown(f"blob unknown: {digest}") from None
            span = parse_range(request.headers.get("Range"), size) if size is not None else None
            return await stream_fill(request, reader, size, span, headers)

    async def _head_copied(self, request: web.Request,
                           target: Target) -> web.StreamResponse:
        """A client's HEAD of a blob held elsewhere on the site copies it first: a pusher
        asks it to skip the upload, and its manifest PUT then checks this node's content."""
        fill = self._copies.blob(target)
        with fill.open_reader():
            while not fill.ended:  # each wait bounded by the fill's stall timeout
                await fill.changed()
        if isinstance(fill.error, NotFound):
            raise BlobUnknown(f"blob unknown: {target.reference}")
        if fill.error is not None:
            raise fill.error
        return await self._local.handle(request, target)

    async def _tag(self, request: web.Request, target: Target) -> web.StreamResponse:
        """A client's read of a local tag takes the site's newest event of it first (a 404
        when no node has it); a peer's is answered from this store, with when it was pushed
        (or deleted: a 404 that says so)."""
        if not target.peer:
            await self._copies.refresh_tag(target, self._index)
        try:
            response = await self._local.handle(request, target)
        except ManifestUnknown as exc:
            at = self._index.tombstones.at(target.repository, target.reference)
            if not target.peer or at is None:
                raise
            answer = error_response(404, "MANIFEST_UNKNOWN", str(exc))
            answer.headers.update({CHECKED_HEADER: repr(at), DELETED_HEADER: "tag"})
            return answer
        at = self._copies.tag_time(target) if target.peer else None
        if at is not None:
            response.headers[CHECKED_HEADER] = repr(at)
        return response

    async def _delete(self, request: web.Request, target: Target) -> web.StreamResponse:
        """A peer's delete (carried from the node a client asked) is made here with its time
        and never carried further; a client's is made here, then carried to the live peers:
        202 when this node or any peer held it."""
        if target.peer:
            at = checked_time(request.headers.get(CHECKED_HEADER)) or time.time()
            if target.kind == "blobs":
                self._registry.delete_blob(target.content_digest(), at)
            else:
                if target.digest is not None:  # never copied back from a node that missed it
                    self._index.tombstones.record(DIGESTS, str(target.digest), at)
                self._registry.delete_manifest(target.repository, target.reference,
                                               target.digest, at)
            return web.Response(status=202)
        missing: NotFound | None = None
        try:
            await self._local.handle(request, target)  # the push right is checked there
        except NotFound as exc:
            missing = exc
        tombstone = (target.repository, target.reference) if target.digest is None else (
            DIGESTS, str(target.digest))
        at = ((self._index.tombstones.at(*tombstone) if target.kind == "manifests" else None)
              or time.time())
        held = await self._deletes.carry(target, at)
        if missing is not None and not held:
            raise missing
        if missing is not None and target.kind == "manifests":
            self._index.tombstones.record(*tombstone, at)
        return web.Response(status=202)

    async def _tag_list(self, request: web.Request, target: Target) -> web.StreamResponse:
        """A peer's question gets this node's events; a client's list is the site's (sorted
        and paged as any tags list), stale when a member could not be asked."""
        repository = target.repository
        own = TagEvents(self._index.tag_times(repository),
                        self._index.tombstones.of(repository))
        if target.peer:
            return web.json_response(own.document(repository))
        theirs, complete = await self._tags.of_peers(target)
        tags = merged([own, *theirs])
        if not tags:  # content is per registry: a repository is its tags (as Distribution)
            raise NameUnknown(f"repository name not known to registry: {repository} has no "
                              "tags")
        query = TagQuery.parse(request.query)
        found = page(tags, query)
        response = web.json_response({"name": repository, "tags": found.tags})
        response.headers[CACHE_HEADER] = "local" if complete else "stale"
        if not complete:
            response.headers["Warning"] = STALE_WARNING
        if found.more:
            response.headers["Link"] = next_link(request, query.n, found.tags[-1])
        return response
