"""edgecache side by side with Distribution's proxy and nginx, on loopback: `make bench`.

`python -m bench [--quick] [--reps N] [--duration S] [--only PHASES]`. Not a test. It starts, on
127.0.0.1 only:
- an upstream docker-registry seeded with generated images: `bench/warm:1` (a 1 MiB and a
  64 MiB layer) and `bench/cold:1` (six layers, 1 to 32 MiB, 63 MiB in all);
- edgecache (plain HTTP + HTTPS listeners, self-managed CA, shipped defaults but tag_ttl 5m
  said out loud and metrics off), warmed with bench/warm;
- Distribution (Debian's docker-registry 2.8) in proxy mode, one process for plain HTTP and one
  for HTTPS (an openssl EC P-256 certificate), each warmed the same way;
- nginx (sendfile on, tcp_nopush on, one worker per core) serving edgecache's blob files by
  digest, plain and HTTPS with the same certificate: the ceiling.

Then it measures, alternating the systems run by run (the order rotates every repetition):
1. warm blob throughput (wrk), plain HTTP and HTTPS, 1 MiB and 64 MiB, 1/16/64 connections;
2. warm manifest HEAD (by tag) and GET (by digest) latency at 64 connections (bench/hammer.py);
3. cold pulls of bench/cold by 1 and by 50 concurrent clients (bench/puller.py), each against a
   fresh cache, with the bytes the upstream served counted from its JSON log;
4. peak RSS and CPU seconds per GB served, sampled with psutil during 1;
5. edgecache start-up over a store of 100,000 indexed blobs, clean and after a crash;
6. tag HEAD latency during an upstream outage (bench/outage.py's phases);
7. unrelated request latency while 40 wrong passwords arrive (bench/passwords.py).
Results: bench/results/<date>.md (bench/results/<date>-quick.md with --quick), a PNG chart and
the raw runs as JSON beside it; README.md's "Benchmarks" section links the latest. Every process
is stopped by PID; every wait is bounded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import load, startup
from bench.systems import (
    Distribution,
    Edgecache,
    Nginx,
    System,
    Upstream,
    make_cert,
    summarize_fetches,
)
from tests.support.images import make_image, make_layer
from tests.support.throttle import ThrottledRelay

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MiB = 1 << 20
WARM_REPO, COLD_REPO, TAG = "bench/warm", "bench/cold", "1"
COLD_LAYERS = [32, 16, 8, 4, 2, 1]  # MiB
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
SYSTEMS = ("edgecache", "distribution", "nginx")
PROFILE_SECONDS, PROFILE_RATE = 5, 250
PHASES = ("throughput", "manifests", "cold", "startup", "outage", "passwords", "profile")


@dataclass
class Settings:
    reps: int
    duration: float  # seconds per wrk / hammer run
    connections: tuple[int, ...]
    cold_reps: int
    cold_clients: int
    wan_rate: float  # bytes/s per upstream connection, for the WAN-bound cold pulls
    startup_blobs: int
    startup_reps: int
    outage_response_timeout: str | None
    phases: tuple[str, ...]
    quick: bool


@dataclass
class Results:
    settings: dict[str, Any]
    machine: str
    sizes: dict[str, int] = field(default_factory=dict)
    throughput: list[dict[str, Any]] = field(default_factory=list)
    manifests: list[dict[str, Any]] = field(default_factory=list)
    cold: list[dict[str, Any]] = field(default_factory=list)
    idle_rss: dict[str, dict[str, float]] = field(default_factory=dict)
    startup: list[dict[str, Any]] = field(default_factory=list)
    outage: dict[str, Any] = field(default_factory=dict)
    passwords: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, Any] = field(default_factory=dict)
    load: list[tuple[str, list[float]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def rotated(items: tuple[str, ...] | list[str], rep: int) -> list[str]:
    items = list(items)
    k = rep % len(items)
    return items[k:] + items[:k]


def loadavg(results: Results, phase: str) -> None:
    results.load.append((phase, [round(x, 2) for x in os.getloadavg()]))


class Bench:
    def __init__(self, tmp: Path, settings: Settings, results: Results,
                 results_dir: Path) -> None:
        self.tmp = tmp
        self.results_dir = results_dir
        self.settings = settings
        self.results = results
        self.systems: dict[str, System] = {}
        self.upstream = Upstream(tmp / "upstream")
        self.cert = make_cert(tmp / "cert")
        self.warm = make_image([make_layer(MiB, 1), make_layer(64 * MiB, 2)])
        self.cold = make_image([make_layer(n * MiB, 100 + i) for i, n in enumerate(COLD_LAYERS)])
        self.upstream.push_image(WARM_REPO, TAG, self.warm)
        self.upstream.push_image(COLD_REPO, TAG, self.cold)
        results.sizes = {"1MiB": len(self.warm.layers[0].data),
                         "64MiB": len(self.warm.layers[1].data),
                         "cold": sum(len(b.data) for b in self.cold.blobs),
                         "cold_blobs": len(self.cold.blobs)}
        self.blob = {"1MiB": self.warm.layers[0].digest, "64MiB": self.warm.layers[1].digest}

    # ---- the warm systems ---------------------------------------------------------------------

    def start_warm(self) -> None:
        ec = Edgecache(self.tmp / "edgecache", self.upstream.url)
        self.systems["edgecache"] = ec
        self.results.idle_rss["edgecache"] = {"fresh": load.rss(ec.processes()) / MiB}
        dist = Distribution(self.tmp / "distribution", self.upstream.url)
        dist_tls = Distribution(self.tmp / "distribution-tls", self.upstream.url, self.cert)
        self.systems["distribution"] = dist
        self.systems["distribution-tls"] = dist_tls
        for base in (ec.url, dist.url, dist_tls.url):
            self.pull_warm(base)
        manifest_file = ec.storage / "blobs" / "sha256" / self.warm.digest[7:9] / \
            self.warm.digest[7:]
        ng = Nginx(self.tmp / "nginx", ec.storage / "blobs", self.cert,
                   {f"/v2/{WARM_REPO}/manifests/{TAG}": manifest_file}, self.warm.media_type)
        self.systems["nginx"] = ng
        for url in (ec.https_url, ng.url, ng.https_url):
            assert url is not None
            self.pull_warm(url)
        time.sleep(1.0)
        for name in ("edgecache", "distribution", "nginx"):
            self.results.idle_rss.setdefault(name, {})["warm"] = \
                load.rss(self.systems[name].processes()) / MiB

    def pull_warm(self, base: str) -> None:
        """The manifest by tag and by digest and every blob, through `base`, checked."""
        import ssl
        import urllib.request
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        for path, expected in [
            (f"/v2/{WARM_REPO}/manifests/{TAG}", self.warm.manifest),
            (f"/v2/{WARM_REPO}/manifests/{self.warm.digest}", self.warm.manifest),
            *((f"/v2/{WARM_REPO}/blobs/{b.digest}", b.data) for b in self.warm.blobs),
        ]:
            request = urllib.request.Request(base + path, headers={"Accept": MANIFEST_ACCEPT})
            with urllib.request.urlopen(request, timeout=120, context=context) as resp:
                body = resp.read()
            if body != expected:
                raise RuntimeError(f"{base}{path}: wrong bytes ({len(body)})")

    def url(self, system: str, scheme: str) -> str:
        if system == "distribution" and scheme == "https":
            return self.systems["distribution-tls"].url
        sys_ = self.systems[system]
        url = sys_.https_url if scheme == "https" else sys_.url
        assert url is not None
        return url

    def processes(self, system: str, scheme: str) -> list[Any]:
        if system == "distribution" and scheme == "https":
            return self.systems["distribution-tls"].processes()
        return self.systems[system].processes()

    # ---- 1 and 4: warm blob throughput, RSS, CPU -------------------------------------------

    def throughput(self) -> None:
        s = self.settings
        for scheme in ("http", "https"):  # plain first: its peak RSS is not TLS's leftover
            for rep in range(s.reps):
                for size in ("1MiB", "64MiB"):
                    for conns in s.connections:
                        for system in rotated(SYSTEMS, rep):
                            url = f"{self.url(system, scheme)}/v2/{WARM_REPO}/blobs/" \
                                  f"{self.blob[size]}"
                            with load.Sampler(self.processes(system, scheme)) as sampler:
                                result = load.wrk(url, conns, s.duration)
                            row = {"scheme": scheme, "size": size, "conns": conns,
                                   "system": system, "rep": rep, "mb_s": result.mb_per_s,
                                   "req_s": result.bytes / self.results.sizes[size]
                                   / result.seconds, "bytes": result.bytes,
                                   "completed": result.requests, "errors": result.errors,
                                   "peak_rss_mib": sampler.usage.peak_rss / MiB,
                                   "cpu_s": sampler.usage.cpu, "seconds": result.seconds}
                            self.results.throughput.append(row)
                            print(f"  {scheme:5} {size:5} c={conns:<2} {system:12} "
                                  f"{row['mb_s']:7.0f} MB/s {row['req_s']:7.1f} req/s "
                                  f"rss {row['peak_rss_mib']:6.1f} MiB err {result.errors}",
                                  flush=True)
                loadavg(self.results, f"throughput {scheme} rep {rep}")

    # ---- 2: manifest latency ----------------------------------------------------------------

    def manifests(self) -> None:
        s = self.settings
        cases = [("HEAD", f"/v2/{WARM_REPO}/manifests/{TAG}", "HEAD by tag"),
                 ("GET", f"/v2/{WARM_REPO}/manifests/{self.warm.digest}", "GET by digest")]
        for rep in range(s.reps):
            for method, path, label in cases:
                for system in rotated(SYSTEMS, rep):
                    with load.Sampler(self.processes(system, "http")) as sampler:
                        out = load.hammer(self.url(system, "http") + path, method, 64,
                                          s.duration, {"Accept": MANIFEST_ACCEPT})
                    row = {"case": label, "system": system, "rep": rep,
                           "cpu_s": sampler.usage.cpu, **out}
                    self.results.manifests.append(row)
                    print(f"  {label:13} {system:12} p50 {out['p50_ms']:7.2f} ms p99 "
                          f"{out['p99_ms']:7.2f} ms {out['rate']:7.0f}/s err {out['errors']}",
                          flush=True)
        loadavg(self.results, "manifests")

    # ---- 3: cold pulls ----------------------------------------------------------------------

    def cold_pulls(self) -> None:
        """Loopback (the upstream as fast as the caches), then edgecache behind a WAN-like link:
        a relay that limits each upstream connection to `wan_rate` (tests/support/throttle.py).
        Distribution is not run behind it: it opens one upstream connection per client and
        blob (150 for 50 clients), more than the relay takes."""
        s = self.settings
        n = 0
        relay = ThrottledRelay(self.upstream.port, s.wan_rate)
        trials = [("loopback", clients, system, rep) for rep in range(s.cold_reps)
                  for clients in (1, s.cold_clients)
                  for system in rotated(("edgecache", "distribution"), rep)]
        trials += [("wan", clients, "edgecache", rep) for rep in range(s.cold_reps)
                   for clients in (1, s.cold_clients)]
        try:
            for link, clients, system, rep in trials:
                n += 1
                self._cold_pull(n, link, clients, system, rep,
                                relay.url if link == "wan" else self.upstream.url)
        finally:
            relay.close()
        loadavg(self.results, "cold")

    def _cold_pull(self, n: int, link: str, clients: int, system: str, rep: int,
                   upstream_url: str) -> None:
        work = self.tmp / f"cold-{n}"
        cache: System
        if system == "edgecache":
            cache = Edgecache(work, upstream_url)
        else:
            cache = Distribution(work, upstream_url)
        try:
            mark = self.upstream.log_lines()
            # the clients share the 2 cores with the cache: what they cost is part of the figure
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            with load.Sampler(cache.processes()) as sampler:
                out = load.pull(cache.url, COLD_REPO, TAG, clients)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)  # only the puller was reaped
            time.sleep(0.5)  # anything the cache still fetches after the clients
            fetched = summarize_fetches(self.upstream.blob_fetches(mark))
        finally:
            cache.close()
            shutil.rmtree(work, ignore_errors=True)
        row = {"link": link, "system": system, "clients": clients, "rep": rep,
               **out, "upstream": fetched,
               "peak_rss_mib": sampler.usage.peak_rss / MiB,
               "cpu_s": sampler.usage.cpu,
               "client_cpu_s": (after.ru_utime + after.ru_stime)
               - (before.ru_utime + before.ru_stime)}
        self.results.cold.append(row)
        print(f"  cold {link:8} x{clients:<3} {system:12} wall {out['wall']:6.2f} s "
              f"ok {out['ok']}/{clients} upstream {fetched['blob_gets']} blob GETs "
              f"{int(fetched['bytes']) / MiB:8.1f} MiB (max {fetched['max_per_blob']} "
              f"per blob) cpu {row['cpu_s']:.2f} s, clients {row['client_cpu_s']:.2f} s",
              flush=True)

    # ---- 6: profiles --------------------------------------------------------------------------

    def profile(self) -> None:
        """py-spy (--native) on edgecache while wrk loads it; collapsed stacks are written next
        to the results, and the top frames go into the report."""
        py_spy = Path(sys.executable).with_name("py-spy")
        if not py_spy.exists():
            self.results.notes.append("py-spy is not installed: no profiles")
            return
        ec = self.systems["edgecache"]
        pid = ec.pids()[0]
        cases = [("https-64MiB-c16", "https", "64MiB", 16), ("http-1MiB-c64", "http", "1MiB", 64),
                 ("http-64MiB-c16", "http", "64MiB", 16)]
        for name, scheme, size, conns in cases:
            out = self.tmp / f"profile-{name}.txt"
            url = f"{self.url('edgecache', scheme)}/v2/{WARM_REPO}/blobs/{self.blob[size]}"
            wrk = subprocess.Popen(["wrk", "-t2", f"-c{conns}", "-d8s", "--timeout", "60s",
                                    url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1)
                subprocess.run([str(py_spy), "record", "--native", "-p", str(pid), "-d",
                                str(PROFILE_SECONDS), "-r", str(PROFILE_RATE), "-f", "raw",
                                "-o", str(out)],
                               capture_output=True, timeout=120, check=False)
            finally:
                try:
                    wrk.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    wrk.send_signal(signal.SIGTERM)
                    wrk.wait(timeout=10)
            if out.exists():
                self.results.profiles[name] = summarize_profile(out, PROFILE_SECONDS,
                                                                PROFILE_RATE)
                shutil.copy(out, self.results_dir / f"profile-{name}.txt")
        loadavg(self.results, "profile")

    def close(self) -> None:
        for system in reversed(list(self.systems.values())):
            try:
                system.close()
            except Exception as exc:
                print(f"stopping {system.name}: {exc}", file=sys.stderr)
        self.upstream.close()


def summarize_profile(path: Path, seconds: float, rate: int, top: int = 12) -> dict[str, Any]:
    """The event loop thread's busy share and its heaviest frames (inclusive) from py-spy's
    collapsed stacks (py-spy leaves idle samples out, so busy = samples / (rate x seconds))."""
    rows = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            rows.append((stack.split(";"), int(count)))
    loop_rows = [(f, n) for f, n in rows if any("uv_run" in x for x in f)]
    total = sum(n for _, n in loop_rows) or 1
    inclusive: dict[str, int] = {}
    for frames, n in loop_rows:
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    interesting = [(k, v) for k, v in inclusive.items()
                   if v < 0.99 * total and any(word in k for word in (
                       "edgecache/", "aiohttp/", "write (libc", "sendfile", "SSL_write",
                       "EVP_EncryptUpdate", "BIO_read", "run_in_executor", "pread",
                       "madvise", "access", "log", "preadv"))]
    interesting.sort(key=lambda kv: -kv[1])
    return {"samples": total, "busy_share": min(1.0, total / (rate * seconds)),
            "top": [(k, round(100 * v / total, 1)) for k, v in interesting[:top]]}


def machine() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True, check=False).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "edgecache"], cwd=ROOT,
                           text=True, capture_output=True, check=False).stdout.strip()
    versions = []
    for cmd in (["nginx", "-v"], ["docker-registry", "--version"], ["wrk", "--version"]):
        if shutil.which(cmd[0]) is None:  # not needed by the phases run (checked in main)
            versions.append(f"{cmd[0]} not installed")
            continue
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        versions.append((done.stdout + done.stderr).strip().splitlines()[0][:60])
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
            f"Python {platform.python_version()}, edgecache at {commit}"
            f"{' + uncommitted changes' if dirty else ''}; {'; '.join(versions)}")


def run_startup(tmp: Path, settings: Settings, results: Results) -> None:
    store = tmp / "startup-store"
    began = time.perf_counter()
    startup.make_store(store, settings.startup_blobs)
    results.notes.append(f"start-up store: {settings.startup_blobs} blobs written and indexed "
                         f"in {time.perf_counter() - began:.1f} s")
    for mode, start in startup.measure(tmp / "startup", store, settings.startup_reps):
        results.startup.append({"mode": mode, "seconds": start.seconds,
                                "rss_ready_mib": start.rss_ready / MiB,
                                "rss_idle_mib": start.rss_idle / MiB})
        print(f"  start-up {mode:5} {start.seconds:6.3f} s RSS {start.rss_idle / MiB:6.1f} MiB",
              flush=True)
    shutil.rmtree(store, ignore_errors=True)
    loadavg(results, "startup")


def run_outage(settings: Settings, results: Results) -> None:
    from bench import outage

    collected: list[outage.Figures] = []
    lines, config = outage.measure(settings.outage_response_timeout, "2s", 3, 0.0, collected)
    results.outage = {"config": config, "lines": lines, "phases": [
        {"name": f.name, "count": len(f.latencies),
         "p50_ms": load.median([x * 1000 for x in f.latencies]),
         "p99_ms": sorted(x * 1000 for x in f.latencies)[
             min(len(f.latencies) - 1, max(0, round(0.99 * len(f.latencies) + 0.5) - 1))]
         if f.latencies else float("nan")} for f in collected]}
    loadavg(results, "outage")


def run_passwords(settings: Settings, results: Results) -> None:
    from bench import passwords

    figures, config = passwords.measure(1 if settings.quick else 3,
                                        2.0 if settings.quick else 5.0)
    results.passwords = {"config": config, **figures}
    loadavg(results, "passwords")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one repetition of everything, shorter runs (~3 minutes)")
    parser.add_argument("--reps", type=int, help="repetitions of each warm measurement (3)")
    parser.add_argument("--duration", type=float, help="seconds per load run (4)")
    parser.add_argument("--cold-reps", type=int, help="repetitions of each cold pull (3)")
    parser.add_argument("--startup-blobs", type=int, default=100_000)
    parser.add_argument("--wan-rate", type=float, default=200.0,
                        help="Mbit/s per upstream connection for the WAN-bound cold pulls (200)")
    parser.add_argument("--only", default=",".join(PHASES),
                        help=f"comma-separated phases among {','.join(PHASES)}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    parser.add_argument("--rewrite", type=Path, metavar="JSON",
                        help="only write the report and chart again from a run's raw JSON")
    args = parser.parse_args(argv)
    if args.rewrite:
        from bench import report

        raw = json.loads(args.rewrite.read_text())
        done = Results(**{k: v for k, v in raw.items() if k in Results.__dataclass_fields__})
        md = report.write(done, args.rewrite.parent, args.rewrite.stem)
        print(f"written {md}")
        if not args.no_readme:
            report.update_readme(ROOT / "README.md", md.resolve().relative_to(ROOT))
        return 0
    phases = tuple(p for p in args.only.split(",") if p)
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}")
    warm_phases = {"throughput", "manifests", "cold", "profile"} & set(phases)
    for tool in ("wrk", "nginx", "openssl", "curl") * bool(warm_phases) + ("docker-registry",):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (make bench installs wrk; the others come "
                         "with make system-deps / apt-get)")
    quick = args.quick
    settings = Settings(
        reps=args.reps or (1 if quick else 3),
        duration=args.duration or (2.0 if quick else 4.0),
        connections=(1, 16, 64),
        cold_reps=args.cold_reps or (1 if quick else 3),
        cold_clients=50,
        wan_rate=args.wan_rate * 1e6 / 8,
        startup_blobs=args.startup_blobs,
        startup_reps=2 if quick else 5,
        # quick: a short response_timeout so the upstream is marked down sooner
        outage_response_timeout="2s" if quick else None,
        phases=phases if not quick else tuple(p for p in phases if p != "profile"),
        quick=quick)
    results = Results(settings=settings.__dict__, machine=machine())
    began = time.perf_counter()
    loadavg(results, "start")
    with tempfile.TemporaryDirectory(prefix="edgecache-bench-") as tmp_name:
        tmp = Path(tmp_name)
        bench: Bench | None = None
        try:
            if {"throughput", "manifests", "cold", "profile"} & set(settings.phases):
                print("starting upstream, edgecache, Distribution x2, nginx ...", flush=True)
                args.out.mkdir(parents=True, exist_ok=True)
                bench = Bench(tmp, settings, results, args.out)
                bench.start_warm()
                if "throughput" in settings.phases:
                    print("1. warm blob throughput", flush=True)
                    bench.throughput()
                if "manifests" in settings.phases:
                    print("2. warm manifest latency", flush=True)
                    bench.manifests()
                if "profile" in settings.phases:
                    print("profiling edgecache under load (py-spy)", flush=True)
                    bench.profile()
                for name in SYSTEMS:  # after everything: RSS once idle again
                    results.idle_rss[name]["after load"] = \
                        load.rss(bench.systems[name].processes()) / MiB
                if "cold" in settings.phases:
                    print("3. cold pulls", flush=True)
                    bench.cold_pulls()
        finally:
            if bench is not None:
                bench.close()
        if "startup" in settings.phases:
            print(f"5. start-up over {settings.startup_blobs} indexed blobs", flush=True)
            run_startup(tmp, settings, results)
    if "outage" in settings.phases:
        print("6. outage (bench/outage.py's phases)", flush=True)
        run_outage(settings, results)
    if "passwords" in settings.phases:
        print("7. unrelated request latency while wrong passwords arrive", flush=True)
        run_passwords(settings, results)
    results.notes.append(f"whole run: {time.perf_counter() - began:.0f} s")

    from bench import report

    today = datetime.date.today().isoformat()
    stem = today + ("-quick" if quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(results.__dict__, indent=1, default=str))
    md = report.write(results, args.out, stem)
    print(f"written {md}", flush=True)
    if not args.no_readme:
        report.update_readme(ROOT / "README.md", md.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
