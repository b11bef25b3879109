"""One eviction run, off the event loop and out of the server: a child process chooses victims
and removes them (`python -m edgecache.storage.eviction`, the request as JSON on stdin, the
result as JSON on stdout; `Quota` starts it). The module imports no asyncio: the child starts in
~0.1 s.

Eviction is the one job that must look at the whole store (least recently used first, pins'
closures, each victim's parent manifests), and unlinking thousands of files is thousands of
syscalls: on the loop it stalled every client for 1.6 s at 20 000 blobs. A worker thread was
tried first and measured (bench/eviction.py): the loop still stalled 220-640 ms per run, not for
the GIL but because the thread's allocations (SQLite's page cache, the victim lists) filled an
arena that `malloc_trim` (edgecache/memory.py, every 5 s) then walked, holding the allocator's
locks the loop needs; with the trimmer off the thread cost nothing. A child shares neither GIL
nor heap: ~0.1 s to start, and only when usage crosses the high watermark. In the child:
- victims are read in LRU order from the `last_access` index and the read stops once enough
  bytes are chosen: the cost follows what is evicted, not what is stored;
- they are removed in batches, file first, then their rows in one short transaction (a crash
  between the two leaves rows without files, which the start-up reconcile forgets; a short
  transaction keeps the server's own writes from waiting on the lock; WAL: its reads never do);
- SIGTERM (the server shutting down) is looked at between batches: shutdown waits for one batch
  at most, never for a whole run.
The server (`Quota`, on the loop) applies the result to its accounting and metrics.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgecache import children
from edgecache.errors import EdgecacheError
from edgecache.oci import Digest, ImageReference, official_repository
from edgecache.policy import choose_victims, closure
from edgecache.storage import pins as runtime_pins
from edgecache.storage.index import Index
from edgecache.storage.layout import Layout
from edgecache.storage.localindex import local_digests

BATCH = 128


def pinned_digests(index: Index, pins: tuple[str, ...]) -> set[str]:
    """The closure (index → manifests → configs and layers) of every pinned image we hold:
    the config's `pins` and the runtime ones (read here, at each run, from the index, so a pin
    added while the service runs protects from the next eviction on, whichever process runs
    it: the server's child or `edgecache import`)."""
    roots = []
    for text in (*pins, *runtime_pins.references(index)):
        try:
            ref = ImageReference.parse(text)
        except EdgecacheError:
            continue  # validated at config load; a bad one protects nothing rather than crash
        if ref.digest:
            roots.append(ref.digest)
        elif ref.tag:
            record = index.tag(ref.registry, official_repository(ref.registry, ref.repository),
                               ref.tag)
            if record is not None:
                roots.append(record.digest)
    return closure(roots, index.children)


@dataclass
class Evicted:
    count: int = 0  # blobs and manifests removed
    freed: int = 0
    pinned: int = 0  # bytes the pins protect
    refused: bool = False  # evicting every unpinned blob would still not make the room asked
    seconds: float = 0.0


def run_eviction(layout: Layout, pins: tuple[str, ...], need: int, allowance: int | None,
                 stop: threading.Event, local: str | None = None) -> Evicted:
    """Free at least `need` bytes (less if only pinned content is left). With `allowance`, first
    check that the pinned bytes fit in it: otherwise nothing is evicted (`refused`), since
    evicting would destroy cached images and still leave the incoming blob out."""
    started = time.monotonic()
    index = Index(layout.index_file)
    try:
        result = _evict(index, layout, pins, need, allowance, stop, local)
    finally:
        index.close()
    result.seconds = time.monotonic() - started
    return result


def _evict(index: Index, layout: Layout, pins: tuple[str, ...], need: int,
           allowance: int | None, stop: threading.Event, local: str | None) -> Evicted:
    protected = pinned_digests(index, pins)
    if local is not None:  # pushed content is primary data, not cache: never a victim
        protected |= local_digests(index, local)
    result = Evicted(pinned=sum(index.size(d) or 0 for d in protected))
    if allowance is not None and result.pinned > allowance:
        result.refused = True
        return result
    sizes: dict[str, int] = {}

    def size_of(digest: str) -> int:
        if digest not in sizes:
            sizes[digest] = index.size(digest) or 0
        return sizes[digest]

    with contextlib.closing(index.lru()) as lru:  # its read ends before the deletes
        victims = choose_victims(lru, need, protected, index.parents, size_of)
    for start in range(0, len(victims), BATCH):
        if stop.is_set():
            break
        batch = victims[start:start + BATCH]
        for digest in batch:
            layout.blob(Digest.parse(digest)).unlink(missing_ok=True)
        index.forget(batch)
        result.count += len(batch)
        result.freed += sum(size_of(d) for d in batch)
    return result


def main() -> int:
    request, stop = children.request()  # at nice 10, SIGTERM sets `stop`
    result = run_eviction(Layout(Path(request["root"])), tuple(request["pins"]),
                          int(request["need"]), request["allowance"], stop,
                          request.get("local"))
    sys.stdout.write(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
