"""What we throw away, and when: pure functions, no I/O, so every rule is testable on its own.

The cache's budget is the smaller of `storage.max_size` and what the filesystem can give while
keeping `storage.min_free` free (other tenants of the disk count). Eviction starts above the high
watermark and stops at the low one, so it runs in batches rather than on every request.

Victims are chosen least recently used first. Pulling a manifest refreshes every blob it
references (see the index), so an image ages as a whole and its blobs leave together; a blob
that a recently used image still references is recent itself and stays. Pinned closures are
never chosen (`protected`: the only set eviction holds back). A blob being written is not a
candidate because it is not in the index until it is published. A blob being read may be
chosen: eviction unlinks its file, and on POSIX an open descriptor keeps an unlinked file
readable, so a response already sending it (or a download reader holding its descriptor)
finishes with the bytes it started. A request that looked it up but had not yet opened it
finds it gone when its response starts (`web/responses.py`, after the handler returned): aiohttp
logs that and closes the connection unanswered (the client sees a dropped connection). When a
blob goes, every manifest that references it goes too, so the index never claims an image it
cannot serve whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edgecache.oci import reach


@dataclass(frozen=True, slots=True)
class Limits:
    max_size: int | None  # bytes, after resolving a percentage; None = no fixed cap
    min_free: int  # bytes the filesystem must keep free
    high_watermark: float = 0.95
    low_watermark: float = 0.85


@dataclass(frozen=True, slots=True)
class Usage:
    cache_bytes: int  # what the index accounts for, plus reservations in flight
    fs_free: int  # free bytes on the filesystem right now
    reserved: int = 0  # the part of cache_bytes promised to downloads, not yet taken from fs_free


def budget(limits: Limits, usage: Usage) -> int:
    """The most the cache may hold now. A reservation counts once: its bytes are not yet
    written (still in fs_free), so they are not room as well (bytes a download already wrote
    are then counted against it twice until it is published: the safe side)."""
    room = usage.cache_bytes - usage.reserved + usage.fs_free - limits.min_free
    if limits.max_size is not None:
        room = min(room, limits.max_size)
    return max(0, room)


def bytes_to_free(limits: Limits, usage: Usage, incoming: int = 0) -> int:
    """How much to evict so `incoming` more bytes fit: 0 below the high watermark, otherwise
    down to the low watermark."""
    total = budget(limits, usage)
    after = usage.cache_bytes + incoming
    if after <= total * limits.high_watermark:
        return 0
    return after - int(total * limits.low_watermark)


@dataclass(frozen=True, slots=True)
class Entry:
    digest: str
    size: int
    last_access: float


def choose_victims(lru: Iterable[Entry], need: int, protected: set[str],
                   parents: Callable[[str], Iterable[str]],
                   size_of: Callable[[str], int]) -> list[str]:
    """Least recently used first (`lru` is in that order, and is read only as far as needed)
    until `need` bytes are chosen; a chosen blob takes the manifests that reference it along
    (transitively), unless one of them is protected, in which case the blob stays too."""
    chosen: list[str] = []
    seen: set[str] = set()
    freed = 0
    if need <= 0:
        return chosen
    for entry in lru:
        if entry.digest in seen or entry.digest in protected:
            continue
        group = with_parents(entry.digest, parents)
        if group & protected:
            continue
        for digest in sorted(group - seen):
            seen.add(digest)
            chosen.append(digest)
            freed += size_of(digest)
        if freed >= need:
            break
    return chosen


def with_parents(digest: str, parents: Callable[[str], Iterable[str]]) -> set[str]:
    """A blob and every manifest that references it, transitively (what leaves with it)."""
    return reach([digest], parents)


def closure(roots: Iterable[str], children: Callable[[str], Iterable[str]]) -> set[str]:
    """Everything reachable from `roots` (index → manifests → configs and layers)."""
    return reach(roots, children)
