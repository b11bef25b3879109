"""The shipped Kubernetes manifests, read as the kubelet would: which command each container
runs, with which files, so tests run those very commands on this machine.

Paths inside the pod are mapped to test directories by prefix (`/var/lib/edgecache` -> a fresh
directory, ...), never by editing the commands themselves."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trustme
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "images" / "kubernetes" / "edgecache.yaml"
SITE_SECRET = ROOT / "images" / "kubernetes" / "site-secret.example.yaml"
CONTAINERFILE = ROOT / "images" / "Containerfile"
SITE_MOUNT = "/etc/edgecache-site"
UID = 10001


def kube_docs(path: Path = KUBERNETES) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kube(kind: str) -> dict[str, Any]:
    found = [doc for doc in kube_docs() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = kube("DaemonSet")["spec"]["template"]["spec"]
    return spec


def container(name: str) -> dict[str, Any]:
    spec = pod_spec()
    found = [c for c in [*spec.get("initContainers", []), *spec["containers"]]
             if c["name"] == name]
    assert len(found) == 1, f"no one container {name}"
    return found[0]


def entrypoint() -> list[str]:
    """The image's ENTRYPOINT (exec form), from the Containerfile's last one."""
    lines = [line for line in CONTAINERFILE.read_text().splitlines()
             if line.startswith("ENTRYPOINT ")]
    value: list[str] = json.loads(lines[-1].removeprefix("ENTRYPOINT "))
    return value


def pod_argv(spec: Mapping[str, Any], paths: Mapping[str, str], edgecache: list[str]
             ) -> list[str]:
    """What the container runs (`command` replaces the ENTRYPOINT, `args` follow it), with pod
    paths mapped to test paths and the image's `edgecache` to this checkout's."""
    argv = list(spec["command"]) if "command" in spec else [*entrypoint(), *spec.get("args", [])]
    program = edgecache if argv[0] == "edgecache" else argv[:1]
    return [*program, *(map_path(arg, paths) for arg in argv[1:])]


def map_path(value: str, paths: Mapping[str, str]) -> str:
    for inside, outside in paths.items():
        if value == inside or value.startswith(inside + "/"):
            return outside + value[len(inside):]
    return value


def configmap_config_doc() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(kube("ConfigMap")["data"]["config.yaml"])
    return config


def write_site_secret(directory: Path) -> trustme.CA:
    """The Secret's three files, as `kubectl create secret generic edgecache-site` makes them."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    ca.private_key_pem.write_to_path(str(directory / "ca.key"))
    (directory / "cluster-secret").write_text("c2l0ZSBzZWNyZXQgZm9yIHRlc3RzIG9ubHkgMDEyMzQ1\n")
    return ca


def local_config(paths: Mapping[str, str], https: str, metrics: str,
                 keep_cluster: bool) -> dict[str, Any]:
    """The ConfigMap's config with its files mapped, its listeners on loopback and its upstreams
    a dead loopback port (nothing here may leave the machine). Without `keep_cluster` the node
    runs alone (the ConfigMap's `cluster.dns` names a Service that does not resolve here)."""
    config = configmap_config_doc()
    config["storage"]["path"] = map_path(config["storage"]["path"], paths)
    for key in ("ca_cert_file", "ca_key_file"):
        config["tls"][key] = map_path(config["tls"][key], paths)
    if keep_cluster:
        config["cluster"]["secret_file"] = map_path(config["cluster"]["secret_file"], paths)
    else:
        config.pop("cluster", None)
    config["listen"]["https"] = https
    config["metrics"]["listen"] = metrics
    config["upstreams"] = {name: {"url": f"http://127.0.0.1:{dead_port()}"}
                           for name in config["upstreams"]}
    return config


def dead_port() -> int:
    """A loopback port nobody listens on (bound and released: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
