"""The index's totals and ownership rows, against real SQLite files.

Totals are kept by triggers so that the server reads them in O(1) (issue 13, item 7): they
must agree with the rows whichever process writes, and an index written by the previous schema
(version 2, no totals) must be counted once when it is opened.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from pathlib import Path

from edgecache.storage.index import Index
from edgecache.storage.schema import SCHEMA_VERSION, UNKNOWN_OWNER

V2_SCHEMA = """
CREATE TABLE blobs (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, media_type TEXT,
                    added_at REAL NOT NULL, last_access REAL NOT NULL);
CREATE INDEX blobs_by_access ON blobs(last_access);
CREATE TABLE refs (parent TEXT NOT NULL, child TEXT NOT NULL, PRIMARY KEY (parent, child))
    WITHOUT ROWID;
CREATE INDEX refs_by_child ON refs(child);
CREATE TABLE links (upstream TEXT NOT NULL, digest TEXT NOT NULL,
                    PRIMARY KEY (digest, upstream)) WITHOUT ROWID;
CREATE TABLE tags (upstream TEXT NOT NULL, repository TEXT NOT NULL, tag TEXT NOT NULL,
                   digest TEXT NOT NULL, checked_at REAL NOT NULL,
                   PRIMARY KEY (upstream, repository, tag));
PRAGMA user_version=2;
"""


def digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(b"%d" % n).hexdigest()


def counted(path: Path) -> tuple[int, int, int]:
    """(bytes, blobs, manifests) straight from the rows, from another connection."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) - COUNT(media_type),"
                         " COUNT(media_type) FROM blobs").fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def test_totals_follow_every_write_from_any_connection(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    index, other = Index(path), Index(path)  # the server, and an import in another process
    try:
        index.record_blob(digest(1), 100)
        index.record_blob(digest(2), 20, "application/vnd.oci.image.manifest.v1+json",
                          [digest(1)])
        other.record_blob(digest(3), 7)
        index.record_blob(digest(1), 100, "application/vnd.oci.image.manifest.v1+json")
        index.record_blob(digest(3), 999)  # a second publish keeps the first size
        other.forget([digest(2)])
        index.touch(digest(1))
        index.flush_access()
        assert (index.total_size(), *index.counts()) == counted(path) == (107, 1, 1)
        assert (other.total_size(), *other.counts()) == (107, 1, 1)
    finally:
        index.close()
        other.close()


def test_a_version_2_index_is_counted_once_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(V2_SCHEMA)
        db.executemany("INSERT INTO blobs VALUES (?, ?, ?, 0, 0)",
                       [(digest(i), i, "m" if i % 3 == 0 else None) for i in range(1, 11)])
        db.commit()
    for _ in range(2):  # the second open must not count the rows again
        index = Index(path)
        try:
            assert (index.total_size(), *index.counts()) == counted(path) == (55, 7, 3)
        finally:
            index.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_row_and_its_links_are_one_transaction(tmp_path: Path) -> None:
    """Written together, so no crash leaves private content indexed without its link."""
    path = tmp_path / "index.db"
    index = Index(path)
    try:
        index.record_blob(digest(1), 5, upstreams=("private.test",))
        index.record_blob(digest(2), 5, upstreams=(UNKNOWN_OWNER,))
        assert index.links(digest(1)) == {"private.test"}
        assert index.links(digest(2)) == {UNKNOWN_OWNER}
    finally:
        index.close()
