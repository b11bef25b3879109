"""What an outage costs a client: HEAD latency of a cached tag while the upstream is up, while it
has just become a black hole, and once edgecache has marked it down.

Not a test: run it as `.venv/bin/python bench/outage.py`. It starts a real docker-registry, the
fault proxy (tests/support/faultproxy.py, as a subprocess) in front of it, and edgecache (a real
process, `cache.tag_ttl` 0s so every tag request asks the upstream, every other setting at its
shipped default unless overridden below), all on 127.0.0.1. Then:

1. upstream up: 1000 sequential HEADs of the cached tag manifest, then 64 concurrent clients x 50
   HEADs each (every HEAD is revalidated upstream through the proxy);
2. outage: the proxy turns into a black hole; from that instant until edgecache logs the
   upstream as down, one sequential client and 64 concurrent clients (`--window-clients`;
   closed loop, all starting at once) keep sending HEADs. Measured are the time from the
   outage's start to the sequential client's first (stale) answer, the latency of every HEAD
   sent in that window (per client kind and all together), and the time until the upstream is
   marked down;
3. upstream marked down: the same 1000 sequential + 64 x 50 concurrent HEADs;
4. recovery: once the outage has lasted `--hold` seconds (120 by default), the proxy forwards
   again; measured is the time until edgecache's probe logs the upstream as up.

Every answer must be 200 with the cached digest, or the run fails. The results are printed and
written to bench/results/outage-<date>.md. Every process is stopped by PID; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from tests.support.edgecache import EdgecacheProcess  # noqa: E402
from tests.support.faultproxy import FaultProxyProcess  # noqa: E402
from tests.support.httpclient import fetch  # noqa: E402
from tests.support.images import make_image, make_layer  # noqa: E402
from tests.support.registry import DockerRegistry  # noqa: E402

UPSTREAM = "docker.io"
REPOSITORY, TAG = "library/bench", "1"
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
SEQUENTIAL = 1000
CLIENTS, PER_CLIENT = 64, 50
WARMUP = 50
REQUEST_TIMEOUT = 120.0  # per HEAD: far above anything edgecache should take
DOWN_WAIT = 300.0  # bound on the wait for edgecache to mark the upstream down (or up)


@dataclass
class Figures:
    name: str
    latencies: list[float]  # seconds
    wall: float

    def row(self) -> str:
        ms = sorted(x * 1000 for x in self.latencies)

        def pct(p: float) -> float:
            return ms[min(len(ms) - 1, max(0, round(p / 100 * len(ms) + 0.5) - 1))]

        rate = len(ms) / self.wall if self.wall > 0 else 0.0
        shown = f"{rate:.0f}" if rate >= 10 else f"{rate:.1f}"
        return (f"| {self.name} | {len(ms)} | {pct(50):.2f} | {pct(90):.2f} | {pct(99):.2f} | "
                f"{ms[-1]:.2f} | {shown} |")


class Bench:
    def __init__(self, ec: EdgecacheProcess, digest: str) -> None:
        self.ec = ec
        self.url = f"{ec.url}/v2/{REPOSITORY}/manifests/{TAG}"
        self.digest = digest

    async def head(self, session: aiohttp.ClientSession) -> float:
        start = time.perf_counter()
        async with session.head(self.url, headers={"Accept": ACCEPT}) as resp:
            took = time.perf_counter() - start
            got = resp.headers.get("Docker-Content-Digest")
            if resp.status != 200 or got != self.digest:
                raise RuntimeError(f"HEAD {self.url}: {resp.status} {got}, expected 200 "
                                   f"{self.digest}")
        return took

    def session(self, connections: int) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))

    async def sequential(self, name: str, count: int = SEQUENTIAL) -> Figures:
        async with self.session(1) as session:
            for _ in range(WARMUP):
                await self.head(session)
            start = time.perf_counter()
            latencies = [await self.head(session) for _ in range(count)]
            return Figures(name, latencies, time.perf_counter() - start)

    async def concurrent(self, name: str) -> Figures:
        async with self.session(CLIENTS) as session:
            for _ in range(WARMUP):
                await self.head(session)

            async def client() -> list[float]:
                return [await self.head(session) for _ in range(PER_CLIENT)]

            start = time.perf_counter()
            results = await asyncio.gather(*(client() for _ in range(CLIENTS)))
            wall = time.perf_counter() - start
        return Figures(name, [x for result in results for x in result], wall)

    async def until_logged(self, needle: str) -> float:
        """Wait until edgecache logs `needle` (from now on); the seconds that took."""
        watch = LogWatch(self.ec.log_path, needle)
        start = time.perf_counter()
        deadline = time.monotonic() + DOWN_WAIT
        while not watch.found():
            if time.monotonic() > deadline:
                raise TimeoutError(f"edgecache did not log {needle!r} within {DOWN_WAIT}s")
            await asyncio.sleep(0.05)
        return time.perf_counter() - start

    async def outage_window(self, proxy: FaultProxyProcess, needle: str, clients: int) -> Window:
        """Turn the proxy into a black hole and keep one sequential client and `clients`
        concurrent clients sending HEADs until edgecache logs `needle` (the upstream marked
        down). Every client starts at the outage's first instant, so the window covers what
        clients see before edgecache has learnt anything. The log is read incrementally: the
        access log grows by every HEAD, and rereading it whole would load the machine."""
        watch = LogWatch(self.ec.log_path, needle)
        async with self.session(1) as one, self.session(max(1, clients)) as many:
            for _ in range(WARMUP):  # open the connections while the upstream still answers
                await self.head(one)
            await asyncio.gather(*(self.head(many) for _ in range(clients)))
            stop = asyncio.Event()
            deadline = time.monotonic() + DOWN_WAIT

            async def client(session: aiohttp.ClientSession) -> list[float]:
                latencies = []
                while not stop.is_set() and time.monotonic() < deadline:
                    latencies.append(await self.head(session))
                return latencies

            async def watcher() -> float:
                try:
                    while not watch.found():
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"edgecache did not log {needle!r} within "
                                               f"{DOWN_WAIT}s")
                        await asyncio.sleep(0.02)
                    return time.perf_counter() - start
                finally:
                    stop.set()

            proxy.set_mode("blackhole")
            start = time.perf_counter()
            watching = asyncio.ensure_future(watcher())
            try:
                sequential, *concurrent = await asyncio.gather(
                    client(one), *(client(many) for _ in range(clients)))
            finally:  # a wrong answer ends the run: the watcher must not outlive it
                stop.set()
                if not watching.done():
                    watching.cancel()
            marked_down = await watching
            wall = time.perf_counter() - start
        together = [x for result in concurrent for x in result]
        return Window(
            started=start, first=sequential[0], marked_down=marked_down,
            sequential=Figures("blackhole until marked down, 1 sequential client", sequential,
                               wall),
            concurrent=Figures(f"blackhole until marked down, {clients} clients", together,
                               wall),
            everything=Figures("blackhole until marked down, all HEADs",
                               sequential + together, wall))


@dataclass
class Window:
    """The HEADs sent from the outage's start until the upstream was marked down."""

    started: float  # time.perf_counter() at the outage's start
    first: float  # the sequential client's first HEAD, sent at the outage's start
    marked_down: float  # seconds from the outage's start
    sequential: Figures
    concurrent: Figures
    everything: Figures


