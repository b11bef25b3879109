"""edgecache/memory.py: the heap trimmer on this machine's C library (glibc in every environment
the service is tested in). What it gives back is a benchmark figure (bench/), not asserted here."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from edgecache.memory import HeapTrimmer, trim_periodically


def test_glibc_is_found_and_a_trim_runs_only_above_the_threshold() -> None:
    trimmer = HeapTrimmer()
    assert trimmer.available
    blocks = [bytearray(256 * 1024) for _ in range(8)]  # malloc'd, then handed back to it
    del blocks
    assert trimmer.free_bytes() >= 0
    assert trimmer.trim(above=0) is True
    assert trimmer.trim(above=1 << 62) is False  # nothing is that large: no trim


async def test_the_periodic_task_keeps_running_until_cancelled() -> None:
    trimmer = HeapTrimmer()
    task = asyncio.create_task(trim_periodically(trimmer, interval=0.001))
    for _ in range(20):  # bounded: a few passes of the loop
        await asyncio.sleep(0.002)  # lets the 1 ms loop run passes: the scenario, no event
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_single_node_without_a_local_registry_loads_neither_room() -> None:
    """Idle RSS is mostly modules: what a node does not run (cluster mode, the local registry,
    layer prefetch, warm) is imported only when configured or first used."""
    code = ("import sys\n"
            "from edgecache.config import from_mapping\n"
            "from edgecache.app import build_app\n"
            "import edgecache.server, edgecache.cli\n"
            "build_app(from_mapping({}))\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('edgecache'))))\n")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=60, check=True).stdout.split())
    assert "edgecache.app" in loaded  # the probe ran
    unwanted = {"edgecache.cluster.node", "edgecache.cluster.site", "edgecache.local.registry",
                "edgecache.local.uploads", "edgecache.web.pushes", "edgecache.web.uploads",
                "edgecache.proxy.prefetch", "edgecache.airgap.warm"}
    assert not loaded & unwanted
