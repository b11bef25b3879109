"""Reading a store's index from beside the server (read-only): what a test asserts about rows
no API shows, such as when a tag was last confirmed."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def tag_checked_at(storage: Path, upstream: str, repository: str, tag: str) -> float:
    """When the index at `storage` says the tag was last confirmed."""
    db = sqlite3.connect(f"file:{storage / 'index.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT checked_at FROM tags WHERE upstream=? AND repository=? AND "
                         "tag=?", (upstream, repository, tag)).fetchone()
    finally:
        db.close()
    assert row is not None, f"no tag {upstream}/{repository}:{tag} in {storage}"
    return float(row[0])
