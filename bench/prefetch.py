"""What layer prefetch does to a cold `ctr` pull behind a slow, long link.

Not a test: `.venv/bin/python bench/prefetch.py [--reps N]`. On 127.0.0.1 only it starts a
docker-registry holding `library/bench:1` (ten layers, 24 MiB in all, random bytes), a WAN
relay in front of it (`WanLink`: 200 Mbit/s shared by every connection, 25 ms each way, so a
50 ms round trip; then again with each connection also held to 50 Mbit/s), a private
containerd (tests/support/containerd.py) and, per run, a fresh edgecache. Three ways to pull,
alternated run by run (the order rotates every repetition):
- direct: containerd pulls from the relay (the upstream over the WAN);
- edgecache: containerd pulls through a cold edgecache on loopback (the site's LAN), whose
  upstream is the relay; `prefetch.layers` off (the default);
- prefetch: the same with `prefetch.layers: true`;
- held: right after each edgecache run, the same pull again from that edgecache, which now holds
  everything (at most the tag's HEAD crosses the WAN): what a pull costs besides the link.
`--client-downloads 3` (the default) bounds ctr as kubelet's and Docker's pulls are bounded.
Measured: the wall time of `ctr images pull` (with unpack), the image removed and garbage
collected between runs. Results: the medians and their ratios, printed and written to
bench/results/prefetch-<date>.md. Every process is stopped by PID; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.containerd import Containerd, write_hosts  # noqa: E402
from tests.support.edgecache import EdgecacheProcess  # noqa: E402
from tests.support.images import make_image, make_layer  # noqa: E402
from tests.support.registry import DockerRegistry  # noqa: E402

MiB = 1 << 20
LAYERS = [8 * MiB, 4 * MiB, 4 * MiB, 2 * MiB, 2 * MiB, 1 * MiB, 1 * MiB, 1 * MiB,
          MiB // 2, MiB // 2]
RATE = 200e6 / 8  # bytes per second
ONE_WAY = 0.025  # seconds
FLOW_RATE = 50e6 / 8  # bytes per second per connection, in the second link
CHUNK = 64 * 1024
METHODS = (b"GET ", b"HEAD ")
PULL_TIMEOUT = 300.0


class _Bucket:
    """A rate as a schedule: when the bytes booked so far have gone through."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._next = 0.0

    def book(self, size: int, now: float) -> float:
        self._next = max(now, self._next) + size / self._rate
        return self._next


class WanLink:
    """A TCP relay to a loopback port: answers share one `RATE` (a link, not per connection),
    optionally also `flow_rate` per connection (a lossy long path bounds each TCP flow: Mathis
    et al., MSS / (RTT * sqrt(loss))), and every piece of data in either direction arrives
    `ONE_WAY` seconds after it left. `request_delay` more on every request (a piece of data
    to the upstream that begins with an HTTP method): the round trips a real registry adds per
    request (a redirect to a CDN, its TCP and TLS handshakes), which this one does not."""

    def __init__(self, target_port: int, flow_rate: float | None = None,
                 request_delay: float = 0.0) -> None:
        self._target = target_port
        self._flow_rate = flow_rate
        self._request_delay = request_delay
        self._loop = asyncio.new_event_loop()
        self._link = _Bucket(RATE)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the relay did not start")
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())

    def close(self) -> None:
        """Every connection's pumps cancelled and awaited, then the loop stopped."""
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _stop(self) -> None:
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, client_r: asyncio.StreamReader,
                          client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            client_w.close()
            return
        flow = _Bucket(self._flow_rate) if self._flow_rate else None
        await asyncio.gather(self._pump(client_r, up_w, None),
                             self._pump(up_r, client_w, [self._link, *([flow] if flow else [])]),
                             return_exceptions=True)

    async def _pace(self, size: int, buckets: list[_Bucket]) -> None:
        """Serialise onto the link (and the flow's bound): sent once both let it through."""
        now = self._loop.time()
        until = max(bucket.book(size, now) for bucket in buckets)
        if until > now:
            await asyncio.sleep(until - now)  # the link's serialisation time

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    buckets: list[_Bucket] | None) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - self._loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)  # the propagation delay
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        delivery = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(CHUNK):
                if buckets:
                    await self._pace(len(data), buckets)
                extra = self._request_delay if not buckets and data.startswith(METHODS) else 0
                queue.put_nowait((self._loop.time() + ONE_WAY + extra, data))
        except OSError:
            pass
        queue.put_nowait((self._loop.time() + ONE_WAY, b""))
        await delivery


def timed_pull(containerd: Containerd, hosts: Path, downloads: int) -> float:
    """`downloads` at a time: ctr's own default is 0 (no bound: every blob at once); the CRI
    plugin that kubelet pulls through (`max_concurrent_downloads`) and Docker default to 3."""
    started = time.monotonic()
    containerd.ctr("images", "pull", "--hosts-dir", str(hosts), "--snapshotter",
                   containerd.snapshotter, "--platform", "linux/amd64",
                   "--max-concurrent-downloads", str(downloads),
                   "docker.io/library/bench:1", timeout=PULL_TIMEOUT)
    seconds = time.monotonic() - started
    containerd.remove_images("docker.io/library/bench:1")
    return seconds


