"""A private dockerd (own data-root, exec-root, pidfile, socket and daemon.json), stopped by PID.

dockerd runs as root with no networking of its own (`--bridge=none`, no iptables) and the vfs
storage driver (no overlay mounts to leak; slow, so the tests pull images of a few MiB). Its
config file is the `daemon.json` that `edgecache client-config` wrote, as a user installs it.

The daemon runs with HTTP(S)_PROXY pointing at a loopback port that refuses connections: Go never
proxies loopback addresses, so edgecache on 127.0.0.1 is reached directly, while a fallback to
registry-1.docker.io (what dockerd does whenever a mirror fails) can only reach that dead port
and fail. The tests never leave 127.0.0.1.

dockerd 20.10 has no flag for its certs.d: it reads /etc/docker/certs.d/<host:port>/ca.crt.
`trust()` installs a CA there for one address (a test's unique port) and `close()` removes
exactly what it installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.registry import stop

CERTS_D = Path("/etc/docker/certs.d")


def existing_daemon_json(root: Path, workdir: Path) -> Path:
    """The daemon.json already under `root` before client-config merges into it: the
    identity key, which dockerd 20.10 would otherwise write to /etc/docker/key.json (a
    daemon.json key only, no flag)."""
    path = root / "etc/docker/daemon.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"deprecated-key-path": str(workdir / "key.json")}))
    return path


class Dockerd:
    def __init__(self, workdir: Path, config_file: Path) -> None:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise RuntimeError("dockerd is not installed (apt-get install docker.io)")
        if os.geteuid() != 0:
            raise RuntimeError("dockerd needs root: run the integration tests as root")
        # the CLI of the same package: another `docker` earlier on PATH may speak a newer API
        cli = Path(dockerd).with_name("docker")
        self.cli = str(cli) if cli.is_file() else shutil.which("docker") or "docker"
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        # AF_UNIX paths are short; containerd's sockets go under exec-root as well
        self._rundir = Path(tempfile.mkdtemp(prefix="ecdk-", dir="/tmp"))
        self.socket = self._rundir / "docker.sock"
        self.host = f"unix://{self.socket}"
        self._installed: list[Path] = []
        self._dead_proxy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._dead_proxy.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{self._dead_proxy.getsockname()[1]}"
        self.env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                    "HOME": str(workdir), "DOCKER_CONFIG": str(workdir / "cli"),
                    "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "NO_PROXY": "",
                    "http_proxy": proxy, "https_proxy": proxy, "no_proxy": ""}
        self.log_path = workdir / "dockerd.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [dockerd, "--config-file", str(config_file), "--iptables=false",
             "--ip6tables=false", "--bridge=none", "--storage-driver=vfs",
             "--data-root", str(workdir / "data"), "--exec-root", str(self._rundir / "exec"),
             "--pidfile", str(self._rundir / "dockerd.pid"), "--host", self.host],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.proc.returncode} at start-up; "
                                   f"its log ends:\n{self.log_tail()}")
            if self.socket.exists():
                result = self.run("version", "--format", "{{.Server.Version}}", timeout=10)
                if result.returncode == 0:
                    return
                last = result.stderr.strip()
            time.sleep(0.1)  # poll interval of a deadline-bounded readiness wait
        raise RuntimeError(f"dockerd did not answer on {self.host} within {timeout}s ({last}); "
                           f"log:\n{self.log_tail()}")

    def close(self) -> None:
        stop(self.proc)  # dockerd stops the containerd it started before it exits
        self._log.close()
        self._dead_proxy.close()
        for directory in reversed(self._installed):
            if directory == CERTS_D:
                with contextlib.suppress(OSError):
                    directory.rmdir()
            else:
                shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(self._rundir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def trust(self, staged_certs_d: Path, address: str) -> None:
        """Install <staged>/<address>/ca.crt as /etc/docker/certs.d/<address>/ca.crt (a
        directory that must not exist yet: the address carries the test's own port)."""
        if not CERTS_D.exists():
            CERTS_D.mkdir(parents=True)
            self._installed.append(CERTS_D)  # removed again, last, if nothing else is in it
        target = CERTS_D / address
        target.mkdir(exist_ok=False)
        self._installed.append(target)
        shutil.copyfile(staged_certs_d / address / "ca.crt", target / "ca.crt")

    # ---- the docker CLI ------------------------------------------------------------------

    def run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """The docker CLI against this daemon; the outcome as it is."""
        return subprocess.run([self.cli, "--host", self.host, *args], capture_output=True,
                              text=True, env=self.env, timeout=timeout, check=False)

    def docker(self, *args: str, timeout: float = 120.0) -> str:
        result = self.run(*args, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
                f"\ndockerd log:\n{self.log_tail()}")
        return result.stdout

    def login(self, address: str, user: str, password: str) -> None:
        """`docker login` (the daemon checks the credentials against `address`'s /v2/)."""
        result = subprocess.run([self.cli, "--host", self.host, "login", "--username", user,
                                 "--password-stdin", address], input=password,
                                capture_output=True, text=True, env=self.env, timeout=60,
                                check=False)
        if result.returncode != 0:
            raise AssertionError(f"docker login {address} exited {result.returncode}:\n"
                                 f"{result.stderr[-2000:]}")

    def pull(self, ref: str) -> str:
        return self.docker("pull", ref)

    def inspect(self, ref: str) -> dict[str, object]:
        found = json.loads(self.docker("image", "inspect", ref))
        assert isinstance(found, list) and len(found) == 1, found
        doc = found[0]
        assert isinstance(doc, dict)
        return doc

    def info(self) -> dict[str, object]:
        doc = json.loads(self.docker("info", "--format", "{{json .}}"))
        assert isinstance(doc, dict)
        return doc
