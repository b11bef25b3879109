"""Running `edgecache client-config` as a user does, and waiting for a listener on any address."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def edgecache_cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "edgecache", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    if ok:
        assert result.returncode == 0, f"edgecache {' '.join(args)}: {result.stderr}"
    return result


def client_config(config: Path, out: Path, *addresses: str) -> list[Path]:
    """`client-config --out OUT --address ...`; the files it says it wrote."""
    args = ["client-config", "--config", str(config), "--out", str(out)]
    for address in addresses:
        args += ["--address", address]
    stdout = edgecache_cli(*args).stdout
    return [Path(line.removeprefix("wrote ").split(" (the previous file")[0])
            for line in stdout.splitlines() if line.startswith("wrote ")]


def wait_listening(host: str, port: int, timeout: float = 15.0,
                   check: Callable[[], None] | None = None) -> None:
    """Bounded wait until host:port (IPv4 or IPv6) accepts TCP connections; `check` is called
    each round (it asserts what must hold meanwhile: the server process still runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check is not None:
            check()
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # poll interval of a deadline-bounded readiness wait
    raise TimeoutError(f"[{host}]:{port} did not open within {timeout}s")