def run(reps: int, workdir: Path, registry: DockerRegistry, containerd: Containerd,
        flow_rate: float | None, request_delay: float, downloads: int
        ) -> dict[str, list[float]]:
    link = WanLink(registry.port, flow_rate, request_delay)
    kinds = ["direct", "edgecache", "prefetch"]
    times: dict[str, list[float]] = {kind: [] for kind in [*kinds, "held"]}
    try:
        for rep in range(reps):
            for kind in kinds[rep % 3:] + kinds[:rep % 3]:
                hosts = workdir / f"hosts-{kind}-{rep}"
                edge = None
                if kind != "direct":
                    extra = {"log": {"level": "info"},
                             "prefetch": {"layers": kind == "prefetch"}}
                    edge = EdgecacheProcess(workdir / f"ec-{kind}-{rep}",
                                            {"docker.io": link.url},
                                            default_upstream="docker.io", extra=extra)
                write_hosts(hosts, "docker.io", edge.url if edge else link.url)
                try:
                    times[kind].append(timed_pull(containerd, hosts, downloads))
                    if kind == "edgecache":
                        times["held"].append(timed_pull(containerd, hosts, downloads))
                finally:
                    if edge is not None:
                        edge.close()
                print(f"rep {rep + 1} {kind}: {times[kind][-1]:.2f}s", flush=True)
    finally:
        link.close()
    return times


def header(reps: int, rtts: int, downloads: int) -> list[str]:
    return [
        f"# Layer prefetch: a cold `ctr images pull` behind 200 Mbit/s, 50 ms "
        f"({datetime.date.today().isoformat()})",
        "",
        f"`python bench/prefetch.py --reps {reps} --request-rtts {rtts} --client-downloads "
        f"{downloads}` on {platform.node()} "
        f"({platform.machine()}); image: 10 layers, {sum(LAYERS) / MiB:.0f} MiB, random bytes; "
        "the link: one relay, 200 Mbit/s shared by every connection, 25 ms each way; "
        "edgecache on loopback (the LAN), cold each run; containerd 1.6 (`ctr`) taking "
        f"{downloads or 'every'} blob(s) at a time (the CRI plugin's and Docker's default: 3; "
        "ctr's own: no bound); runs alternated, order rotated per repetition. Two links: "
        "the rate shared only (an ideal link: any one connection can fill it), and also "
        f"{FLOW_RATE * 8 / 1e6:.0f} Mbit/s per connection (a lossy long path bounds each TCP "
        f"flow). Each request costs {rtts} round trip(s) before its answer"
        f"{' (the extra ones: a redirect to a CDN, its handshakes)' if rtts > 1 else ''}.",
    ]


def report(title: str, times: dict[str, list[float]]) -> list[str]:
    med = {kind: statistics.median(values) for kind, values in times.items()}
    lines = [
        "",
        f"## {title}",
        "",
        "| pull | median s | runs (s) |",
        "|---|---:|---|",
        *(f"| {kind} | {med[kind]:.2f} | {', '.join(f'{v:.2f}' for v in values)} |"
          for kind, values in times.items()),
        "",
        f"- prefetch / edgecache without: {med['prefetch'] / med['edgecache']:.2f}x",
        f"- prefetch / direct: {med['prefetch'] / med['direct']:.2f}x",
        f"- edgecache without / direct: {med['edgecache'] / med['direct']:.2f}x",
        f"- the link's floor (bytes / rate): {sum(LAYERS) / RATE:.2f}s",
        f"- over the WAN (median minus held): direct {med['direct'] - med['held']:.2f}s, "
        f"edgecache {med['edgecache'] - med['held']:.2f}s, "
        f"prefetch {med['prefetch'] - med['held']:.2f}s",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--request-rtts", type=int, default=1,
                        help="round trips each request costs (3: a redirect to a CDN on a new "
                        "connection); default 1")
    parser.add_argument("--client-downloads", type=int, default=3,
                        help="blobs ctr fetches at a time (0: every blob at once, ctr's own "
                        "default); default 3, as kubelet's and Docker's pulls")
    parser.add_argument("--out", type=Path, help="the results file (default: "
                        "bench/results/prefetch-<date>.md)")
    args = parser.parse_args()
    reps = max(1, args.reps)
    lines = header(reps, args.request_rtts, max(0, args.client_downloads))
    request_delay = max(0, args.request_rtts - 1) * 2 * ONE_WAY
    with tempfile.TemporaryDirectory(prefix="ec-prefetch-") as tmp:
        workdir = Path(tmp)
        registry = DockerRegistry(workdir / "registry")
        image = make_image([make_layer(size, 700 + i) for i, size in enumerate(LAYERS)])
        registry.push_image("library/bench", "1", image)
        containerd = Containerd(workdir / "containerd")
        try:
            for title, flow in (("the rate shared only", None),
                                (f"and {FLOW_RATE * 8 / 1e6:.0f} Mbit/s per connection",
                                 FLOW_RATE)):
                print(title, flush=True)
                lines += report(title, run(reps, workdir / title[:8].replace(" ", "-"),
                                           registry, containerd, flow, request_delay,
                                           max(0, args.client_downloads)))
        finally:
            containerd.close()
            registry.close()
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or ROOT / "bench" / "results" / \
        f"prefetch-{datetime.date.today().isoformat()}.md"
    out.write_text(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
