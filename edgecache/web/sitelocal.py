"""The local registry's route on a node of a site: a read this node's store cannot answer is
asked of the site before it is a 404 (`cluster/localcopy.py` copies it), so content pushed
into any node pulls through every node, by every routing style.

A client's read and an owner's (a peer asking this node as the owner of the key) ask the site;
a peer's `local` question is answered from this store alone, as for upstream content. A local
tag is read as the site's newest push of it (`LocalCopies.refresh_tag`). Writes and everything
else are the local registry's (`web/pushes.py`), unchanged.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from edgecache.cluster.localcopy import LocalCopies
from edgecache.cluster.proof import CHECKED_HEADER
from edgecache.errors import BlobUnknown, NotFound
from edgecache.proxy.routing import Target
from edgecache.web.ranges import parse_range
from edgecache.web.responses import stream_fill

READS = frozenset({"GET", "HEAD"})
ANY_SIZE = 1 << 62  # a Range checked before the size is known (its bounds are checked after)


class LocalRoute(Protocol):
    """What the handlers need of the local route: its name, and a request answered."""

    name: str

    async def handle(self, request: web.Request, target: Target) -> web.StreamResponse: ...


class SiteLocal:
    def __init__(self, local: LocalRoute, copies: LocalCopies) -> None:
        self.name = local.name
        self._local = local
        self._copies = copies

    async def handle(self, request: web.Request, target: Target) -> web.StreamResponse:
        if target.kind == "manifests" and target.digest is None and request.method in READS:
            return await self._tag(request, target)
        try:
            return await self._local.handle(request, target)
        except NotFound:
            if (request.method not in READS or target.peer == "local"
                    or target.kind not in ("manifests", "blobs")):
                raise
        if target.kind == "manifests":  # by digest
            await self._copies.manifest(target)
            return await self._local.handle(request, target)
        if await self._copies.held_as_cache(target):
            return await self._local.handle(request, target)
        digest = str(target.content_digest())
        headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest,
                   "ETag": f'"{digest}"', "Accept-Ranges": "bytes"}
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

    async def _tag(self, request: web.Request, target: Target) -> web.StreamResponse:
        """A client's read of a local tag takes the site's newest push of it first (a 404 when
        no node has it); a peer's is answered from this store, with when it was pushed."""
        if not target.peer:
            await self._copies.refresh_tag(target)
        response = await self._local.handle(request, target)
        at = self._copies.tag_time(target) if target.peer else None
        if at is not None:
            response.headers[CHECKED_HEADER] = repr(at)
        return response
