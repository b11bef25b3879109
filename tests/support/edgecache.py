"""edgecache as a real subprocess, configured on loopback, stopped by PID."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.support.registry import RequestLog, free_port, settle_log, stop, wait_http

# edgecache's plain access line: `<request id> <remote> "<METHOD> <path?query>" <status> ...`
ACCESS_RE = re.compile(r'aiohttp\.access: \S+ \S+ "(?P<method>[A-Z]+) (?P<path>\S+)" '
                       r'(?P<status>\d+)')


class EdgecacheProcess:
    def __init__(self, workdir: Path, upstreams: dict[str, str],
                 default_upstream: str | None = None, extra: dict[str, object] | None = None,
                 storage: Path | None = None, tls: bool = False,
                 listen: dict[str, object] | None = None, metrics: bool = False,
                 env: dict[str, str] | None = None, host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        """`listen` adds keys to the listen section (e.g. shutdown_timeout) and keeps the
        addresses chosen here; `env` adds to the environment (e.g. SSL_CERT_FILE); `host` and
        `port` place the plain listener (another loopback address, a port kept for a restart)."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = port if port is not None else free_port(host)
        self.address = f"{host}:{self.port}"
        self.url = f"http://{self.address}"
        self.storage = storage if storage is not None else workdir / "storage"
        # HTTPS only when asked for, on a free port (the default 0.0.0.0:30003 would collide)
        self.https_port = free_port() if tls else None
        self.https_url = f"https://127.0.0.1:{self.https_port}" if tls else None
        https = f"127.0.0.1:{self.https_port}" if tls else None
        self.metrics_url = f"http://127.0.0.1:{free_port()}" if metrics else None
        config: dict[str, object] = {
            "listen": {"http": self.address, "https": https, **(listen or {})},
            "storage": {"path": str(self.storage)},
            "upstreams": {name: {"url": url} for name, url in upstreams.items()},
            "default_upstream": default_upstream or "",
            # every tag request reaches the upstream, so tests can count them; TTL tests override
            "cache": {"tag_ttl": "0s"},
            "log": {"level": "debug"},
            "metrics": {"listen": self.metrics_url.removeprefix("http://")
                        if self.metrics_url else None},
        }
        config.update(extra or {})
        self.config_path = workdir / "edgecache.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "edgecache.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgecache", "serve", "--config", str(self.config_path)],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            cwd=Path(__file__).resolve().parents[2],
        )
        try:
            wait_http(self.url + "/v2/", proc=self.proc)
            if self.https_port is not None:  # listeners start one after the other
                wait_port(self.https_port, proc=self.proc)
        except Exception as exc:
            self.close()  # by PID, and the log file too: a failed start leaks nothing
            raise RuntimeError(f"edgecache did not start ({exc}); its log ends:\n"
                               f"{self.log()[-3000:]}") from exc

    def close(self) -> None:
        stop(self.proc)
        self._log.close()


    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def requests(self) -> list[RequestLog]:
        """What edgecache answered, from its access log."""
        return [RequestLog(m["method"], m["path"], int(m["status"]))
                for m in ACCESS_RE.finditer(self.log())]

    def mark(self) -> int:
        """A position in the access log: every request answered so far lies before it."""
        settle_log(self.url, self.requests)
        return len(self.requests())

    def requests_since(self, mark: int) -> list[RequestLog]:
        settle_log(self.url, self.requests)
        return self.requests()[mark:]

    def stored_blobs(self) -> dict[str, int]:
        """digest -> size of every published blob file."""
        out = {}
        root = self.storage / "blobs"
        for path in root.glob("*/*/*"):
            out[f"{path.parent.parent.name}:{path.name}"] = path.stat().st_size
        return out


# What the integration tests' `edgecaches` fixture hands out: start(name, upstreams, **kwargs).
StartEdgecache = Callable[..., EdgecacheProcess]


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Wait until 127.0.0.1:port accepts TCP connections (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # poll interval of a deadline-bounded readiness wait
    raise TimeoutError(f"port {port} did not open within {timeout}s")
