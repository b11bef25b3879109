"""Work the service runs in a child process of the same edgecache: eviction, local garbage
collection, the certificate issuer. Heavy work in a thread would stall the loop (the heap
trimmer holds glibc's arena locks; NOTES.md), so it runs as `python -m <module>`, the request
as JSON on stdin, the answer on stdout.

A child belongs to the task that awaits `run`: cancelled (shutdown), it sends the child SIGTERM
(each child stops between batches) and waits for it, so nothing outlives its owner. The child's
side is `request()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# background work: the server's loop (nice 0) comes first when the CPUs are busy; at 10 a busy
# CPU still gives a child ~10 % against a nice 0 neighbour, so a waiting fill is not starved
NICE = 10


def child_env() -> dict[str, str]:
    """This environment, with the directory this edgecache is imported from first on
    PYTHONPATH: the child runs the same code, wherever the working directory is."""
    import edgecache

    root = str(Path(edgecache.__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}


@dataclass(frozen=True, slots=True)
class Finished:
    returncode: int | None
    out: bytes
    err: bytes

    @property
    def last_line(self) -> str:
        """The child's last line on stderr (a traceback's, the error), for a one-line report."""
        lines = self.err.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"


async def run(module: str, request: object) -> Finished:
    """Run `python -m module` with `request` as JSON on stdin, until it exits (OSError: it
    could not be started)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=child_env())
    try:
        out, err = await child.communicate(json.dumps(request).encode())
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
        await asyncio.shield(child.wait())
        raise
    return Finished(child.returncode, out, err)


def request() -> tuple[Any, threading.Event]:
    """In the child: lower its priority, read the request, and an event SIGTERM sets (looked
    at between batches)."""
    os.nice(NICE)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return json.loads(sys.stdin.read()), stop
