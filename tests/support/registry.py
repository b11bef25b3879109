"""A real upstream: Debian's docker-registry (Distribution 2.8) on loopback, plus a pusher.

The registry logs every request as JSON; `requests()` parses that log so tests can count what
the upstream really served, without any proxy in between.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.images import Blob, Image, Index


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError as exc:
            last = exc
            time.sleep(0.05)  # poll interval of a deadline-bounded readiness wait
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process we started, by its PID."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


MARKER = "edgecache-test-marker"


@dataclass
class RequestLog:
    method: str
    path: str
    status: int


def settle_log(base_url: str, read: Callable[[], list[RequestLog]], timeout: float = 15.0) -> None:
    """Wait until a server's log has caught up with every request answered so far.

    A server may log a request a moment after the client has read the last byte of its answer,
    so counting right away could miss it. Send one marker request and wait, bounded, until its
    own line appears: every request answered before it has been logged by then.
    """
    marker = f"{MARKER}={uuid.uuid4().hex}"
    try:
        with urllib.request.urlopen(f"{base_url}/v2/?{marker}", timeout=5):
            pass
    except urllib.error.HTTPError as exc:  # any answer is logged (e.g. 401 behind a login)
        exc.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(marker in entry.path for entry in read()):
            return
        time.sleep(0.02)  # poll interval of a deadline-bounded readiness wait
    raise TimeoutError(f"{base_url} did not log the marker request within {timeout}s")


def pulls(entries: list[RequestLog]) -> list[RequestLog]:
    """The GETs and HEADs of the registry API, without health checks and log markers."""
    return [entry for entry in entries
            if entry.method in ("GET", "HEAD") and MARKER not in entry.path
            and entry.path not in ("/v2", "/v2/")]


class DockerRegistry:
    """A docker-registry process with its own storage and JSON log."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "registry.log"
        config = workdir / "config.yml"
        config.write_text(json.dumps({
            "version": 0.1,
            "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(workdir / "data")},
                        "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.port}"},
        }))
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([binary, "serve", str(config)], stdout=self._log,
                                     stderr=subprocess.STDOUT, env={"PATH": os.environ["PATH"]})
        wait_http(self.url + "/v2/", proc=self.proc)

    def close(self) -> None:
        stop(self.proc)
        self._log.close()

    def requests(self) -> list[RequestLog]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("msg") != "response completed":
                continue
            out.append(RequestLog(entry.get("http.request.method", ""),
                                  entry.get("http.request.uri", ""),
                                  int(entry.get("http.response.status", 0))))
        return out

    def mark(self) -> int:
        """A position in the log: every request answered so far lies before it."""
        settle_log(self.url, self.requests)
        return len(self.requests())

    def pulls_since(self, mark: int) -> list[RequestLog]:
        """The registry API reads (GET/HEAD) the registry served after `mark`."""
        settle_log(self.url, self.requests)
        return pulls(self.requests()[mark:])

    # ---- seeding through the push API -----------------------------------------------------

    def _call(self, method: str, url: str, data: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, dict(resp.headers)

    def push_blob(self, repo: str, blob: Blob) -> None:
        _, headers = self._call("POST", f"{self.url}/v2/{repo}/blobs/uploads/", b"")
        location = headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        self._call("PUT", f"{location}{sep}digest={blob.digest}", blob.data,
                   {"Content-Type": "application/octet-stream"})

    def push_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> None:
        self._call("PUT", f"{self.url}/v2/{repo}/manifests/{reference}", body,
                   {"Content-Type": media_type})

    def push_image(self, repo: str, tag: str, image: Image) -> None:
        for blob in image.blobs:
            self.push_blob(repo, blob)
        self.push_manifest(repo, tag, image.manifest, image.media_type)

    def push_index(self, repo: str, tag: str, index: Index) -> None:
        for image in index.images:
            for blob in image.blobs:
                self.push_blob(repo, blob)
            self.push_manifest(repo, image.digest, image.manifest, image.media_type)
        self.push_manifest(repo, tag, index.manifest, index.media_type)
