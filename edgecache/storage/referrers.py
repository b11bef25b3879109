"""The `referrers` table: which stored index holds an upstream's referrers answer for a subject.

The answer itself is content like any other (`Store.put`: an OCI image index, linked to the
upstream that gave it, its descriptors recorded as its children so a use refreshes them and
export follows them); this table only says which digest answers (upstream, repository, subject)
and when the upstream last confirmed it, as the `tags` table does for a tag.
"""

from __future__ import annotations

import time

from edgecache.storage.index import Index, TagRecord


def answer(index: Index, upstream: str, repository: str, subject: str) -> TagRecord | None:
    row = index.sql.execute(
        "SELECT digest, checked_at FROM referrers WHERE upstream=? AND repository=? AND subject=?",
        (upstream, repository, subject)).fetchone()
    return TagRecord(row[0], row[1]) if row else None


def set_answer(index: Index, upstream: str, repository: str, subject: str, digest: str) -> None:
    index.sql.execute(
        "INSERT INTO referrers(upstream, repository, subject, digest, checked_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT(upstream, repository, subject) DO UPDATE SET"
        " digest=excluded.digest, checked_at=excluded.checked_at",
        (upstream, repository, subject, digest, time.time()))
