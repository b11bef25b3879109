"""The service's periodic garbage collection (`local.gc_interval`): a child process each time.

The collection reads every local row and may unlink many files, which on the event loop would
stall every client (as eviction did: `storage/eviction.py`), so each run is `python -m
edgecache.storage.gc` at nice 10, as `edgecache gc` would do it from a shell. The task is owned
by the composition root (app.py), which cancels and awaits it at shutdown: the child gets
SIGTERM and stops between batches (a batch's rows and files are never left half done).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

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
    request = json.dumps({"root": str(root), "registry": registry, "grace": grace}).encode()
    import edgecache

    package_root = str(Path(edgecache.__file__).resolve().parent.parent)  # the same edgecache
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgecache.storage.gc", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        out, err = await child.communicate(request)
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
        await asyncio.shield(child.wait())
        raise
    try:
        counts = json.loads(out)
        if not isinstance(counts, dict):
            raise ValueError("not an object")
        return {str(k): float(v) for k, v in counts.items()}
    except (ValueError, TypeError) as exc:
        lines = err.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"exit {child.returncode}: {lines[-1] if lines else 'no output'}"
                           ) from exc
