"""A delete of local content carried to the site's other nodes, at once and bounded in time.

A node's local registry holds its own pushes and its copies of the other nodes' (replicas,
`localcopy.py`): a DELETE that stayed on the node it was sent to would leave the copies, and the
next pull through that node would copy them back. So the node that takes a client's DELETE
sends the same DELETE to every live peer (`local` mode: never forwarded again), carrying the
delete's time in `X-Edgecache-Checked-At` so every node keeps the same tombstone
(`storage/tombstones.py`, last writer wins). Best effort: a peer that does not answer within
`2 x cluster.ask_timeout` keeps its copy. For a tag that is no loss (a pull of the tag through
any node compares the site's events: the delete, newer, wins); a manifest deleted by digest
keeps its tombstone on every node told, so none copies it back from a node that missed it.
"""

from __future__ import annotations

import asyncio
import logging

from edgecache.proxy.routing import Target

from .client import PeerFailed, route_path
from .proof import CHECKED_HEADER
from .site import LOCAL, Site

log = logging.getLogger(__name__)


class LocalDeletes:
    def __init__(self, site: Site) -> None:
        self._site = site

    async def carry(self, target: Target, at: float) -> int:
        """Send `target`'s DELETE, deleted `at`, to every live peer at once; how many of them
        held it (answered 202)."""
        peers = self._site.peers
        path = route_path(target, target.kind, target.reference)
        timeout = 2 * self._site.ask_timeout

        async def tell(peer: str) -> bool:
            try:
                status, _ = await self._site.client.fetch(
                    "DELETE", peer, path, LOCAL, timeout, {CHECKED_HEADER: repr(at)})
            except PeerFailed as exc:
                log.warning("delete of %s/%s not carried to %s: %s", target.repository,
                            target.reference, peer, exc)
                if exc.broken:
                    peers.failed(peer, str(exc))
                return False
            return status == 202

        told = await asyncio.gather(*(tell(p) for p in peers.live() if p != peers.me))
        return sum(told)
