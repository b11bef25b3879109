"""The index's tables. Each part is created with IF NOT EXISTS, in order, whenever the stored
`user_version` differs from SCHEMA_VERSION: a feature that needs a table adds a part here and
bumps the version; an index of an older version gains the new tables on its next open.
"""

from __future__ import annotations

SCHEMA_VERSION = 8
UNKNOWN_OWNER = "(unknown)"  # not an upstream name: config names are host[:port]
BASE = """
CREATE TABLE IF NOT EXISTS blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    media_type  TEXT,               -- set for manifests, NULL for layers and configs
    added_at    REAL NOT NULL,
    last_access REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS blobs_by_access ON blobs(last_access);
CREATE TABLE IF NOT EXISTS refs (   -- manifest → what it references
    parent TEXT NOT NULL,
    child  TEXT NOT NULL,
    PRIMARY KEY (parent, child)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refs_by_child ON refs(child);
CREATE TABLE IF NOT EXISTS links (  -- which upstream a digest came from (scopes private content)
    upstream TEXT NOT NULL,
    digest   TEXT NOT NULL,
    PRIMARY KEY (digest, upstream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    upstream    TEXT NOT NULL,
    repository  TEXT NOT NULL,
    tag         TEXT NOT NULL,
    digest      TEXT NOT NULL,
    checked_at  REAL NOT NULL,
    PRIMARY KEY (upstream, repository, tag)
);
CREATE TABLE IF NOT EXISTS totals (  -- one row, kept by the triggers below
    id        INTEGER PRIMARY KEY CHECK (id = 0),
    bytes     INTEGER NOT NULL,
    blobs     INTEGER NOT NULL,
    manifests INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS totals_insert AFTER INSERT ON blobs BEGIN
    UPDATE totals SET bytes=bytes+NEW.size, blobs=blobs+1,
                      manifests=manifests+(NEW.media_type IS NOT NULL) WHERE id=0;
END;
CREATE TRIGGER IF NOT EXISTS totals_delete AFTER DELETE ON blobs BEGIN
    UPDATE totals SET bytes=bytes-OLD.size, blobs=blobs-1,
                      manifests=manifests-(OLD.media_type IS NOT NULL) WHERE id=0;
END;
CREATE TRIGGER IF NOT EXISTS totals_update AFTER UPDATE OF size, media_type ON blobs BEGIN
    UPDATE totals SET bytes=bytes-OLD.size+NEW.size,
                      manifests=manifests-(OLD.media_type IS NOT NULL)
                                         +(NEW.media_type IS NOT NULL) WHERE id=0;
END;
"""
SEED_TOTALS = ("INSERT INTO totals(id, bytes, blobs, manifests)"
               " SELECT 0, COALESCE(SUM(size), 0), COUNT(*), COUNT(media_type) FROM blobs")

# An upstream's referrers answer (OCI 1.1 API), kept as a stored index (`storage/referrers.py`).
REFERRERS = """
CREATE TABLE IF NOT EXISTS referrers (
    upstream    TEXT NOT NULL,
    repository  TEXT NOT NULL,
    subject     TEXT NOT NULL,
    digest      TEXT NOT NULL,
    checked_at  REAL NOT NULL,
    PRIMARY KEY (upstream, repository, subject)
);
"""

SUBJECTS = """
CREATE TABLE IF NOT EXISTS subjects (  -- a pushed manifest's `subject` (the referrers API)
    digest        TEXT PRIMARY KEY,
    subject       TEXT NOT NULL,
    artifact_type TEXT
);
CREATE INDEX IF NOT EXISTS subjects_by_subject ON subjects(subject);
"""

PINS = """
CREATE TABLE IF NOT EXISTS pins (   -- runtime pins (`edgecache pin`); config pins: are not here
    reference TEXT PRIMARY KEY,
    added_at  REAL NOT NULL
);
"""

UPLOADS = """
CREATE TABLE IF NOT EXISTS uploads (  -- push sessions in progress (storage/uploadindex.py)
    id          TEXT PRIMARY KEY,     -- its file: tmp/upload-<id>.part
    repository  TEXT NOT NULL,
    received    INTEGER NOT NULL,     -- bytes acknowledged; after a crash the file's size rules
    created_at  REAL NOT NULL,
    touched_at  REAL NOT NULL
);
"""

# Deletes of local content, kept for a site's last-writer-wins (`storage/tombstones.py`).
TOMBSTONES = """
CREATE TABLE IF NOT EXISTS tombstones (  -- repository '' : a manifest deleted by digest
    repository  TEXT NOT NULL,
    reference   TEXT NOT NULL,
    deleted_at  REAL NOT NULL,
    PRIMARY KEY (repository, reference)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tombstones_by_time ON tombstones(deleted_at);
"""

SCHEMA: tuple[str, ...] = (BASE, SUBJECTS, REFERRERS, PINS, UPLOADS, TOMBSTONES)
