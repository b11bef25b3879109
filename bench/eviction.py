"""What an eviction costs unrelated clients: latency of a cached blob while eviction runs over
100 000 indexed blobs, beside the same client's latency idle.

Not a test: run it as `.venv/bin/python bench/eviction.py` (`--code DIR` runs the edgecache
found in DIR instead, e.g. `git archive` of an older commit, for a before/after). Each round:

1. a store as edgecache lays it out (storage/layout.py): `--blobs` small blob files (bytes whose
   sha256 is their name) and their rows, written through `Index.record_blob` in one
   transaction, oldest access first, plus one 4 KiB "warm" blob that the client reads;
2. edgecache starts over it (a real `python -m edgecache serve`, plain HTTP, `max_size` set so
   the store sits below the high watermark, janitor every second, log level info; the upstream
   is never contacted);
3. the light client (one keep-alive connection, a GET of the warm blob every `--period` ms,
   latency counted from the scheduled send time, so a stall also counts against the requests
   queued behind it) runs `--idle` seconds: the idle figure;
4. another process publishes one large blob into the index, as `edgecache import` does (the
   file is written before step 3, the row now): the
   next janitor pass resyncs the quota from the index, finds it above the high watermark and
   evicts least recently used blobs down to the low one (about `--evict` of them). The client
   keeps going until edgecache logs the eviction, and `--idle` seconds more.

"during" is every request scheduled between the publish and the log line (that includes the
wait for the janitor's next pass: up to one second of quiet); where the log gives the run's own
duration ("in N s", from this change on), "run" is the requests scheduled within it. Results
are printed and written to bench/results/eviction-<date>.md. Every process is stopped by PID;
every wait is bounded.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from edgecache.oci import Digest  # noqa: E402
from edgecache.storage.index import Index  # noqa: E402
from edgecache.storage.layout import Layout  # noqa: E402
from tests.support.registry import free_port  # noqa: E402

EVICTED = re.compile(rb"evicted (\d+) blobs \((\d+) bytes\)[^\n]*?(?: in ([0-9.]+)s)?;")
WARM_SIZE = 4096
LOW, HIGH = 0.85, 0.95


def _write_blob(layout: Layout, data: bytes) -> str:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    path = layout.blob(Digest.parse(digest))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def make_store(root: Path, count: int) -> tuple[str, int]:
    """`count` small blobs (oldest first) and the warm one (newest); (warm digest, bytes)."""
    layout = Layout(root)
    layout.tmp_dir.mkdir(parents=True, exist_ok=True)
    rows = [(_write_blob(layout, b"edgecache eviction bench blob %d\n" % i),
             len(b"edgecache eviction bench blob %d\n" % i)) for i in range(count)]
    warm = os.urandom(WARM_SIZE)
    rows.append((_write_blob(layout, warm), WARM_SIZE))
    index = Index(layout.index_file)
    try:
        db = index._db
        db.execute("BEGIN IMMEDIATE")
        start = time.time() - 86400
        for i, (digest, size) in enumerate(rows):
            db.execute("INSERT INTO blobs(digest, size, media_type, added_at, last_access)"
                       " VALUES (?, ?, NULL, ?, ?)", (digest, size, start + i, start + i))
        db.execute("COMMIT")
    finally:
        index.close()
    layout.clean_marker.touch()  # a clean stop: start-up does not reconcile
    # a store's files reached the disk long before it fills up: without this the eviction's
    # unlinks race the writeback of 100 000 new files (a first round took 84 s instead of 6)
    os.sync()
    return rows[-1][0], sum(size for _, size in rows)


def publish_large(root: Path, size: int) -> Callable[[], None]:
    """One blob published by another process, as `edgecache import` does: file, then row. The
    file is written before the client starts (making its bytes would hold the GIL the client
    thread needs); `publish` records the row."""
    layout = Layout(root)
    digest = _write_blob(layout, os.urandom(size))
    return lambda: _record(layout, digest, size)


def _record(layout: Layout, digest: str, size: int) -> None:
    index = Index(layout.index_file)
    try:
        index.record_blob(digest, size)
    finally:
        index.close()


@dataclass
class Sample:
    scheduled: float
    latency: float


@dataclass
class Client:
    """GET the warm blob every `period` s on one keep-alive connection, until stopped."""

    port: int
    path: str
    period: float
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        request = (f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            reader = sock.makefile("rb")
            due = time.perf_counter()
            while not self._stop.is_set():
                now = time.perf_counter()
                if now < due:
                    time.sleep(due - now)
                sock.sendall(request)
                status = reader.readline()
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = reader.read(length)
                done = time.perf_counter()
                if not status.startswith(b"HTTP/1.1 200") or len(body) != WARM_SIZE:
                    self.errors.append(status.decode(errors="replace").strip())
                self.samples.append(Sample(due, done - due))
                due += self.period


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000 if ordered else 0.0


@dataclass
class Round:
    idle: list[float]
    during: list[float]
    run: list[float] | None
    evicted: int
    freed: int
    seconds: float | None  # the run's own duration, when the log says it
    window: float  # publish to log line


def one_round(work: Path, code: Path, blobs: int, evict: int, period: float,
              idle: float) -> Round:
    storage = work / "storage"
    shutil.rmtree(storage, ignore_errors=True)
    warm, used = make_store(storage, blobs)
    small = (used - WARM_SIZE) / blobs
    # below the high watermark now; the large blob pushes usage to where eviction must free
    # about `evict` small blobs to reach the low watermark
    # with usage `after` once it is in, max_size = (after - goal) / LOW frees `goal` bytes; the
    # high watermark is crossed after, and not before, for `after` between these two bounds
    goal, ratio = evict * small, HIGH / LOW
    after = (used / ratio + goal + goal * ratio / (ratio - 1)) / 2
    large = int(after - used)
    max_size = int((used + large - goal) / LOW)
    if used + large <= HIGH * max_size or used > HIGH * max_size:
        raise RuntimeError("the sizes do not straddle the watermark; adjust --evict")
    port = free_port()
    config = {
        "listen": {"http": f"127.0.0.1:{port}", "https": None},
        "storage": {"path": str(storage), "max_size": max_size, "access_flush_interval": "1s"},
        "upstreams": {"docker.io": {"url": f"http://127.0.0.1:{free_port()}"}},
        "default_upstream": "docker.io",
        "metrics": {"listen": None},
        "log": {"level": "info"},
    }
    (work / "edgecache.yaml").write_text(yaml.safe_dump(config))
    # the log goes to a pipe, as under systemd (journald): a file on the store's filesystem
    # would make the access log's writes wait on the journal the unlinks fill
    proc = subprocess.Popen([sys.executable, "-m", "edgecache", "serve", "--config",
                             str(work / "edgecache.yaml")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=code)
    log = _LogReader(proc)
    try:
        _wait_port(port, proc)
        publish = publish_large(storage, large)
        client = Client(port, f"/v2/library/bench/blobs/{warm}", period)
        thread = client.start()
        time.sleep(idle)
        published = time.perf_counter()
        publish()
        log.found.wait(timeout=300)
        logged = time.perf_counter()
        match = log.match
        time.sleep(idle)
        client.stop()
        thread.join(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.join()
    if match is None:
        raise RuntimeError(f"no eviction logged; the log ends: {log.text()[-2000:]!r}")
    if client.errors:
        raise RuntimeError(f"the client got {client.errors[:3]}")
    if os.environ.get("EVICTION_BENCH_TRACE"):
        worst = sorted(client.samples, key=lambda x: -x.latency)[:8]
        print("slowest (s after publish, ms):", [(round(x.scheduled - published, 3),
                                                   round(x.latency * 1000, 1)) for x in worst])
    seconds = float(match.group(3)) if match.group(3) else None
    idle_lat = [s.latency for s in client.samples if s.scheduled < published]
    during = [s.latency for s in client.samples if published <= s.scheduled < logged]
    run = None
    if seconds is not None:
        run = [s.latency for s in client.samples if logged - seconds - 0.02 <= s.scheduled < logged]
    return Round(idle_lat, during, run, int(match.group(1)), int(match.group(2)), seconds,
                 logged - published)


class _LogReader:
    """edgecache's output, read from its pipe by a thread (until the process ends), looked at
    line by line as it comes: the pipe must never fill (edgecache would block writing its
    access log) and the bench must not spend the GIL its client thread needs."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._pipe = proc.stdout
        self._tail = b""
        self.match: re.Match[bytes] | None = None
        self.found = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        pending = b""
        while chunk := os.read(self._pipe.fileno(), 1 << 16):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if b"evicted" in line and self.match is None:
                    self.match = EVICTED.search(line + b"\n")
                    if self.match is not None:
                        self.found.set()
            self._tail = (self._tail + chunk)[-4000:]

    def text(self) -> bytes:
        return self._tail

    def join(self) -> None:
        self._thread.join(timeout=30)
        self._pipe.close()


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"edgecache exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(f"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                if sock.recv(12).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError("edgecache did not answer /v2/")


