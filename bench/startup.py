"""Start-up of edgecache over a big store: time from exec to `/v2/` answering, and RSS.

`make_store` writes a store as edgecache lays it out (storage/layout.py): `count` small blob
files under blobs/sha256/<xx>/<hex> (each holds bytes whose sha256 is its name) and their rows,
written through `Index.record_blob`, in one transaction.

`measure` starts edgecache (`python -m edgecache serve`, plain HTTP and HTTPS listeners, log
level info, an upstream that is never contacted) over that store, polls `GET /v2/` every 2 ms
from the moment of exec, and reads the process's RSS when it first answers and again after
`settle` seconds idle. Two cases:
- clean: the previous process stopped on SIGTERM (the `clean-shutdown` marker is there), so
  start-up skips reconciliation;
- crash: the previous process was SIGKILLed (no marker), so start-up reconciles index and files
  (walks the whole blob tree).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

from edgecache.oci import Digest
from edgecache.storage.index import Index
from edgecache.storage.layout import Layout
from tests.support.registry import free_port

ROOT = Path(__file__).resolve().parents[1]


def make_store(root: Path, count: int) -> None:
    layout = Layout(root)
    layout.tmp_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    made: set[str] = set()
    for i in range(count):
        data = b"edgecache startup bench blob %d\n" % i
        hexdigest = hashlib.sha256(data).hexdigest()
        path = layout.blob(Digest.parse(f"sha256:{hexdigest}"))
        if path.parent.name not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent.name)
        with open(path, "wb") as handle:
            handle.write(data)
        rows.append((f"sha256:{hexdigest}", len(data)))
    index = Index(layout.index_file)
    try:
        index._db.execute("BEGIN IMMEDIATE")
        # record_blob opens a transaction per call; inside this one it must not
        index._transaction = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        for digest, size in rows:
            index.record_blob(digest, size)
        index._db.execute("COMMIT")
    finally:
        index._db.close()
    layout.clean_marker.unlink(missing_ok=True)


@dataclass
class Start:
    seconds: float  # exec to the first answer of GET /v2/
    rss_ready: int
    rss_idle: int


class Server:
    def __init__(self, workdir: Path, storage: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = {
            "listen": {"http": f"127.0.0.1:{self.port}", "https": f"127.0.0.1:{free_port()}"},
            "storage": {"path": str(storage)},
            # never contacted: nothing is requested but /v2/
            "upstreams": {"docker.io": {"url": f"http://127.0.0.1:{free_port()}"}},
            "metrics": {"listen": None},
            "log": {"level": "info"},
        }
        self.config = workdir / "edgecache.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = workdir / "edgecache.log"

    def start(self, settle: float) -> tuple[subprocess.Popen[bytes], Start]:
        request = f"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode()
        with open(self.log, "ab") as log:
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "edgecache", "serve", "--config",
                                     str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                                    cwd=ROOT)
        deadline = t0 + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"edgecache exited with {proc.returncode}; see {self.log}")
            if time.perf_counter() > deadline:
                _kill(proc, signal.SIGKILL)
                raise TimeoutError("edgecache did not answer /v2/ within 120 s")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(request)
                    if sock.recv(12).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            time.sleep(0.002)
        took = time.perf_counter() - t0
        process = psutil.Process(proc.pid)
        rss_ready = process.memory_info().rss
        time.sleep(settle)
        return proc, Start(took, rss_ready, process.memory_info().rss)


def _kill(proc: subprocess.Popen[bytes], signum: int) -> None:
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def measure(workdir: Path, storage: Path, reps: int, settle: float = 1.0
            ) -> Iterator[tuple[str, Start]]:
    """Yield ("clean" | "crash", Start) alternately, `reps` of each."""
    server = Server(workdir, storage)
    marker = Layout(storage).clean_marker
    # a first start creates the TLS material (CA and certificate), not measured; stop cleanly
    proc, _ = server.start(0)
    _kill(proc, signal.SIGTERM)
    for _ in range(reps):
        for mode in ("clean", "crash"):
            # the store is now in the state the mode needs: the previous stop decides it
            if mode == "clean" and not marker.exists():
                raise RuntimeError("no clean-shutdown marker after SIGTERM")
            if mode == "crash" and marker.exists():
                marker.unlink()
            proc, start = server.start(settle)
            yield mode, start
            # after a clean start, crash; after a crash start, stop cleanly
            _kill(proc, signal.SIGKILL if mode == "clean" else signal.SIGTERM)


def store_files(storage: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(storage / "blobs"))
