"""Push throughput into edgecache's local registry beside Distribution's (docker-registry) on
the same machine, and the server's RSS during the push (the goal: flat, no body in memory).

Not a test: run it as `.venv/bin/python bench/push.py [--sizes 64,1024] [--runs 3]`.
For each layer size (MiB) and mode, both servers take the same bytes, interleaved run by run:
- monolithic: POST a session, then one PUT ?digest= with the whole body;
- chunked: POST, PATCHes of `--chunk` MiB with Content-Range, then PUT ?digest=.
The client streams from a file (http.client, 1 MiB blocks; the digest is computed before the
clock starts). RSS is read from /proc/<pid>/status every 20 ms while a push runs; "RSS growth"
is the peak minus the RSS just before. Throughput is the median of `--runs`; ratios are
edgecache / Distribution (above 1: edgecache is faster). Results go to
bench/results/push-<date>.md. Every process is stopped by PID; every wait is bounded.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import http.client
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests.support.registry import free_port, stop, wait_http  # noqa: E402

MiB = 1 << 20


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Sampler:
    """Peak RSS of a process while a push runs (a thread polling /proc, bounded by stop())."""

    def __init__(self, pid: int) -> None:
        self.pid, self.before, self.peak = pid, rss(pid), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return max(0, max(self.peak, rss(self.pid)) - self.before)


def request(port: int, method: str, path: str, body: object = None,
            headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600, blocksize=MiB)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def location(resp: http.client.HTTPResponse) -> str:
    loc = resp.headers["Location"]
    return loc if loc.startswith("/") else "/" + loc.split("/", 3)[3]


def push(port: int, repo: str, data: Path, digest: str, size: int, chunk: int | None) -> float:
    """One push; seconds from the POST to the final 201."""
    started = time.monotonic()
    loc = location(request(port, "POST", f"/v2/{repo}/blobs/uploads/"))
    with open(data, "rb") as body:
        if chunk is None:
            sep = "&" if "?" in loc else "?"
            resp = request(port, "PUT", f"{loc}{sep}digest={digest}", body,
                           {"Content-Length": str(size),
                            "Content-Type": "application/octet-stream"})
        else:
            offset = 0
            while offset < size:
                n = min(chunk, size - offset)
                resp = request(port, "PATCH", loc, _Slice(body, offset, n), {
                    "Content-Length": str(n), "Content-Range": f"{offset}-{offset + n - 1}",
                    "Content-Type": "application/octet-stream"})
                assert resp.status == 202, resp.status
                loc, offset = location(resp), offset + n
            sep = "&" if "?" in loc else "?"
            resp = request(port, "PUT", f"{loc}{sep}digest={digest}", b"",
                           {"Content-Length": "0"})
    assert resp.status == 201, resp.status
    return time.monotonic() - started


class _Slice:
    """`n` bytes of a file from `offset`, read in 1 MiB blocks by http.client."""

    def __init__(self, file: object, offset: int, n: int) -> None:
        self._file, self._left = file, n
        file.seek(offset)  # type: ignore[attr-defined]

    def read(self, size: int = MiB) -> bytes:
        data: bytes = self._file.read(min(size, self._left))  # type: ignore[attr-defined]
        self._left -= len(data)
        return data


def start_servers(work: Path) -> tuple[dict[str, tuple[int, str]], list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    reg_port, edge_port = free_port(), free_port()
    (work / "registry.yml").write_text(yaml.safe_dump({
        "version": 0.1, "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(work / "registry")}},
        "http": {"addr": f"127.0.0.1:{reg_port}"}}))
    (work / "edgecache.yaml").write_text(yaml.safe_dump({
        "listen": {"http": f"127.0.0.1:{edge_port}", "https": None},
        "storage": {"path": str(work / "edgecache")}, "metrics": {"listen": None},
        "upstreams": {"docker.io": {"url": "http://127.0.0.1:9"}}, "default_upstream": "",
        "log": {"level": "warning"},
        "local": {"registry": "registry.local", "push": "anonymous"}}))
    log = open(work / "servers.log", "wb")  # noqa: SIM115 - lives as long as the servers
    procs.append(subprocess.Popen(["docker-registry", "serve", str(work / "registry.yml")],
                                  stdout=log, stderr=subprocess.STDOUT))
    procs.append(subprocess.Popen([sys.executable, "-m", "edgecache", "serve", "--config",
                                   str(work / "edgecache.yaml")], cwd=ROOT, stdout=log,
                                  stderr=subprocess.STDOUT))
    wait_http(f"http://127.0.0.1:{reg_port}/v2/", proc=procs[0])
    wait_http(f"http://127.0.0.1:{edge_port}/v2/", proc=procs[1])
    return {"distribution": (reg_port, "bench/push"),
            "edgecache": (edge_port, "registry.local/bench/push")}, procs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="64,1024", help="layer sizes in MiB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=16, help="PATCH size in MiB")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-push-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        servers, procs = start_servers(work)
        try:
            for size_mib in sizes:
                data = work / f"layer-{size_mib}"
                hasher = hashlib.sha256()
                with open(data, "wb") as out:
                    for _ in range(size_mib):
                        block = os.urandom(MiB)
                        hasher.update(block)
                        out.write(block)
                digest = "sha256:" + hasher.hexdigest()
                for mode, chunk in (("monolithic", None), ("chunked", args.chunk * MiB)):
                    seconds: dict[str, list[float]] = {name: [] for name in servers}
                    growth: dict[str, int] = {name: 0 for name in servers}
                    for run in range(args.runs):
                        for (name, (port, repo)), proc in zip(servers.items(), procs,
                                                              strict=True):
                            sampler = Sampler(proc.pid)
                            seconds[name].append(push(port, f"{repo}{run}", data, digest,
                                                      size_mib * MiB, chunk))
                            growth[name] = max(growth[name], sampler.stop())
                    speed = {n: size_mib / statistics.median(s) for n, s in seconds.items()}
                    rows.append((size_mib, mode, speed, growth))
                    print(f"{size_mib} MiB {mode}: " + ", ".join(
                        f"{n} {speed[n]:.0f} MiB/s (RSS +{growth[n] / MiB:.1f} MiB)"
                        for n in servers), flush=True)
                data.unlink()
        finally:
            for proc in procs:
                stop(proc)
    write_report(rows, args)
    return 0


def write_report(rows: list[tuple[int, str, dict[str, float], dict[str, int]]],
                 args: argparse.Namespace) -> None:
    today = datetime.date.today().isoformat()
    load = os.getloadavg()
    lines = [f"# Push throughput, {today}", "",
             f"`python bench/push.py --sizes {args.sizes} --runs {args.runs} --chunk "
             f"{args.chunk}`; {platform.node()}, {os.cpu_count()} CPUs, load at the end "
             f"{load[0]:.1f}. Loopback, plain HTTP, both servers on the same disk; median of "
             f"{args.runs} interleaved runs. Ratio = edgecache / Distribution 2.8 throughput.",
             "", "| layer | mode | edgecache MiB/s | Distribution MiB/s | ratio | "
             "RSS growth edgecache | RSS growth Distribution |", "|---|---|---|---|---|---|---|"]
    for size, mode, speed, growth in rows:
        lines.append(f"| {size} MiB | {mode} | {speed['edgecache']:.0f} | "
                     f"{speed['distribution']:.0f} | "
                     f"{speed['edgecache'] / speed['distribution']:.2f}x | "
                     f"{growth['edgecache'] / MiB:.1f} MiB | "
                     f"{growth['distribution'] / MiB:.1f} MiB |")
    out = ROOT / "bench" / "results" / f"push-{today}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    sys.exit(main())
