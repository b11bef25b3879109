"""Who may be handed content we hold: the one check every shared answer passes.

Content that came from an authenticated (private) upstream, cached or still downloading, is
handed out through another upstream's route only once that upstream confirms (HEAD) that it
has the digest too; the confirmation is remembered as a link. A public route cannot read a
private image, or learn that it is cached, by knowing its digest. The same check applies to
everything shared between requests: a cached file, a download another request started, the
size of either.
"""

from __future__ import annotations

from collections.abc import Set

from edgecache.proxy.lookups import Lookups
from edgecache.proxy.routing import Target
from edgecache.storage.store import Store
from edgecache.upstream.client import UpstreamClient


class Claims:
    def __init__(self, store: Store, lookups: Lookups, private: frozenset[str]) -> None:
        self._store = store
        self._lookups = lookups
        self._private = private

    def free(self, target: Target, owners: Set[str] = frozenset()) -> bool:
        """Whether content of `target.digest` from `owners` (and wherever the index says it
        came from) may answer `target`'s route without asking its upstream."""
        if not self._private:
            return True
        owners = owners | self._store.links(target.content_digest())
        return target.upstream in owners or not (owners & self._private)

    async def check(self, target: Target, client: UpstreamClient,
                    owners: Set[str] = frozenset()) -> bool:
        """Let content we hold answer a by-digest request on `target.upstream`'s route: free
        unless it came from a private upstream; then the route's upstream must have it too
        (NotFound if not). True when it had to ask (and so awaited): the caller looks again,
        and whatever it then finds for the digest may answer this route."""
        if self.free(target, owners):
            return False
        if target.kind == "blobs":
            await self._lookups.head_blob(client, target.repository, target.reference)
        else:
            await self._lookups.head_manifest(client, target.repository, target.reference)
        self._store.link(target.upstream, target.content_digest())
        return True
