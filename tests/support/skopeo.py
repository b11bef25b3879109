"""skopeo as a real client: a hermetic registries.conf, policy and home, and layout checks.

Every skopeo run gets HTTP(S)_PROXY pointing at a loopback port that refuses connections. Go
never proxies loopback addresses, so edgecache on 127.0.0.1 is reached directly, while any
attempt to reach a real registry (docker.io when a mirror fails) fails at once: the mirror is
the only working path, even on a machine with internet access.

(skopeo 1.9 ignores CONTAINERS_REGISTRIES_CONF, so the config goes in with the global, hidden
`--registries-conf` flag.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.corpus import Seeded
from tests.support.images import Index

SKOPEO_TIMEOUT = 90


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Skopeo:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("skopeo")
        if binary is None:
            raise RuntimeError("skopeo is not installed (apt-get install skopeo)")
        self.binary = binary
        self.workdir = workdir
        for sub in ("home", "run", "tmp"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        # Bound but never listening: every connection to it is refused.
        self._dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._dead.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{self._dead.getsockname()[1]}"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir / "home"),
            "XDG_RUNTIME_DIR": str(workdir / "run"),
            "REGISTRY_AUTH_FILE": str(workdir / "auth.json"),
            "HTTP_PROXY": dead_proxy, "HTTPS_PROXY": dead_proxy,
            "http_proxy": dead_proxy, "https_proxy": dead_proxy,
        }
        (workdir / "auth.json").write_text('{"auths": {}}')
        self._confs = 0

    def close(self) -> None:
        self._dead.close()

    def login(self, registry: str, username: str, password: str) -> None:
        """Credentials for `registry` (host:port) in skopeo's auth file, as `skopeo login`
        writes them: the only credentials skopeo 1.9 sends to a registries.conf mirror
        (`--src-creds` applies to the named registry only)."""
        path = self.workdir / "auth.json"
        doc = json.loads(path.read_text())
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        doc["auths"][registry] = {"auth": token}
        path.write_text(json.dumps(doc))

    def registries_conf(self, mirrors: dict[str, str]) -> Path:
        """A registries.conf where each registry prefix has one plain-HTTP mirror location."""
        lines = ["unqualified-search-registries = []", ""]
        for prefix, mirror in mirrors.items():
            lines += ["[[registry]]", f'prefix = "{prefix}"', f'location = "{prefix}"',
                      "[[registry.mirror]]", f'location = "{mirror}"', "insecure = true", ""]
        self._confs += 1
        path = self.workdir / f"registries-{self._confs}.conf"
        path.write_text("\n".join(lines))
        return path

    def copy(self, source: str, destination: str, *, registries_conf: Path | None = None,
             tls_verify: bool = True, src_creds: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        """`skopeo copy --all`; fails the test with skopeo's own words when it fails (with
        `check=False`, returns the outcome as is). `src_creds` is `user:password`."""
        args = [self.binary, "--policy", str(self.policy), "--tmpdir", str(self.workdir / "tmp"),
                "--command-timeout", f"{SKOPEO_TIMEOUT - 10}s"]
        if registries_conf is not None:
            args += ["--registries-conf", str(registries_conf)]
        args += ["copy", "--all", "--retry-times", "0"]
        if destination.startswith("oci:"):
            # keep layers as the registry has them; the default would gzip uncompressed layers
            args.append("--dest-oci-accept-uncompressed-layers")
        if not tls_verify:
            args.append("--src-tls-verify=false")
        if src_creds is not None:
            args += ["--src-creds", src_creds]
        args += [source, destination]
        result = subprocess.run(args, env=self.env, capture_output=True, text=True,
                                timeout=SKOPEO_TIMEOUT, check=False)
        if result.returncode != 0 and check:
            pytest.fail(f"skopeo copy {source} {destination} exited {result.returncode}:\n"
                        f"{result.stderr[-3000:]}", pytrace=False)
        return result


def _same_bytes(where: str, data: bytes, expected: bytes) -> None:
    if data != expected:  # not an assert: pytest would try to diff megabytes
        pytest.fail(f"{where}: {len(data)} bytes differ from the seeded {len(expected)} bytes")


def verify_oci_layout(layout: Path, seeded: Seeded) -> None:
    """The OCI layout skopeo wrote holds exactly the seeded manifests and blobs, byte for byte,
    and points at the seeded top-level manifest."""
    index = json.loads((layout / "index.json").read_bytes())
    tops = [(entry["digest"], entry["mediaType"]) for entry in index["manifests"]]
    assert tops == [(seeded.top.digest, seeded.top.media_type)]
    files = {f"sha256:{path.name}": path for path in (layout / "blobs" / "sha256").iterdir()}
    expected = seeded.content
    assert sorted(files) == sorted(expected)
    for digest, path in files.items():
        data = path.read_bytes()
        assert _sha256(data) == digest
        _same_bytes(str(path), data, expected[digest])


def verify_dir_layout(directory: Path, seeded: Seeded) -> None:
    """A `dir:` copy of one image (not an index): manifest.json is the seeded manifest,
    byte for byte, and every blob file is the seeded blob."""
    assert not isinstance(seeded.top, Index)
    _same_bytes(str(directory / "manifest.json"), (directory / "manifest.json").read_bytes(),
                seeded.top.manifest)
    blobs = {f"sha256:{path.name}": path for path in directory.iterdir()
             if path.name not in ("manifest.json", "version")}
    assert sorted(blobs) == sorted(seeded.blobs)
    for digest, path in blobs.items():
        data = path.read_bytes()
        assert _sha256(data) == digest
        _same_bytes(str(path), data, seeded.blobs[digest])
