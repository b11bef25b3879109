"""The DaemonSet's containers run the way the pod runs them, on this machine: the commands read
from images/kubernetes/edgecache.yaml (pod paths mapped to test directories), as the users and
with the capabilities the manifest gives them (setpriv; the tests run as root).

- A fresh node: the storage hostPath is a new root:root 0755 directory, as the kubelet makes it.
  edgecache as uid 10001 alone fails there (the crash loop the manifest used to ship); after the
  `prepare-storage` init container (root, CAP_CHOWN and CAP_FOWNER only) it serves /v2/ over
  HTTPS with a certificate from the site CA in the Secret, and the probes answer.
- The optional `client-config` init container (root, no capabilities) merges into a host's
  existing containerd hosts.toml and k3s registries.yaml: the operator's entries stay, the old
  files are kept as *.edgecache-bak, a second run changes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edgecache.clientconfig.containerd import CA_NAME
from tests.support.kubernetes import (
    SITE_MOUNT,
    UID,
    container,
    local_config,
    pod_argv,
    write_site_secret,
)
from tests.support.registry import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
# this checkout and its venv's packages, for an interpreter uid 10001 can run (the venv's own
# may live under root's 0700 home): the image's edgecache, as far as this machine has one
PYTHONPATH = os.pathsep.join(dict.fromkeys(
    [str(ROOT), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))


def as_uid(argv: list[str]) -> list[str]:
    """The main container: runAsUser/runAsGroup 10001, no capabilities, no new privileges."""
    return ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--no-new-privs",
            "--inh-caps=-all", "--bounding-set=-all", *argv]


def as_root_with(capabilities: list[str], argv: list[str]) -> list[str]:
    """An init container: uid 0, whose capabilities are the bounding set (drop ALL, add ...)."""
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in capabilities)])
    return ["setpriv", "--no-new-privs", "--inh-caps=-all", f"--bounding-set={bounding}", *argv]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          cwd="/", env={**os.environ, "PYTHONPATH": PYTHONPATH})


@pytest.fixture(scope="module")
def edgecache() -> list[str]:
    """`edgecache` as uid 10001 can run it, children included (the certificate issuer is
    `sys.executable -m edgecache.tls.ca`): this interpreter, or the system's of the same version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    probe = ("import subprocess, sys, edgecache.app, uvloop; "
             "subprocess.run([sys.executable, '-c', 'import edgecache.tls.ca'], check=True)")
    for python in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if os.access(python, os.X_OK) and run(as_uid([python, "-c", probe])).returncode == 0:
            return [python, "-m", "edgecache"]
    pytest.fail(f"no Python {version} with this checkout's packages is runnable by uid {UID}")


