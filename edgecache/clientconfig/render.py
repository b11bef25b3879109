"""Every client file edgecache can write, each as (installed path, merge with what is there).

Paths inside the files are the installed ones (`/etc/...`, or relative for containerd), so a
tree staged with `--out DIR` can be shipped by config management as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from edgecache.clientconfig import containerd, containers, docker, k3s
from edgecache.clientconfig.credentials import Credentials
from edgecache.clientconfig.endpoints import Endpoint
from edgecache.config import Config

CONTAINERD = PurePosixPath("/etc/containerd/certs.d")
CONTAINERS = PurePosixPath("/etc/containers")
K3S = PurePosixPath("/etc/rancher/k3s")
DOCKER = PurePosixPath("/etc/docker")

# (what is there now or None, the path to name in an error) -> the file to write
Merge = Callable[[bytes | None, str], bytes]


@dataclass(frozen=True, slots=True)
class Output:
    path: PurePosixPath  # where the file is once installed
    merge: Merge
    secret: bool = False  # holds credentials: written readable by its owner only


def _whole(data: bytes) -> Merge:
    """A file edgecache owns outright (the CA, its own drop-in)."""
    return lambda _existing, _where: data


def render(config: Config, points: list[Endpoint], ca_pem: bytes | None,
           credentials: Credentials | None = None) -> tuple[list[Output], list[str]]:
    """Every file, and one line for each endpoint a client cannot use (or that would carry
    credentials in the clear)."""
    outputs: list[Output] = []
    with_ca = ca_pem is not None
    secret = credentials is not None
    authorization = credentials.authorization if credentials is not None else None
    if ca_pem is not None:
        outputs.append(Output(CONTAINERD / containerd.CA_NAME, _whole(ca_pem)))
    for name, upstream in sorted(config.upstreams.items()):
        outputs.append(Output(CONTAINERD / name / "hosts.toml", containerd.hosts_toml(
            upstream.url, points, with_ca, authorization), secret))
    outputs.append(Output(CONTAINERD / "_default" / "hosts.toml",
                          containerd.hosts_toml(None, points, with_ca, authorization), secret))
    warnings = [line for line in [containers.refused(points)] if line]
    if secret:
        warnings += [f"credentials for {p.url} are sent in the clear (use listen.https)"
                     for p in points if p.scheme == "http"]
    if containers.usable(points):
        outputs.append(Output(CONTAINERS / "registries.conf.d" / "edgecache.conf",
                              _whole(containers.registries_conf(config.upstreams, points))))
    for point in points:
        if ca_pem is not None and point.scheme == "https":
            if not point.ipv6:
                outputs.append(Output(CONTAINERS / "certs.d" / point.address / "ca.crt",
                                      _whole(ca_pem)))
            outputs.append(Output(DOCKER / "certs.d" / point.address / "ca.crt", _whole(ca_pem)))
    k3s_ca = None
    if ca_pem is not None:
        k3s_ca = K3S / "edgecache-ca.crt"
        outputs.append(Output(k3s_ca, _whole(ca_pem)))
    upstreams = sorted(config.upstreams)
    outputs.append(Output(K3S / "registries.yaml", lambda old, where: k3s.registries_yaml(
        upstreams, points, k3s_ca, old, where, credentials), secret))
    refusal = docker.refused(config.default_upstream)
    warnings += [refusal] if refusal else []
    outputs.append(Output(DOCKER / "daemon.json", lambda old, where: docker.daemon_json(
        points, refusal is None, old, where)))
    return outputs, warnings
