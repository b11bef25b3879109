"""edgecache as a real subprocess, configured on loopback, stopped by PID."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.registry import free_port, stop, wait_http


class EdgecacheProcess:
    def __init__(self, workdir: Path, upstreams: dict[str, str],
                 default_upstream: str | None = None, extra: dict[str, object] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.storage = workdir / "storage"
        config: dict[str, object] = {
            "listen": {"http": self.address},
            "storage": {"path": str(self.storage)},
            "upstreams": {name: {"url": url} for name, url in upstreams.items()},
            "default_upstream": default_upstream or "",
            "log": {"level": "debug"},
        }
        config.update(extra or {})
        self.config_path = workdir / "edgecache.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "edgecache.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgecache", "serve", "--config", str(self.config_path)],
            stdout=self._log, stderr=subprocess.STDOUT, env=dict(os.environ),
            cwd=Path(__file__).resolve().parents[2],
        )
        wait_http(self.url + "/v2/", proc=self.proc)

    def close(self) -> None:
        stop(self.proc)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stored_blobs(self) -> dict[str, int]:
        """digest -> size of every published blob file."""
        out = {}
        root = self.storage / "blobs"
        for path in root.glob("*/*/*"):
            out[f"{path.parent.parent.name}:{path.name}"] = path.stat().st_size
        return out