class LogWatch:
    """Finds a line in a growing log, reading only what was appended since the last look."""

    def __init__(self, path: Path, needle: str) -> None:
        self._path = path
        self._needle = needle.encode()
        self._offset = path.stat().st_size  # what is logged from now on
        self._tail = b""

    def found(self) -> bool:
        with self._path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        text = self._tail + data
        if self._needle in text:
            return True
        self._tail = text[-len(self._needle):]  # a needle split across two reads
        return False


async def run(proxy: FaultProxyProcess, ec: EdgecacheProcess, digest: str,
              hold: float, collected: list[Figures] | None = None,
              window_clients: int = CLIENTS) -> list[str]:
    """The phases; their markdown lines. `collected` receives each phase's `Figures`;
    `window_clients` concurrent clients run beside the sequential one during the outage."""
    bench = Bench(ec, digest)
    down_line = f"upstream {UPSTREAM} is down after"
    up_line = f"upstream {UPSTREAM} is up"
    figures: list[Figures] = []
    print("upstream up ...", flush=True)
    figures.append(await bench.sequential("up, sequential"))
    figures.append(await bench.concurrent(f"up, {CLIENTS} clients x {PER_CLIENT}"))

    print("outage (black hole) ...", flush=True)
    window = await bench.outage_window(proxy, down_line, window_clients)
    outage = window.started
    blackholed = proxy.outcomes().get("blackhole", 0)
    figures.append(window.sequential)
    if window_clients:
        figures += [window.concurrent, window.everything]

    print("upstream marked down ...", flush=True)
    figures.append(await bench.sequential("marked down, sequential"))
    figures.append(await bench.concurrent(f"marked down, {CLIENTS} clients x {PER_CLIENT}"))
    rows = [f.row() for f in figures]

    print(f"holding the outage until it has lasted {hold:g} s ...", flush=True)
    await asyncio.sleep(max(0.0, hold - (time.perf_counter() - outage)))
    lasted = time.perf_counter() - outage
    print("recovery ...", flush=True)
    proxy.set_mode("forward")
    to_up = await bench.until_logged(up_line)
    await bench.sequential("recovered", 10)

    if collected is not None:
        collected.extend(figures)
    header = ["| phase | HEADs | p50 ms | p90 ms | p99 ms | max ms | HEADs/s |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    slow = sum(1 for x in window.everything.latencies if x >= 1.0)
    events = [
        f"- outage start to the sequential client's first (stale) answer: "
        f"{window.first * 1000:.0f} ms",
        f"- outage start to upstream marked down: {window.marked_down:.1f} s "
        f"({len(window.everything.latencies)} HEADs sent meanwhile, {slow} of them took 1 s "
        f"or more; the proxy swallowed {blackholed} upstream requests)",
        f"- upstream back (after an outage of {lasted:.0f} s) to marked up by the probe: "
        f"{to_up:.1f} s",
    ]
    return [*header, *rows, "", *events]


def machine() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True, check=False).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "edgecache"], cwd=ROOT,
                           text=True, capture_output=True, check=False).stdout.strip()
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"edgecache at {commit}{' + uncommitted changes' if dirty else ''}")


