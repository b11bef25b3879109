"""When local content was deleted: the index's `tombstones`, beside `index.py`.

A site's nodes each keep their own record of a local tag (`tags`, with the time of its push):
a delete that left no row would be no evidence at all, and the newest push on another node
would copy the tag back (`cluster/localcopy.py`). So a delete leaves a tombstone with its time
and the site compares events, last writer wins: a delete newer than a push hides it, a push
newer than a delete restores it. Tags are per repository; a manifest deleted by digest is local
content for every repository, so its tombstone has the repository ''.

Tombstones expire after `KEEP` (30 days): the table does not grow with every delete ever made.
A node that was unreachable for longer than that can bring back a tag deleted meanwhile; the
expired rows are swept whenever a new one is written (one indexed DELETE).
"""

from __future__ import annotations

import time

from edgecache.storage.index import Index

KEEP = 30 * 86400.0
DIGESTS = ""  # the repository of a manifest's tombstone (deleted by digest)


class Tombstones:
    def __init__(self, index: Index, keep: float = KEEP) -> None:
        self._index = index
        self._keep = keep

    def record(self, repository: str, reference: str, at: float) -> None:
        """`reference` deleted at `at` (a later delete's time is kept: the newest event)."""
        self.sweep()
        self._index.sql.execute(
            "INSERT INTO tombstones(repository, reference, deleted_at) VALUES (?, ?, ?)"
            " ON CONFLICT(repository, reference) DO UPDATE SET"
            " deleted_at=MAX(deleted_at, excluded.deleted_at)", (repository, reference, at))

    def clear(self, repository: str, reference: str) -> None:
        """Pushed again: no longer deleted."""
        self._index.sql.execute("DELETE FROM tombstones WHERE repository=? AND reference=?",
                                (repository, reference))

    def at(self, repository: str, reference: str) -> float | None:
        """When `reference` was deleted, if it was within `KEEP`."""
        row = self._index.sql.execute(
            "SELECT deleted_at FROM tombstones WHERE repository=? AND reference=?"
            " AND deleted_at >= ?", (repository, reference, time.time() - self._keep)).fetchone()
        return None if row is None else float(row[0])

    def of(self, repository: str) -> dict[str, float]:
        """The deleted tags of `repository`, with when."""
        return {tag: at for tag, at in self._index.sql.execute(
            "SELECT reference, deleted_at FROM tombstones WHERE repository=? AND deleted_at >= ?",
            (repository, time.time() - self._keep))}

    def sweep(self) -> int:
        """Forget tombstones older than `KEEP`; how many."""
        return self._index.sql.execute("DELETE FROM tombstones WHERE deleted_at < ?",
                                       (time.time() - self._keep,)).rowcount
