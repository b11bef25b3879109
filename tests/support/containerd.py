"""A private containerd (own root, state, socket and config) driven with `ctr`, stopped by PID.

Only what an image pull needs is loaded: CRI, runtimes, tasks, cgroup monitoring, the `opt`
plugin (which would create /opt/containerd) and the exotic snapshotters are disabled. The unpack
snapshotter is overlayfs when containerd's own probe mounts it fine, otherwise native.

Every `ctr` runs with HTTP(S)_PROXY pointing at a loopback port that refuses connections: Go
never proxies loopback addresses, so requests to edgecache on 127.0.0.1 go straight through,
while a fallback to a registry's public `server` (e.g. registry-1.docker.io) can only reach that
dead loopback port and fail. The tests therefore never leave 127.0.0.1.
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

# Longest usable AF_UNIX path is 107 bytes; keep a margin for the ".ttrpc" sibling.
_MAX_SOCKET_PATH = 100


class ContainerdCannotRun(Exception):
    """containerd itself (not the test) could not start in this environment."""


def write_hosts(hosts_dir: Path, registry: str, mirror_url: str,
                headers: dict[str, str] | None = None) -> Path:
    """A containerd hosts.toml sending pulls for `registry` to `mirror_url` (plain http), with
    `headers` sent on every request to the mirror (e.g. a static Authorization)."""
    directory = hosts_dir / registry
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hosts.toml"
    server = "https://registry-1.docker.io" if registry == "docker.io" else f"https://{registry}"
    path.write_text(
        f'server = "{server}"\n'
        "\n"
        f'[host."{mirror_url}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        + (f'[host."{mirror_url}".header]\n' if headers else "")
        + "".join(f"  {json.dumps(k)} = {json.dumps(v)}\n" for k, v in (headers or {}).items())
    )
    return path


class Containerd:
    def __init__(self, workdir: Path, namespace: str = "edgecache-test") -> None:
        containerd = shutil.which("containerd")
        ctr = shutil.which("ctr")
        if containerd is None or ctr is None:
            raise RuntimeError("containerd/ctr is not installed (apt-get install containerd)")
        self.ctr_binary = ctr
        self.namespace = namespace
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.root = workdir / "root"
        self.state = workdir / "state"
        self._sockdir: Path | None = None
        sock_dir = workdir
        if len(str(workdir / "containerd.sock.ttrpc")) > _MAX_SOCKET_PATH:
            self._sockdir = Path(tempfile.mkdtemp(prefix="ecctr-", dir="/tmp"))
            sock_dir = self._sockdir
        self.address = str(sock_dir / "containerd.sock")

        # Bound but never listening: connecting to it is refused at once.
        self._dead_proxy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._dead_proxy.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{self._dead_proxy.getsockname()[1]}"
        self.env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                    "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "NO_PROXY": "",
                    "http_proxy": proxy, "https_proxy": proxy, "no_proxy": ""}

        disabled = [
            "io.containerd.grpc.v1.cri",
            "io.containerd.internal.v1.opt",
            "io.containerd.internal.v1.restart",
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.runtime.v1.linux",
            "io.containerd.runtime.v2.task",
            "io.containerd.monitor.v1.cgroups",
            "io.containerd.service.v1.tasks-service",
            "io.containerd.grpc.v1.tasks",
        ]
        self.config_path = workdir / "config.toml"
        # json.dumps gives valid TOML basic strings / arrays of strings.
        self.config_path.write_text(
            "version = 2\n"
            f"root = {json.dumps(str(self.root))}\n"
            f"state = {json.dumps(str(self.state))}\n"
            f"disabled_plugins = {json.dumps(disabled)}\n"
            "[grpc]\n"
            f"  address = {json.dumps(self.address)}\n"
            "[ttrpc]\n"
            f"  address = {json.dumps(self.address + '.ttrpc')}\n"
            "[debug]\n"
            '  address = ""\n'
            "[metrics]\n"
            '  address = ""\n'
        )
        self.log_path = workdir / "containerd.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([containerd, "--config", str(self.config_path)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        try:
            self._wait_ready()
            self.snapshotter = "overlayfs" if self._plugin_ok("io.containerd.snapshotter.v1",
                                                              "overlayfs") else "native"
        except BaseException:
            self.close()
            raise

    # ---- lifecycle ---------------------------------------------------------------------------

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ContainerdCannotRun(
                    f"containerd exited with code {self.proc.returncode} at startup "
                    f"(root={self.root}); its log ends with:\n{self.log_tail()}")
            if not Path(self.address).exists():
                time.sleep(0.05)  # poll interval of a deadline-bounded readiness wait
                continue
            try:
                result = subprocess.run(self._ctr_argv("version"),
                                        capture_output=True, env=self.env, timeout=10)
            except subprocess.TimeoutExpired:
                last = "ctr version timed out"
                continue
            if result.returncode == 0:
                return
            last = result.stderr.decode(errors="replace").strip()
            time.sleep(0.1)  # poll interval of a deadline-bounded readiness wait
        raise RuntimeError(f"containerd did not answer on {self.address} within {timeout}s "
                           f"(last ctr error: {last}); log:\n{self.log_tail()}")

    def _plugin_ok(self, plugin_type: str, plugin_id: str) -> bool:
        for line in self.ctr("plugins", "ls").stdout.decode().splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[0] == plugin_type and fields[1] == plugin_id:
                return fields[-1] == "ok"
        return False

    def close(self) -> None:
        stop(self.proc)
        self._log.close()
        self._dead_proxy.close()
        self._unmount_leftovers()
        if self._sockdir is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)

    def _unmount_leftovers(self) -> None:
        """containerd unmounts after each apply; this only guards tmp cleanup if it did not."""
        prefix = str(self.workdir) + "/"
        for _ in range(10):
            mounts = [line.split()[4] for line in
                      Path("/proc/self/mountinfo").read_text().splitlines()]
            leftovers = [m for m in mounts if m.startswith(prefix)]
            if not leftovers:
                return
            for mount_point in reversed(leftovers):
                with contextlib.suppress(OSError):
                    subprocess.run(["umount", "-l", mount_point], capture_output=True,
                                   timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # ---- ctr ---------------------------------------------------------------------------------

    def _ctr_argv(self, *args: str) -> list[str]:
        return [self.ctr_binary, "--address", self.address, "--namespace", self.namespace,
                "--connect-timeout", "5s", *args]

    def ctr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(self._ctr_argv(*args), capture_output=True, env=self.env,
                                timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(
                f"ctr {' '.join(args)} failed with {result.returncode}:\n"
                f"stdout: {result.stdout.decode(errors='replace')[-3000:]}\n"
                f"stderr: {result.stderr.decode(errors='replace')[-3000:]}\n"
                f"containerd log:\n{self.log_tail()}")
        return result

    def pull(self, ref: str, hosts_dir: Path, *flags: str) -> str:
        """`ctr images pull` (with unpack) through the hosts directory; returns ctr's output."""
        result = self.ctr("images", "pull", "--hosts-dir", str(hosts_dir),
                          "--snapshotter", self.snapshotter, *flags, ref)
        return result.stdout.decode(errors="replace")

    def image_digest(self, ref: str) -> str:
        for line in self.ctr("images", "ls").stdout.decode().splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == ref:
                return fields[2]
        raise AssertionError(f"image {ref} is not in containerd's image store")

    def content_digests(self) -> set[str]:
        return set(self.ctr("content", "ls", "--quiet").stdout.decode().split())

    def content_get(self, digest: str) -> bytes:
        return self.ctr("content", "get", digest).stdout

    def snapshots(self) -> set[str]:
        out = self.ctr("snapshots", "--snapshotter", self.snapshotter, "ls").stdout.decode()
        return {line.split()[0] for line in out.splitlines()[1:] if line.split()}

    def remove_images(self, *refs: str) -> None:
        """Remove images and wait for garbage collection (content and snapshots go too)."""
        self.ctr("images", "rm", "--sync", *refs)
