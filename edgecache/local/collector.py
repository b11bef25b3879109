"""The service's periodic garbage collection (`local.gc_interval`): a child process each time.

The collection reads every local row and may unlink many files, which on the event loop would
stall every client (as eviction did: `storage/eviction.py`), so each run is `python -m
edgecache.storage.gc` at nice 10, as `edgecache gc` would do it from a shell. The task is owned
by the composition root (app.py), which cancels and awaits it at shutdown: the child gets
SIGTERM and stops between batches (a batch's rows and files are never left half done).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from edgecache import children
from edgecache.local.gcsettings import GcSettings

log = logging.getLogger(__name__)


async def collect_every(root: Path, registry: str, settings: GcSettings) -> None:
    """Every `settings.interval`: one collection; a failure is logged, the next one runs."""
    while True:
        await asyncio.sleep(settings.interval)
        try:
            counts = await collect_once(root, registry, settings.grace)
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("local garbage collection failed: %s", exc)
            continue
        if counts.get("removed") or counts.get("unlinked"):
            log.info("local garbage collection: removed %d (%d bytes), dropped %d local links,"
                     " kept %d, in %.1fs", counts.get("removed", 0), counts.get("freed", 0),
                     counts.get("unlinked", 0), counts.get("kept", 0), counts.get("seconds", 0))


async def collect_once(root: Path, registry: str, grace: float) -> dict[str, float]:
    """One collection in a child; its counts (RuntimeError when it failed)."""
    done = await children.run("edgecache.storage.gc",
                              {"root": str(root), "registry": registry, "grace": grace})
    try:
        counts = json.loads(done.out)
        if not isinstance(counts, dict):
            raise ValueError("not an object")
        return {str(k): float(v) for k, v in counts.items()}
    except (ValueError, TypeError) as exc:
        raise RuntimeError(f"exit {done.returncode}: {done.last_line}") from exc
