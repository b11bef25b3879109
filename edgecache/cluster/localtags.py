"""A local repository's tags list as the site knows it: the union of every live node's.

Each node holds the tags pushed into it and those it copied; a list from one node alone would
miss a tag pushed elsewhere and not yet pulled through it. So a client's list asks every live
peer for its events at once (a `local` GET of the list, bounded by `cluster.ask_timeout`, never
forwarded): each tag with the time of its push, each tombstone with the time of its delete.
Per tag the newest event wins, as for a pull (`localcopy.py`): a tag deleted on one node and
still held, older, on another is not listed. A member that is down or does not answer leaves
the list `complete=False` (the handler marks it stale, as for a cached upstream's list).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edgecache.jsondoc import JsonUnreadable, parse_object
from edgecache.oci import MANIFEST_LIMIT
from edgecache.proxy.routing import Target

from .client import PeerFailed, checked_time, route_path
from .site import LOCAL, Site


@dataclass(frozen=True, slots=True)
class TagEvents:
    """One node's tags of a repository: pushed (tag -> push time), deleted (-> delete time)."""

    pushed: dict[str, float] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)

    def document(self, repository: str) -> dict[str, Any]:
        """A peer's answer: a tags list (what a client could read too) with the times."""
        return {"name": repository, "tags": sorted(self.pushed), "pushed": self.pushed,
                "deleted": self.deleted}

    @classmethod
    def read(cls, body: bytes) -> TagEvents | None:
        """A peer's answer, or None when it is not one (only numbers are taken as times)."""
        try:
            doc = parse_object(body, MANIFEST_LIMIT)
        except JsonUnreadable:
            return None
        pushed, deleted = doc.get("pushed"), doc.get("deleted")
        if not (isinstance(pushed, dict) and isinstance(deleted, dict)):
            return None
        return cls(_times(pushed), _times(deleted))


def _times(found: dict[Any, Any]) -> dict[str, float]:
    """Times as a peer's `X-Edgecache-Checked-At` is read: numbers, never later than now."""
    times = {k: checked_time(repr(v)) for k, v in found.items()
             if isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)}
    return {k: v for k, v in times.items() if v is not None}


def merged(events: Iterable[TagEvents]) -> list[str]:
    """The tags whose newest event across the nodes is a push."""
    pushed: dict[str, float] = {}
    deleted: dict[str, float] = {}
    for node in events:
        for tag, at in node.pushed.items():
            pushed[tag] = max(at, pushed.get(tag, at))
        for tag, at in node.deleted.items():
            deleted[tag] = max(at, deleted.get(tag, at))
    return sorted(tag for tag, at in pushed.items() if at > deleted.get(tag, -1.0))


class LocalTags:
    def __init__(self, site: Site) -> None:
        self._site = site

    async def of_peers(self, target: Target) -> tuple[list[TagEvents], bool]:
        """Every live peer's events for `target`'s repository, and whether every member of
        the site answered."""
        peers = self._site.peers
        path = route_path(target, "tags", "list")

        async def ask(peer: str) -> TagEvents | None:
            try:
                status, body = await self._site.client.fetch(
                    "GET", peer, path, LOCAL, self._site.ask_timeout)
            except PeerFailed as exc:
                if exc.broken:
                    peers.failed(peer, str(exc))
                return None
            return TagEvents.read(body) if status == 200 else None

        live = [p for p in peers.live() if p != peers.me]
        answers = await asyncio.gather(*(ask(p) for p in live))
        found = [a for a in answers if a is not None]
        return found, len(found) == len(peers.members)
