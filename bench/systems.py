"""The systems compared, each a real process (or process group) on loopback, stopped by PID.

- `Upstream`: Debian's docker-registry (tests/support/registry.py) seeded with generated images;
  its JSON log tells how many bytes of which blob each cache fetched.
- `Edgecache`: edgecache (tests/support/edgecache.py) with a plain-HTTP and an HTTPS listener
  (self-managed CA), log level info (the shipped default), metrics listener off.
- `Distribution`: Debian's docker-registry in proxy mode (`proxy: remoteurl:`), the reference
  pull-through cache. One process serves one listener, so plain HTTP and HTTPS are two processes
  with their own storage, each warmed on its own.
- `Nginx`: nginx serving the blob files of edgecache's storage (sendfile on, tcp_nopush on,
  2 workers: one per core), plain and HTTPS: the ceiling for serving a file.

HTTPS certificates for Distribution and nginx: one EC P-256 self-signed certificate made with
openssl (edgecache's own is EC P-256 too, from its CA), so the handshake costs the same.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.support.edgecache import EdgecacheProcess
from tests.support.registry import DockerRegistry, free_port, stop, wait_http

UPSTREAM = "docker.io"


def make_cert(directory: Path) -> tuple[Path, Path]:
    """An EC P-256 self-signed certificate for 127.0.0.1 and localhost (openssl)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "server.crt", directory / "server.key"
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass
class BlobFetch:
    digest: str
    written: int
    status: int


class Upstream(DockerRegistry):
    """The upstream registry, with a reader for the bytes it served per blob."""

    def blob_fetches(self, mark: int) -> list[BlobFetch]:
        """GETs of blobs answered after log line `mark` (count lines with `log_lines`)."""
        out = []
        lines = self.log_path.read_text(errors="replace").splitlines()[mark:]
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("msg") != "response completed":
                continue
            uri = entry.get("http.request.uri", "")
            if entry.get("http.request.method") != "GET" or "/blobs/sha256:" not in uri:
                continue
            out.append(BlobFetch(uri.rsplit("/", 1)[1].split("?")[0],
                                 int(entry.get("http.response.written", 0)),
                                 int(entry.get("http.response.status", 0))))
        return out

    def log_lines(self) -> int:
        """A position in the log: every request answered so far lies before it."""
        self.mark()  # waits until the log has caught up
        return len(self.log_path.read_text(errors="replace").splitlines())


def summarize_fetches(fetches: list[BlobFetch]) -> dict[str, int]:
    per_blob = Counter(f.digest for f in fetches)
    return {"blob_gets": len(fetches), "bytes": sum(f.written for f in fetches),
            "distinct": len(per_blob), "max_per_blob": max(per_blob.values(), default=0)}


class System:
    name = "?"
    url: str
    https_url: str | None

    def pids(self) -> list[int]:
        raise NotImplementedError

    def processes(self) -> list[psutil.Process]:
        out = []
        for pid in self.pids():
            try:
                out.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        return out

    def close(self) -> None:
        raise NotImplementedError


class Edgecache(System):
    name = "edgecache"

    def __init__(self, workdir: Path, upstream_url: str, storage: Path | None = None) -> None:
        self.proc_ = EdgecacheProcess(
            workdir, {UPSTREAM: upstream_url}, default_upstream=UPSTREAM, storage=storage,
            tls=True, extra={"log": {"level": "info"}, "cache": {"tag_ttl": "5m"}})
        self.url = self.proc_.url
        self.https_url = self.proc_.https_url
        self.storage = self.proc_.storage
        self.ca = self.storage / "tls" / "ca.crt"

    def pids(self) -> list[int]:
        return [self.proc_.proc.pid]

    def close(self) -> None:
        self.proc_.close()


