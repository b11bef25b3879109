"""The push sessions' table (`uploads`): what lets an upload session outlive its process.

A row is written when a session starts (`local/uploads.py`), updated after each request on it
(bytes acknowledged, last activity, wall-clock time: it must mean the same to the next
process) and deleted when the session is published, cancelled or expires. Its partial file is
`tmp/upload-<id>.part` (`Layout.upload`). At start `survivors` decides, before tmp/ is swept,
which of those files stay: a row not expired whose file is there. Everything else goes, rows
and files alike, so an expired or orphaned partial file never outlives one start.

`received` is a record, not the truth: every byte in the file arrived in order (a write that
a crash cut short leaves a prefix of its piece), so after a crash the file's size is where the
client resumes, even if the last chunk was never acknowledged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from edgecache.storage.index import Index
from edgecache.storage.layout import Layout


@dataclass(frozen=True, slots=True)
class UploadRow:
    id: str
    repository: str
    received: int
    created_at: float
    touched_at: float


def add(index: Index, session: str, repository: str, now: float) -> None:
    index.sql.execute(
        "INSERT INTO uploads(id, repository, received, created_at, touched_at)"
        " VALUES (?, ?, 0, ?, ?)", (session, repository, now, now))


def touch(index: Index, session: str, received: int, now: float) -> None:
    index.sql.execute("UPDATE uploads SET received=?, touched_at=? WHERE id=?",
                      (received, now, session))


def remove(index: Index, session: str) -> None:
    index.sql.execute("DELETE FROM uploads WHERE id=?", (session,))


def rows(index: Index) -> list[UploadRow]:
    return [UploadRow(*row) for row in index.sql.execute(
        "SELECT id, repository, received, created_at, touched_at FROM uploads ORDER BY id")]


def survivors(index: Index, layout: Layout, timeout: float | None,
              now: float | None = None) -> frozenset[str]:
    """The tmp/ names the start-up sweep keeps: sessions idle at most `timeout` (None: the
    local registry is off, so none) whose file is there. The other rows are deleted here, in
    one transaction; their files go with the sweep."""
    now = time.time() if now is None else now
    keep, drop = set(), []
    for row in rows(index):
        name = layout.upload(row.id).name
        if timeout is not None and now - row.touched_at <= timeout and \
                layout.upload(row.id).is_file():
            keep.add(name)
        else:
            drop.append((row.id,))
    if drop:
        with index.transaction():
            index.sql.executemany("DELETE FROM uploads WHERE id=?", drop)
    return frozenset(keep)
