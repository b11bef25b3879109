"""Rootful podman with nothing of the host's: vfs storage under its own root and runroot, its own
containers.conf, storage.conf, auth file, policy and temporary directories.

The registries configuration is the file under test: `CONTAINERS_REGISTRIES_CONF` names the
drop-in `edgecache client-config` wrote (a drop-in is a complete registries.conf v2 file).
podman 4.3 also reads the host's /etc/containers/registries.conf.d; on Debian that holds only
short-name aliases, which never apply to the fully qualified names the tests pull.

HTTP(S)_PROXY point at a loopback port that refuses connections: Go never proxies loopback
addresses, so edgecache on 127.0.0.1 is reached directly, while podman's fallback to the
registry itself (docker.io when every mirror failed) fails at once. A host name that resolves
to loopback *is* proxied, so a test using one names it in `no_proxy`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PODMAN_TIMEOUT = 180


class Podman:
    def __init__(self, workdir: Path, no_proxy: str = "", hosts: Path | None = None) -> None:
        """`hosts` replaces /etc/hosts for podman alone (a private mount namespace): a host
        name for ::1 without touching the machine's resolver."""
        binary = shutil.which("podman")
        if binary is None:
            raise RuntimeError("podman is not installed (apt-get install podman)")
        if os.geteuid() != 0:
            raise RuntimeError("rootful podman needs root: run the integration tests as root")
        self.binary = binary
        self.hosts = hosts
        self.workdir = workdir
        for sub in ("root", "tmp", "libpod", "networks", "home"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        # podman refuses a runroot longer than 50 characters
        self.runroot = Path(tempfile.mkdtemp(prefix="ecpm-", dir="/tmp"))
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        storage = workdir / "storage.conf"
        storage.write_text('[storage]\ndriver = "vfs"\n'
                           f'graphroot = {json.dumps(str(workdir / "root"))}\n'
                           f"runroot = {json.dumps(str(self.runroot))}\n")
        containers = workdir / "containers.conf"
        containers.write_text(
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f"events_logfile_path = {json.dumps(str(workdir / 'events.log'))}\n"
            f"tmp_dir = {json.dumps(str(workdir / 'libpod'))}\n"
            "[network]\n"
            f"network_config_dir = {json.dumps(str(workdir / 'networks'))}\n")
        (workdir / "auth.json").write_text('{"auths": {}}')
        self._dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._dead.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{self._dead.getsockname()[1]}"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(workdir / "home"),
            "TMPDIR": str(workdir / "tmp"),
            "CONTAINERS_CONF": str(containers),
            "CONTAINERS_STORAGE_CONF": str(storage),
            "REGISTRY_AUTH_FILE": str(workdir / "auth.json"),
            "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "NO_PROXY": no_proxy,
            "http_proxy": proxy, "https_proxy": proxy, "no_proxy": no_proxy,
        }

    def close(self) -> None:
        self._dead.close()
        shutil.rmtree(self.runroot, ignore_errors=True)

    def run(self, registries_conf: Path, *args: str,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, "--root", str(self.workdir / "root"),
                "--runroot", str(self.runroot), "--storage-driver", "vfs",
                "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                "--tmpdir", str(self.workdir / "libpod"), *args]
        if self.hosts is not None:
            argv = ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
                    str(self.hosts), *argv]
        result = subprocess.run(argv, env={**self.env, "CONTAINERS_REGISTRIES_CONF":
                                           str(registries_conf)},
                                capture_output=True, text=True, timeout=PODMAN_TIMEOUT,
                                check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stderr[-3000:]}")
        return result

    def login(self, registries_conf: Path, address: str, user: str, password: str,
              *flags: str) -> None:
        """`podman login` into this podman's own auth file (podman checks against /v2/)."""
        argv = [self.binary, "login", "--username", user, "--password-stdin", *flags, address]
        result = subprocess.run(argv, input=password, env={
            **self.env, "CONTAINERS_REGISTRIES_CONF": str(registries_conf)},
            capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise AssertionError(f"podman login {address} exited {result.returncode}:\n"
                                 f"{result.stderr[-2000:]}")

    def pull(self, registries_conf: Path, ref: str, *flags: str,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(registries_conf, "pull", "--signature-policy", str(self.policy),
                        *flags, ref, check=check)

    def inspect(self, registries_conf: Path, ref: str) -> dict[str, object]:
        found = json.loads(self.run(registries_conf, "image", "inspect", ref).stdout)
        assert isinstance(found, list) and len(found) == 1, found
        doc = found[0]
        assert isinstance(doc, dict)
        return doc