class Distribution(System):
    """docker-registry in proxy mode, on one listener (plain HTTP, or HTTPS with `cert`)."""

    name = "distribution"

    def __init__(self, workdir: Path, upstream_url: str,
                 cert: tuple[Path, Path] | None = None) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise RuntimeError("docker-registry is not installed")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.storage = workdir / "data"
        port = free_port()
        http: dict[str, object] = {"addr": f"127.0.0.1:{port}"}
        if cert is not None:
            http["tls"] = {"certificate": str(cert[0]), "key": str(cert[1])}
        self.config = workdir / "config.yml"
        # log level info and access log on, as Debian ships it
        self.config.write_text(json.dumps({
            "version": 0.1,
            "log": {"level": "info", "formatter": "json"},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)},
                        "cache": {"blobdescriptor": "inmemory"}},
            "http": http,
            "proxy": {"remoteurl": upstream_url},
        }))
        scheme = "https" if cert else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.https_url = self.url if cert else None
        self._log = open(workdir / "registry.log", "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([binary, "serve", str(self.config)], stdout=self._log,
                                     stderr=subprocess.STDOUT,
                                     env={"PATH": os.environ["PATH"]})
        _wait(self.url + "/v2/", self.proc)

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def close(self) -> None:
        stop(self.proc)
        self._log.close()


NGINX_CONF = """\
user root;
worker_processes {workers};
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    access_log {work}/access.log;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location = /v2/ {{ default_type application/json; return 200 "{{}}"; }}
        location ~ "^/v2/.+/blobs/sha256:(([0-9a-f]{{2}})[0-9a-f]{{62}})$" {{
            default_type application/octet-stream;
            alias {blobs}/sha256/$2/$1;
        }}
        location ~ "^/v2/.+/manifests/sha256:(([0-9a-f]{{2}})[0-9a-f]{{62}})$" {{
            default_type {manifest_type};
            alias {blobs}/sha256/$2/$1;
        }}
{tags}
    }}
}}
"""


class Nginx(System):
    """nginx serving the blob tree `blobs` (edgecache's, or a copy) by digest; `tags` maps a
    /v2/<repo>/manifests/<tag> path to the manifest file it names."""

    name = "nginx"

    def __init__(self, workdir: Path, blobs: Path, cert: tuple[Path, Path],
                 tags: dict[str, Path], manifest_type: str, workers: int = 0) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        port, tls_port = free_port(), free_port()
        tag_locations = "\n".join(
            f"        location = {path} {{ default_type {manifest_type}; alias {file}; }}"
            for path, file in tags.items())
        conf = workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            workers=workers or (os.cpu_count() or 1), work=workdir, port=port, tls_port=tls_port,
            cert=cert[0], key=cert[1], blobs=blobs, manifest_type=manifest_type,
            tags=tag_locations))
        self.url = f"http://127.0.0.1:{port}"
        self.https_url = f"https://127.0.0.1:{tls_port}"
        self._log = open(workdir / "stderr.log", "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(workdir),
                                      "-g", "daemon off;"],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        _wait(self.url + "/v2/", self.proc)

    def pids(self) -> list[int]:
        try:
            master = psutil.Process(self.proc.pid)
            return [self.proc.pid, *(c.pid for c in master.children())]
        except psutil.NoSuchProcess:
            return []

    def close(self) -> None:
        stop(self.proc)  # SIGTERM to the master: it stops its workers
        self._log.close()


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if url.startswith("https://"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
            done = subprocess.run(["curl", "-ks", "-o", "/dev/null", "--max-time", "2", url],
                                  check=False)
            if done.returncode == 0:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{url} did not answer within {timeout}s")
    wait_http(url, timeout, proc)


@dataclass
class Fleet:
    """Every system under test, by label."""

    upstream: Upstream
    systems: dict[str, System] = field(default_factory=dict)

    def close(self) -> None:
        for system in reversed(list(self.systems.values())):
            try:
                system.close()
            except Exception as exc:  # keep stopping the others
                print(f"stopping {system.name}: {exc}", file=sys.stderr)
        self.upstream.close()