def commit(code: Path) -> str:
    result = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() or str(code)


def report(rounds: list[Round], args: argparse.Namespace) -> list[str]:
    idle = [x for r in rounds for x in r.idle]
    during = [x for r in rounds for x in r.during]
    runs = [x for r in rounds if r.run is not None for x in r.run]
    lines = [
        f"# Eviction benchmark, {datetime.date.today()}", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, edgecache at {commit(args.code)}.", "",
        f"Store: {args.blobs} indexed blobs (files of ~35 bytes) + one 4 KiB warm blob; a "
        f"publish from another process pushes usage over the high watermark and the janitor "
        f"evicts ~{args.evict} least recently used blobs. Client: one keep-alive connection, a "
        f"GET of the warm blob every {args.period * 1000:g} ms, latency from the scheduled "
        f"send time. {len(rounds)} rounds.", "",
        "| phase | requests | p50 ms | p99 ms | max ms | p99 / idle p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = pct(idle, 99)
    for name, values in (("idle", idle), ("publish to eviction logged", during),
                         ("eviction run (its logged duration)", runs)):
        if values:
            lines.append(f"| {name} | {len(values)} | {pct(values, 50):.2f} | "
                         f"{pct(values, 99):.2f} | {max(values) * 1000:.2f} | "
                         f"{pct(values, 99) / base:.2f}x |")
    lines.append("")
    for i, r in enumerate(rounds, 1):
        took = f"{r.seconds:.2f} s" if r.seconds is not None else "not logged"
        lines.append(f"- round {i}: evicted {r.evicted} blobs ({r.freed} bytes), run {took}, "
                     f"publish to log line {r.window:.2f} s; p99 idle "
                     f"{pct(r.idle, 99):.2f} ms, during {pct(r.during, 99):.2f} ms")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blobs", type=int, default=100_000)
    parser.add_argument("--evict", type=int, default=50_000)
    parser.add_argument("--period", type=float, default=0.002, help="seconds between GETs")
    parser.add_argument("--idle", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--code", type=Path, default=ROOT, help="the edgecache tree to run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--name", default="eviction")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgecache-eviction-") as tmp:
        rounds = [one_round(Path(tmp), args.code, args.blobs, args.evict, args.period,
                            args.idle) for _ in range(args.rounds)]
    lines = report(rounds, args)
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}-{datetime.date.today()}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
