"""The index: what the files on disk mean. SQLite, one file, survives restarts.

It records, per digest, the size, (for manifests) the media type and the digests it references,
and the last time it was used; per (upstream, repository, tag) the digest the upstream last gave
and when that was confirmed. Content bytes never live here: the blob tree is the truth for "do
we have it", the index for "what is it".

Access times are kept in memory and written in one transaction per flush (an SD card must not
take a write per request). Using a manifest refreshes everything it references, two levels down
(index → platform manifests → configs and layers), so an image ages as a whole.

Queries run on the event loop: microseconds each (WAL), none walks the table. Totals are kept
by triggers in the `totals` row, in the change's transaction: exact whichever process writes
(`import` has its own). What reads every row runs elsewhere: eviction in a child, reconcile
before the listeners start. A row and its links are one transaction (`record_blob(upstreams=)`):
no crash leaves private content indexed without its link; a file adopted after a crash is
linked to `UNKNOWN_OWNER`, restricted until the asking route's upstream confirms the digest.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edgecache.errors import StorageError
from edgecache.policy import Entry
from edgecache.storage.schema import SCHEMA, SCHEMA_VERSION, SEED_TOTALS

_CHILDREN_SQL = "SELECT child FROM refs WHERE parent=?"
_PARENTS_SQL = "SELECT parent FROM refs WHERE child=?"


@dataclass(frozen=True, slots=True)
class TagRecord:
    digest: str
    checked_at: float


@dataclass(frozen=True, slots=True)
class TagRow:
    upstream: str
    repository: str
    tag: str
    digest: str


class Index:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=10.0)
        self._accessed: dict[str, float] = {}
        try:  # a damaged or foreign file is the operator's to see, in one line
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if self._db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StorageError(f"index {path}: {exc}") from exc

    def _migrate(self) -> None:
        """Create or upgrade the schema; written only when the version differs, so opening an
        index to read it (an import that is then refused) leaves the file as it was."""
        with self._transaction():
            for part in SCHEMA:
                for statement in _statements(part):
                    self._db.execute(statement)
            if self._db.execute("SELECT 1 FROM totals").fetchone() is None:
                self._db.execute(SEED_TOTALS)  # once, from the rows a version 2 index has
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self.flush_access()
        self._db.close()

    def defer_checkpoints(self) -> None:
        """Commits on this connection never checkpoint the WAL: a checkpoint copies pages into
        the database and fsyncs it (measured on the loop: a 0.26 s fdatasync after an eviction's
        deletes); `checkpoint()` does it instead, from another thread."""
        self._db.execute("PRAGMA wal_autocheckpoint=0")

    def healthy(self) -> bool:
        try:
            return bool(self._db.execute("SELECT 1").fetchone() == (1,))
        except sqlite3.Error:
            return False

    # ---- blobs and manifests ------------------------------------------------------------------

    def record_blob(self, digest: str, size: int, media_type: str | None = None,
                    children: Iterable[str] = (), upstreams: Iterable[str] = ()) -> None:
        """Index a published file, linked to `upstreams`, in one transaction."""
        now = time.time()
        with self._transaction():
            self._db.execute(
                "INSERT INTO blobs(digest, size, media_type, added_at, last_access)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(digest) DO UPDATE SET"
                " media_type=COALESCE(excluded.media_type, blobs.media_type),"
                " last_access=excluded.last_access",
                (digest, size, media_type, now, now),
            )
            self._db.executemany("INSERT OR IGNORE INTO refs(parent, child) VALUES (?, ?)",
                                 [(digest, child) for child in children])
            self._db.executemany("INSERT OR IGNORE INTO links(upstream, digest) VALUES (?, ?)",
                                 [(upstream, digest) for upstream in upstreams])

    def media_type(self, digest: str) -> str | None:
        row = self._db.execute("SELECT media_type FROM blobs WHERE digest=?", (digest,)).fetchone()
        return row[0] if row else None

    def size(self, digest: str) -> int | None:
        row = self._db.execute("SELECT size FROM blobs WHERE digest=?", (digest,)).fetchone()
        return row[0] if row else None

    def link(self, upstream: str, digest: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO links(upstream, digest) VALUES (?, ?)",
                         (upstream, digest))

    def links(self, digest: str) -> set[str]:
        return {row[0] for row in self._db.execute(
            "SELECT upstream FROM links WHERE digest=?", (digest,))}

    def forget(self, digests: Iterable[str]) -> None:
        rows = [(d,) for d in digests]
        with self._transaction():
            self._db.executemany("DELETE FROM blobs WHERE digest=?", rows)
            self._db.executemany("DELETE FROM refs WHERE parent=?", rows)
            self._db.executemany("DELETE FROM links WHERE digest=?", rows)
        for (digest,) in rows:
            self._accessed.pop(digest, None)

    def total_size(self) -> int:
        return int(self._db.execute("SELECT bytes FROM totals WHERE id=0").fetchone()[0])

    def counts(self) -> tuple[int, int]:
        """(blobs, manifests) in the index."""
        row = self._db.execute("SELECT blobs, manifests FROM totals WHERE id=0").fetchone()
        return int(row[0]) - int(row[1]), int(row[1])

    def lru(self) -> Generator[Entry, None, None]:
        """Every entry, least recently used first, read lazily from the `last_access` index
        (pending access times are not in it: flush first)."""
        cursor = self._db.execute(
            "SELECT digest, size, last_access FROM blobs ORDER BY last_access, digest")
        try:
            for digest, size, last_access in cursor:
                yield Entry(digest, size, last_access)
        finally:
            cursor.close()

    def sizes(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT digest, size FROM blobs"))

    def digests(self) -> Iterator[tuple[str, int]]:
        yield from self._db.execute("SELECT digest, size FROM blobs")

    def children(self, digest: str) -> list[str]:
        return [row[0] for row in self._db.execute(_CHILDREN_SQL, (digest,))]

    def parents(self, digest: str) -> list[str]:
        return [row[0] for row in self._db.execute(_PARENTS_SQL, (digest,))]

    # ---- access times, in batches -------------------------------------------------------------

    def touch(self, digest: str) -> None:
        self._accessed[digest] = time.time()

    def flush_access(self) -> int:
        """Write pending access times; a manifest's refresh its references two levels down."""
        pending, self._accessed = self._accessed, {}
        if not pending:
            return 0
        rows = [(when, digest) for digest, when in pending.items()]
        with self._transaction():
            self._db.executemany(
                "UPDATE blobs SET last_access=MAX(last_access, ?) WHERE digest=?", rows)
            self._db.executemany(
                "UPDATE blobs SET last_access=MAX(last_access, ?) WHERE digest IN"
                " (SELECT child FROM refs WHERE parent=?)", rows)
            self._db.executemany(
                "UPDATE blobs SET last_access=MAX(last_access, ?) WHERE digest IN"
                " (SELECT r2.child FROM refs r1 JOIN refs r2 ON r2.parent=r1.child"
                "  WHERE r1.parent=?)", rows)
        return len(rows)

    # ---- tags ---------------------------------------------------------------------------------

    def tag(self, upstream: str, repository: str, tag: str) -> TagRecord | None:
        row = self._db.execute(
            "SELECT digest, checked_at FROM tags WHERE upstream=? AND repository=? AND tag=?",
            (upstream, repository, tag),
        ).fetchone()
        return TagRecord(row[0], row[1]) if row else None

    def set_tag(self, upstream: str, repository: str, tag: str, digest: str,
                checked_at: float | None = None) -> None:
        self._db.execute(
            "INSERT INTO tags(upstream, repository, tag, digest, checked_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(upstream, repository, tag) DO UPDATE SET"
            " digest=excluded.digest, checked_at=excluded.checked_at",
            (upstream, repository, tag, digest, time.time() if checked_at is None else checked_at),
        )

    def tags(self, upstream: str, repository: str) -> list[str]:
        rows = self._db.execute(
            "SELECT tag FROM tags WHERE upstream=? AND repository=? ORDER BY tag",
            (upstream, repository),
        ).fetchall()
        return [row[0] for row in rows]

    def all_tags(self) -> list[TagRow]:
        return [TagRow(*row) for row in self._db.execute(
            "SELECT upstream, repository, tag, digest FROM tags ORDER BY 1, 2, 3")]

    # ---- plumbing -----------------------------------------------------------------------------

    @property
    def sql(self) -> sqlite3.Connection:
        """The connection, for the query modules beside this one (one noun each: a table
        group's queries live with their table, the connection and its rules live here)."""
        return self._db

    def transaction(self) -> _Transaction:
        """BEGIN IMMEDIATE ... COMMIT: what the query modules beside this one write together."""
        return _Transaction(self._db)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


def checkpoint(path: Path) -> None:
    """Copy the WAL into the database on a connection of its own (PASSIVE: it never waits for
    readers or writers), so the WAL of a deferred-checkpoint index stays small."""
    db = sqlite3.connect(path, timeout=10.0)
    try:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        db.close()


def _statements(script: str) -> list[str]:
    """The script's statements (a trigger body holds `;`s: split on complete statements)."""
    out, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    return out


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, so a batch is one fsync-free WAL append, all or nothing."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
