"""What wrong passwords cost everyone else: unrelated request latency while they arrive.

`python -m bench --only passwords` (a phase of the whole bench), or alone as
`.venv/bin/python -m bench.passwords [--quick]`. Not a test. It starts, on 127.0.0.1 only, a
docker-registry with one small image and edgecache (a real process, plain HTTP, the upstream
`access: authenticated`, an htpasswd with two users at bcrypt cost 12 as `htpasswd -B -C 12`
writes them, log level info), pulls the manifest and its blob once with the right password
(so that login is remembered), then, per repetition:

1. idle: one keep-alive client sends, one after the other, `GET /healthz` and `GET` of the cached
   manifest by digest (with the remembered login) for `--window` seconds;
2. attack: the same client, while 40 wrong passwords for a known user (all different, one
   connection each) arrive at once; the window lasts until every one of them is answered, and at
   least `--window` seconds.

Reported: p50/p99/max of the client's requests per phase and the ratio of the attack's p99 to
the idle p99 (1.0 = the attack costs the others nothing); the attackers' answers (401, 429) and
the time until the last one; and the median answer time of a wrong password for a known user
against one for an unknown user name (sequential, idle; a ratio near 1 means timing does not
tell which names exist). Every process is stopped by PID; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import bcrypt  # noqa: E402

from tests.support.edgecache import EdgecacheProcess  # noqa: E402
from tests.support.httpclient import fetch  # noqa: E402
from tests.support.images import make_image, make_layer  # noqa: E402
from tests.support.registry import DockerRegistry  # noqa: E402

UPSTREAM = "registry.test"
REPOSITORY = "team/app"
USER, PASSWORD, OTHER = "alice", "the right password", "bob"
COST = 12
WRONG = 40
ORACLE_TRIES = 5
REQUEST_TIMEOUT = 300.0  # per request: far above anything edgecache should take
WINDOW_LIMIT = 600.0  # bound on one attack window
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def percentile(values: list[float], p: float) -> float:
    ms = sorted(values)
    return ms[min(len(ms) - 1, max(0, round(p / 100 * len(ms) + 0.5) - 1))] if ms else 0.0


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)  # ms

    def row(self) -> str:
        n = self.latencies
        return (f"| {self.name} | {len(n)} | {percentile(n, 50):.2f} | {percentile(n, 99):.2f} "
                f"| {max(n, default=0.0):.2f} |")


class Bench:
    def __init__(self, ec: EdgecacheProcess, manifest: str) -> None:
        self.ec = ec
        self.manifest_url = f"{ec.url}/v2/{REPOSITORY}/manifests/{manifest}"
        self.health_url = f"{ec.url}/healthz"

    @staticmethod
    def session(connections: int) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                     timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))

    async def timed(self, session: aiohttp.ClientSession, url: str,
                    header: str | None) -> tuple[int, float]:
        headers = {"Accept": ACCEPT, **({"Authorization": header} if header else {})}
        start = time.perf_counter()
        async with session.get(url, headers=headers) as resp:
            await resp.read()
            return resp.status, (time.perf_counter() - start) * 1000

    async def client(self, session: aiohttp.ClientSession, phase: Phase, seconds: float,
                     stop: asyncio.Event | None) -> None:
        """Unrelated requests one after the other for `seconds` and until `stop` is set."""
        end = time.monotonic() + seconds
        limit = time.monotonic() + WINDOW_LIMIT
        while time.monotonic() < end or (stop is not None and not stop.is_set()):
            if time.monotonic() > limit:
                raise TimeoutError(f"the attack was not answered within {WINDOW_LIMIT:g}s")
            for url, header in ((self.health_url, None),
                                (self.manifest_url, basic(USER, PASSWORD))):
                status, ms = await self.timed(session, url, header)
                if status != 200:
                    raise RuntimeError(f"GET {url}: {status}")
                phase.latencies.append(ms)

    async def attack(self, wave: int, stop: asyncio.Event) -> tuple[Counter[int], float]:
        """WRONG different wrong passwords for USER at once; their statuses and the seconds
        until the last was answered."""
        async with self.session(WRONG) as many:
            start = time.perf_counter()
            try:
                answers = await asyncio.gather(*(
                    self.timed(many, self.manifest_url, basic(USER, f"wrong {wave} {i}"))
                    for i in range(WRONG)))
            finally:
                stop.set()
            took = time.perf_counter() - start
        return Counter(status for status, _ in answers), took

    async def oracle(self) -> tuple[float, float]:
        """Median ms of a wrong password for a known user, and for an unknown one."""
        known: list[float] = []
        unknown: list[float] = []
        async with self.session(1) as one:
            for i in range(ORACLE_TRIES):
                for user, out in ((OTHER, known), (f"nobody{i}", unknown)):
                    status, ms = await self.timed(one, self.manifest_url,
                                                  basic(user, f"oracle guess {i}"))
                    if status != 401:
                        raise RuntimeError(f"a wrong password got {status}")
                    out.append(ms)
        return statistics.median(known), statistics.median(unknown)


async def run(ec: EdgecacheProcess, manifest: str, reps: int, window: float) -> dict[str, object]:
    bench = Bench(ec, manifest)
    idle, attacked = Phase("idle"), Phase(f"{WRONG} wrong passwords arriving")
    attackers: Counter[int] = Counter()
    answered: list[float] = []
    async with bench.session(1) as one:
        await bench.client(one, Phase("warm-up"), 0.5, None)
        for rep in range(reps):
            print(f"  rep {rep + 1}/{reps}: idle ...", flush=True)
            await bench.client(one, idle, window, None)
            print(f"  rep {rep + 1}/{reps}: {WRONG} wrong passwords ...", flush=True)
            stop = asyncio.Event()
            statuses, took = (await asyncio.gather(
                bench.client(one, attacked, window, stop), bench.attack(rep, stop)))[1]
            attackers.update(statuses)
            answered.append(took)
    print("  timing of known and unknown user names ...", flush=True)
    known, unknown = await bench.oracle()
    idle_p99, attack_p99 = percentile(idle.latencies, 99), percentile(attacked.latencies, 99)
    return {
        "idle": {"count": len(idle.latencies), "p50_ms": percentile(idle.latencies, 50),
                 "p99_ms": idle_p99},
        "attack": {"count": len(attacked.latencies),
                   "p50_ms": percentile(attacked.latencies, 50), "p99_ms": attack_p99,
                   "max_ms": max(attacked.latencies, default=0.0)},
        "ratio_p99": attack_p99 / idle_p99 if idle_p99 else float("nan"),
        "attackers": dict(sorted(attackers.items())),
        "last_answer_s": max(answered),
        "known_ms": known, "unknown_ms": unknown,
        "oracle_ratio": unknown / known if known else float("nan"),
        "lines": [
            "| phase | requests | p50 ms | p99 ms | max ms |",
            "| --- | ---: | ---: | ---: | ---: |",
            idle.row(), attacked.row(), "",
            f"- p99 while the wrong passwords arrive / idle p99: **{attack_p99 / idle_p99:.2f}x**"
            if idle_p99 else "- no idle figure",
            f"- the {WRONG} x {reps} wrong passwords were answered "
            + ", ".join(f"{n} x {s}" for s, n in sorted(attackers.items()))
            + f"; the last of a wave after {max(answered):.2f} s at most",
            f"- a wrong password for a known user: {known:.1f} ms (median of {ORACLE_TRIES}), "
            f"for an unknown user name: {unknown:.1f} ms: ratio {unknown / known:.2f}",
        ],
    }


def htpasswd_line(user: str, password: str) -> str:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=COST)).decode()
    return f"{user}:$2y${hashed[4:]}"


def measure(reps: int, window: float) -> tuple[dict[str, object], str]:
    """Set up (registry, edgecache), run, tear down: the figures and the settings described."""
    image = make_image([make_layer(1 << 20, 1)])
    with tempfile.TemporaryDirectory(prefix="edgecache-bench-") as tmp:
        registry = DockerRegistry(Path(tmp) / "registry")
        ec: EdgecacheProcess | None = None
        try:
            registry.push_image(REPOSITORY, "1", image)
            htpasswd = Path(tmp) / "htpasswd"
            htpasswd.write_text(htpasswd_line(USER, PASSWORD) + "\n"
                                + htpasswd_line(OTHER, "bobs password") + "\n")
            htpasswd.chmod(0o600)
            ec = EdgecacheProcess(Path(tmp) / "edgecache", {UPSTREAM: registry.url},
                                  default_upstream=UPSTREAM, extra={
                                      "upstreams": {UPSTREAM: {"url": registry.url,
                                                               "access": "authenticated"}},
                                      "auth": {"htpasswd_file": str(htpasswd)},
                                      "log": {"level": "info"}})
            auth = {"Authorization": basic(USER, PASSWORD), "Accept": ACCEPT}
            for path in (f"manifests/{image.digest}", f"blobs/{image.layers[0].digest}"):
                warm = fetch(f"{ec.url}/v2/{REPOSITORY}/{path}", headers=auth)
                if warm.status != 200:
                    raise RuntimeError(f"warming {path}: {warm.status} {warm.body[:200]!r}")
            figures = asyncio.run(run(ec, image.digest, reps, window))
        finally:
            if ec is not None:
                ec.close()
            registry.close()
    config = (f"htpasswd with 2 users at bcrypt cost {COST}, upstream access authenticated, "
              f"log level info; {reps} repetitions, windows of at least {window:g} s")
    return figures, config


def machine() -> str:
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True, check=False).stdout.strip() or "unknown"
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"edgecache at {commit}, load {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repetition, 2 s windows")
    parser.add_argument("--reps", type=int, help="repetitions (3)")
    parser.add_argument("--window", type=float, help="seconds per phase at least (5)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    window = args.window or (2.0 if args.quick else 5.0)
    figures, config = measure(reps, window)
    today = datetime.date.today().isoformat()
    lines = figures["lines"]
    assert isinstance(lines, list)
    text = "\n".join([f"# Wrong-password benchmark, {today}", "", f"Machine: {machine()}.", "",
                      f"edgecache: {config}.", "", *lines, ""])
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"passwords-{today}{'-quick' if args.quick else ''}.md"
    path.write_text(text)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
