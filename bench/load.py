"""Load generators (each its own process) and a resource sampler for the systems under test.

- Blob throughput: wrk (C, epoll, one thread per core, discards bodies; `bench/report.lua`
  prints its summary as JSON). It does not bottleneck on its own code, but reading (and, over
  TLS, decrypting) the bytes costs the kernel and OpenSSL about as much CPU as sending them, on
  the same 2 cores as the server: every figure is "server + client on 2 cores".
- Manifest latency: bench/hammer.py (wrk cannot do HEAD).
- Cold pulls: bench/puller.py (asyncio protocols receiving into a reused buffer; sizes checked
  on every copy, SHA-256 once per distinct blob, a CRC-32 sample of every other copy).

`Sampler` polls the RSS of a system's processes (nginx: master + workers, summed) every 20 ms
in a thread while a measurement runs, and reads their CPU times before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass
class Usage:
    peak_rss: int  # bytes
    cpu: float  # seconds, user + system, over the measurement


class Sampler:
    def __init__(self, processes: list[psutil.Process], interval: float = 0.02) -> None:
        self.processes = processes
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = 0
        for proc in self.processes:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _cpu(self) -> float:
        total = 0.0
        for proc in self.processes:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._cpu0 = self._cpu()
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, self._rss())
        self.usage = Usage(self.peak, self._cpu() - self._cpu0)


def rss(processes: list[psutil.Process]) -> int:
    return Sampler(processes)._rss()


@dataclass
class WrkResult:
    seconds: float
    requests: int
    bytes: int
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6


def wrk(url: str, connections: int, duration: float, timeout: float = 60.0,
        method: str = "", accept: str = "") -> WrkResult:
    threads = min(connections, os.cpu_count() or 1)
    env = {**os.environ, "WRK_METHOD": method, "WRK_ACCEPT": accept}
    done = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout",
         f"{timeout:g}s", "-s", str(HERE / "report.lua"), url],
        capture_output=True, text=True, env=env, timeout=duration + timeout + 30, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            doc = json.loads(line.removeprefix("WRKJSON "))
            return WrkResult(doc["duration_us"] / 1e6, doc["requests"], doc["bytes"],
                             doc["connect"] + doc["read"] + doc["write"] + doc["status"]
                             + doc["timeout"], doc["p50_us"] / 1000, doc["p99_us"] / 1000)
    raise RuntimeError(f"wrk {url}: no summary (exit {done.returncode}): "
                       f"{done.stdout[-500:]} {done.stderr[-500:]}")


def _python_tool(module: str, *args: str, timeout: float) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{module} {args}: exit {done.returncode}: {done.stderr[-1500:]}")
    return dict(json.loads(lines[-1]))


def hammer(url: str, method: str, connections: int, duration: float,
           headers: dict[str, str]) -> dict[str, object]:
    args = [url, "--method", method, "--connections", str(connections),
            "--duration", f"{duration:g}"]
    for name, value in headers.items():
        args += ["--header", f"{name}: {value}"]
    return _python_tool("bench.hammer", *args, timeout=duration + 60)


def pull(base: str, repository: str, tag: str, clients: int) -> dict[str, object]:
    return _python_tool("bench.puller", base, repository, tag, "--clients", str(clients),
                        timeout=600)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def spread(values: list[float]) -> str:
    """min-max of the runs, as a share of the median: the noise of a figure."""
    if len(values) < 2:
        return "1 run"
    mid = median(values)
    if not mid:
        return "-"
    return f"±{(max(values) - min(values)) / 2 / mid * 100:.0f}%"


def wait_quiet(seconds: float = 0.3) -> None:
    time.sleep(seconds)
