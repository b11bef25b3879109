"""Where the service gets what the store does not hold: one node asks its upstream
(`Direct`); a node of a site asks the site first (`edgecache.cluster.site.Site`, the same
three calls). Each call gets the request's target and the upstream's own call, so the cluster
can decide per request (a peer's request is never forwarded) without the service knowing how.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from edgecache.proxy.download import Opener
from edgecache.proxy.routing import Target
from edgecache.upstream.client import ManifestInfo

HeadCall = Callable[[], Awaitable[ManifestInfo]]
SizeCall = Callable[[], Awaitable[int | None]]
GetCall = Callable[[], Awaitable[tuple[bytes, ManifestInfo]]]


class Sources(Protocol):
    def opener(self, target: Target, upstream: Opener) -> Opener: ...

    async def head_blob(self, target: Target, upstream: SizeCall) -> int | None: ...

    async def head_manifest(self, target: Target, reference: str,
                            upstream: HeadCall) -> ManifestInfo: ...

    async def get_manifest(self, target: Target, reference: str,
                           upstream: GetCall) -> tuple[bytes, ManifestInfo]: ...


class Direct:
    """A node on its own: the upstream, as the service always asked it."""

    def opener(self, target: Target, upstream: Opener) -> Opener:
        return upstream

    async def head_blob(self, target: Target, upstream: SizeCall) -> int | None:
        return await upstream()

    async def head_manifest(self, target: Target, reference: str,
                            upstream: HeadCall) -> ManifestInfo:
        return await upstream()

    async def get_manifest(self, target: Target, reference: str,
                           upstream: GetCall) -> tuple[bytes, ManifestInfo]:
        return await upstream()