@pytest.fixture
def node() -> Iterator[Path]:
    """A directory uid 10001 can reach (pytest's tmp_path is 0700 root's)."""
    path = Path(tempfile.mkdtemp(prefix="edgecache-node-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def site_secret(node: Path) -> Path:
    """The Secret's files as the kubelet mounts them with fsGroup 10001: root:10001, 0440."""
    site = node / "etc-edgecache-site"
    write_site_secret(site)
    site.chmod(0o755)
    for path in site.iterdir():
        os.chown(path, 0, UID)
        path.chmod(0o440)
    return site


def pod_config(node: Path, storage: Path, site: Path, https: str, metrics: str) -> Path:
    etc = node / "etc-edgecache"
    etc.mkdir()
    config = local_config({"/var/lib/edgecache": str(storage), SITE_MOUNT: str(site)},
                          https, metrics, keep_cluster=False)
    (etc / "config.yaml").write_text(yaml.safe_dump(config))
    (etc / "config.yaml").chmod(0o644)
    return etc


def get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def wait_answering(url: str, proc: subprocess.Popen[bytes], log: Path,
                   context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            return get(url, context)
        except OSError:
            time.sleep(0.1)  # poll interval of a deadline-bounded readiness wait
    raise TimeoutError(f"{url} did not answer; log:\n{log.read_text(errors='replace')[-3000:]}")


def test_the_daemonset_starts_on_a_fresh_node(node: Path, edgecache: list[str]) -> None:
    storage = node / "var-lib-edgecache"
    storage.mkdir(mode=0o755)  # hostPath DirectoryOrCreate: root:root 0755
    site = site_secret(node)
    https_port, metrics_port = free_port(), free_port()
    etc = pod_config(node, storage, site, f"127.0.0.1:{https_port}",
                     f"127.0.0.1:{metrics_port}")
    paths = {"/var/lib/edgecache": str(storage), "/etc/edgecache": str(etc)}
    serve = as_uid(pod_argv(container("edgecache"), paths, edgecache))

    # what the manifest shipped before: edgecache as 10001 on the kubelet's directory
    refused = run(serve)
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("edgecache: ") and "Permission denied" in last, refused.stderr
    assert "Traceback" not in refused.stderr

    prepare = as_root_with(["CHOWN", "FOWNER"],
                           pod_argv(container("prepare-storage"), paths, edgecache))
    for _ in range(2):  # a fresh node, then a restarted pod (the directory is 10001's by then)
        done = run(prepare)
        assert done.returncode == 0, done.stderr
        assert (storage.stat().st_uid, storage.stat().st_gid) == (UID, UID)
        assert storage.stat().st_mode & 0o777 == 0o750

    log = node / "edgecache.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(serve, stdout=out, stderr=subprocess.STDOUT, cwd="/",
                                env={**os.environ, "PYTHONPATH": PYTHONPATH})
    try:
        trust = ssl.create_default_context(cafile=str(site / "ca.crt"))  # the one site CA
        status, body = wait_answering(f"https://127.0.0.1:{https_port}/v2/", proc, log, trust)
        assert (status, json.loads(body)) == (200, {})
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            path = container("edgecache")[probe]["httpGet"]["path"]
            assert get(f"http://127.0.0.1:{metrics_port}{path}")[0] == 200, probe
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]
    issued = storage / "tls" / "site" / "server.crt"
    assert issued.stat().st_uid == UID  # everything below the directory is edgecache's own


HOSTS_TOML = b'''server = "https://registry-1.docker.io"

[host."https://registry.corp.example:5000"]
  capabilities = ["pull", "resolve"]
'''
REGISTRIES_YAML = b'''mirrors:
  corp.example:
    endpoint: ["https://registry.corp.example:5000"]
configs:
  registry.corp.example:5000:
    tls: {insecure_skip_verify: false}
'''


def test_the_client_config_init_container_merges_into_the_host(
        node: Path, edgecache: list[str]) -> None:
    site = site_secret(node)
    etc = pod_config(node, node / "unused-storage", site, "0.0.0.0:30003", "0.0.0.0:9630")
    host = node / "host"  # the emptyDir at /host with the two hostPaths mounted inside it
    hosts_toml = host / "etc/containerd/certs.d/docker.io/hosts.toml"
    registries = host / "etc/rancher/k3s/registries.yaml"
    for path, data in ((hosts_toml, HOSTS_TOML), (registries, REGISTRIES_YAML)):
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    paths = {"/host": str(host), "/etc/edgecache": str(etc)}
    argv = as_root_with([], pod_argv(container("client-config"), paths, edgecache))

    done = run(argv)
    assert done.returncode == 0, done.stderr
    doc = tomllib.loads(hosts_toml.read_text())
    assert doc["server"] == "https://registry-1.docker.io"
    assert list(doc["host"]) == ["https://127.0.0.1:30003", "https://registry.corp.example:5000"]
    assert doc["host"]["https://127.0.0.1:30003"]["ca"] == f"../{CA_NAME}"
    ca = host / "etc/containerd/certs.d" / CA_NAME
    assert ca.read_bytes() == (site / "ca.crt").read_bytes()  # the site CA: trusts every node
    k3s = yaml.safe_load(registries.read_text())
    assert k3s["mirrors"]["corp.example"] == {"endpoint": ["https://registry.corp.example:5000"]}
    assert k3s["configs"]["registry.corp.example:5000"] == {"tls": {"insecure_skip_verify":
                                                                    False}}
    assert k3s["mirrors"]["docker.io"]["endpoint"][0] == "https://127.0.0.1:30003"
    for path, data in ((hosts_toml, HOSTS_TOML), (registries, REGISTRIES_YAML)):
        assert path.with_name(path.name + ".edgecache-bak").read_bytes() == data

    merged = hosts_toml.read_bytes(), registries.read_bytes()
    again = run(argv)  # every pod restart runs it again
    assert again.returncode == 0, again.stderr
    assert (hosts_toml.read_bytes(), registries.read_bytes()) == merged
    assert hosts_toml.with_name("hosts.toml.edgecache-bak").read_bytes() == HOSTS_TOML
