"""The index: what the files on disk mean. SQLite, one file, survives restarts.

It records, per digest, the size and (for manifests) the media type, and per
(upstream, repository, tag) the digest the upstream last gave and when it was confirmed. Content
bytes never live here: the blob tree is the truth for "do we have it", the index for "what is it".
Queries run on the event loop: each is a few microseconds against a local WAL database.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    media_type  TEXT,               -- set for manifests, NULL for layers and configs
    added_at    REAL NOT NULL,
    last_access REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    upstream    TEXT NOT NULL,
    repository  TEXT NOT NULL,
    tag         TEXT NOT NULL,
    digest      TEXT NOT NULL,
    checked_at  REAL NOT NULL,
    PRIMARY KEY (upstream, repository, tag)
);
"""


@dataclass(frozen=True, slots=True)
class TagRecord:
    digest: str
    checked_at: float


class Index:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def record_blob(self, digest: str, size: int, media_type: str | None = None) -> None:
        now = time.time()
        self._db.execute(
            "INSERT INTO blobs(digest, size, media_type, added_at, last_access)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(digest) DO UPDATE SET"
            " media_type=COALESCE(excluded.media_type, blobs.media_type),"
            " last_access=excluded.last_access",
            (digest, size, media_type, now, now),
        )

    def media_type(self, digest: str) -> str | None:
        row = self._db.execute("SELECT media_type FROM blobs WHERE digest=?", (digest,)).fetchone()
        return row[0] if row else None

    def forget_blob(self, digest: str) -> None:
        self._db.execute("DELETE FROM blobs WHERE digest=?", (digest,))

    def tag(self, upstream: str, repository: str, tag: str) -> TagRecord | None:
        row = self._db.execute(
            "SELECT digest, checked_at FROM tags WHERE upstream=? AND repository=? AND tag=?",
            (upstream, repository, tag),
        ).fetchone()
        return TagRecord(row[0], row[1]) if row else None

    def set_tag(self, upstream: str, repository: str, tag: str, digest: str) -> None:
        self._db.execute(
            "INSERT INTO tags(upstream, repository, tag, digest, checked_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(upstream, repository, tag) DO UPDATE SET"
            " digest=excluded.digest, checked_at=excluded.checked_at",
            (upstream, repository, tag, digest, time.time()),
        )

    def tags(self, upstream: str, repository: str) -> list[str]:
        rows = self._db.execute(
            "SELECT tag FROM tags WHERE upstream=? AND repository=? ORDER BY tag",
            (upstream, repository),
        ).fetchall()
        return [row[0] for row in rows]