def measure(response_timeout: str | None, revalidate_timeout: str, failure_threshold: int,
            hold: float, collected: list[Figures] | None = None,
            window_clients: int = CLIENTS) -> tuple[list[str], str]:
    """Set up (registry, fault proxy, edgecache), run the phases, tear down: the markdown lines
    and a description of the settings. `response_timeout` None keeps edgecache's default."""
    upstream: dict[str, object] = {}
    if response_timeout is not None:
        upstream["response_timeout"] = response_timeout
    settings: dict[str, object] = {
        "upstreams": None,  # filled in below, once the proxy's port is known
        "cache": {"tag_ttl": "0s", "revalidate_timeout": revalidate_timeout},
        "health": {"failure_threshold": failure_threshold},
        "log": {"level": "info"},
    }
    image = make_image([make_layer(1 << 20, 1)])
    with tempfile.TemporaryDirectory(prefix="edgecache-bench-") as tmp:
        registry = DockerRegistry(Path(tmp) / "registry")
        proxy: FaultProxyProcess | None = None
        ec: EdgecacheProcess | None = None
        try:
            registry.push_image(REPOSITORY, TAG, image)
            proxy = FaultProxyProcess(registry.url)
            settings["upstreams"] = {UPSTREAM: {"url": proxy.url, **upstream}}
            ec = EdgecacheProcess(Path(tmp) / "edgecache", {UPSTREAM: proxy.url},
                                  default_upstream=UPSTREAM, extra=settings)
            # warm the cache: the manifest by tag (its blobs do not matter for a HEAD)
            warm = fetch(f"{ec.url}/v2/{REPOSITORY}/manifests/{TAG}", headers={"Accept": ACCEPT})
            if warm.status != 200:
                raise RuntimeError(f"warming the cache: {warm.status} {warm.body[:200]!r}")
            lines = asyncio.run(run(proxy, ec, image.digest, hold, collected, window_clients))
        finally:
            if ec is not None:
                ec.close()
            if proxy is not None:
                proxy.close()
            registry.close()

    shown = response_timeout if response_timeout is not None else "at its default"
    config = (f"tag_ttl 0s, revalidate_timeout {revalidate_timeout}, response_timeout "
              f"{shown}, failure_threshold {failure_threshold}, other "
              "settings at their defaults (connect 5s, probe 1s doubling to 60s), log level info")
    return lines, config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--response-timeout", default=None,
                        help="upstream response_timeout (default: edgecache's, 10s)")
    parser.add_argument("--revalidate-timeout", default="2s",
                        help="cache.revalidate_timeout (shipped default 2s)")
    parser.add_argument("--failure-threshold", type=int, default=3,
                        help="health.failure_threshold (shipped default 3)")
    parser.add_argument("--hold", type=float, default=120.0,
                        help="seconds the outage lasts before the upstream comes back")
    parser.add_argument("--window-clients", type=int, default=CLIENTS,
                        help="concurrent clients beside the sequential one during the outage "
                        "window (0: the sequential client alone)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    lines, config = measure(args.response_timeout, args.revalidate_timeout,
                            args.failure_threshold, args.hold,
                            window_clients=args.window_clients)
    today = datetime.date.today().isoformat()
    report = [f"# Outage benchmark, {today}", "", f"Machine: {machine()}.", "",
              f"edgecache: {config}. Client: aiohttp, keep-alive, on the same machine; the "
              "upstream is a docker-registry behind the fault proxy (a loopback hop standing in "
              "for the WAN, with no WAN latency).", "", *lines, ""]
    text = "\n".join(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"outage-{today}.md"
    path.write_text(text)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
