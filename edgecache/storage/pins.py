"""The runtime pins' table (`pins`): what `edgecache pin` added while the service ran.

The config's `pins:` are the declarative base and never live here; eviction protects the union
(`storage/eviction.py` reads both at every run), so the table is the one place a runtime pin is
kept, across restarts, and there is no second copy in memory to keep in step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from edgecache.storage.index import Index


@dataclass(frozen=True, slots=True)
class PinRow:
    reference: str
    added_at: float


def references(index: Index) -> tuple[str, ...]:
    return tuple(row[0] for row in index.sql.execute(
        "SELECT reference FROM pins ORDER BY reference"))


def rows(index: Index) -> list[PinRow]:
    return [PinRow(*row) for row in index.sql.execute(
        "SELECT reference, added_at FROM pins ORDER BY reference")]


def add(index: Index, texts: Iterable[str], now: float | None = None) -> list[str]:
    """Record pins (one transaction); those that were not pinned yet, in order."""
    when = time.time() if now is None else now
    added = []
    with index.transaction():
        for text in texts:
            cursor = index.sql.execute(
                "INSERT OR IGNORE INTO pins(reference, added_at) VALUES (?, ?)", (text, when))
            if cursor.rowcount:
                added.append(text)
    return added


def remove(index: Index, texts: Iterable[str]) -> list[str]:
    """Forget pins (one transaction); those that were pinned, in order."""
    removed = []
    with index.transaction():
        for text in texts:
            if index.sql.execute("DELETE FROM pins WHERE reference=?", (text,)).rowcount:
                removed.append(text)
    return removed
