"""`edgecache client-config`: the exact files each client needs to use this mirror.

For every configured upstream and every address edgecache serves on, it renders containerd
`certs.d/<registry>/hosts.toml` (plus `_default`), a podman/CRI-O `registries.conf.d` drop-in
with the CA under `containers/certs.d`, k3s `registries.yaml`, and Docker's `daemon.json`
`registry-mirrors` with `certs.d/<host:port>/ca.crt`. Paths inside the files point where the
files are written: `--out /` installs them for real, `--out DIR` stages them under DIR.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

import yaml

from edgecache.config import Config, parse_hostport
from edgecache.tls import host_names

CONTAINERD = PurePosixPath("/etc/containerd/certs.d")
CONTAINERS = PurePosixPath("/etc/containers")
K3S = PurePosixPath("/etc/rancher/k3s")
DOCKER = PurePosixPath("/etc/docker")


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str  # "https" or "http"
    address: str  # host:port as clients write it ([v6]:port for IPv6)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"


def _hostport(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def endpoints(config: Config, explicit: list[str]) -> list[Endpoint]:
    """Where clients reach edgecache: `--address` values, else the listener's address, else
    (for a wildcard listener) 127.0.0.1 first, then every non-loopback IPv4 of the host."""
    scheme, listen = ("https", config.listen.https) if config.listen.https else (
        "http", config.listen.http)
    assert listen is not None
    host, port = parse_hostport(listen, f"listen.{scheme}")
    if explicit:
        # a bare IPv6 address has colons but no port; one address given twice is one endpoint
        addresses = [a if ":" in a.rsplit("]", 1)[-1] and not _is_ip(a) else _hostport(a, port)
                     for a in explicit]
        return [Endpoint(scheme, a) for a in dict.fromkeys(addresses)]
    if host not in ("0.0.0.0", "::", ""):
        return [Endpoint(scheme, _hostport(host, port))]
    _, ips = host_names()
    others = sorted(str(ip) for ip in ips if ip.version == 4 and not ip.is_loopback)
    return [Endpoint(scheme, _hostport(h, port)) for h in ["127.0.0.1", *others]]


def render(config: Config, points: list[Endpoint], ca_pem: bytes | None,
           root: PurePosixPath) -> dict[PurePosixPath, bytes]:
    """Every file, keyed by where it goes under `root`."""
    def at(path: PurePosixPath) -> PurePosixPath:
        return root / path.relative_to("/")

    files: dict[PurePosixPath, bytes] = {}
    ca_path = at(CONTAINERD / "edgecache-ca.crt")
    if ca_pem is not None:
        files[ca_path] = ca_pem
    for name, upstream in sorted(config.upstreams.items()):
        server = upstream.url
        files[at(CONTAINERD / name / "hosts.toml")] = _hosts_toml(server, points, ca_pem, ca_path)
    files[at(CONTAINERD / "_default" / "hosts.toml")] = _hosts_toml(None, points, ca_pem, ca_path)
    files[at(CONTAINERS / "registries.conf.d" / "edgecache.conf")] = _registries_conf(
        config.upstreams, points)
    for point in points:
        if ca_pem is not None and point.scheme == "https":
            files[at(CONTAINERS / "certs.d" / point.address / "ca.crt")] = ca_pem
            files[at(DOCKER / "certs.d" / point.address / "ca.crt")] = ca_pem
    k3s_ca = at(K3S / "edgecache-ca.crt")
    if ca_pem is not None:
        files[k3s_ca] = ca_pem
    files[at(K3S / "registries.yaml")] = _k3s(config.upstreams, points,
                                              k3s_ca if ca_pem is not None else None)
    files[at(DOCKER / "daemon.json")] = _docker(points)
    return files


def _toml(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is a JSON string for these characters


def _hosts_toml(server: str | None, points: list[Endpoint], ca_pem: bytes | None,
                ca_path: PurePosixPath) -> bytes:
    lines = ["# written by edgecache client-config"]
    if server is not None:
        lines.append(f"server = {_toml(server)}  # tried last, if the mirror cannot answer")
    for point in points:
        lines += ["", f"[host.{_toml(point.url)}]", '  capabilities = ["pull", "resolve"]']
        if point.scheme == "https" and ca_pem is not None:
            lines.append(f"  ca = {_toml(str(ca_path))}")
    return ("\n".join(lines) + "\n").encode()


def _registries_conf(upstreams: Mapping[str, object], points: list[Endpoint]) -> bytes:
    lines = ["# written by edgecache client-config (podman, CRI-O, skopeo, buildah)"]
    for name in sorted(upstreams):
        lines += ["", "[[registry]]", f"prefix = {_toml(name)}", f"location = {_toml(name)}"]
        for point in points:
            lines += ["[[registry.mirror]]", f"location = {_toml(f'{point.address}/{name}')}"]
            if point.scheme == "http":
                lines.append("insecure = true")
    return ("\n".join(lines) + "\n").encode()


def _k3s(upstreams: Mapping[str, object], points: list[Endpoint],
         ca_path: PurePosixPath | None) -> bytes:
    doc: dict[str, object] = {
        "mirrors": {name: {"endpoint": [p.url for p in points]} for name in sorted(upstreams)},
    }
    if ca_path is not None:
        doc["configs"] = {p.address: {"tls": {"ca_file": str(ca_path)}}
                          for p in points if p.scheme == "https"}
    return ("# written by edgecache client-config\n" + yaml.safe_dump(doc, sort_keys=True)).encode()


def _docker(points: list[Endpoint]) -> bytes:
    doc: dict[str, object] = {"registry-mirrors": [p.url for p in points]}
    insecure = [p.address for p in points if p.scheme == "http"]
    if insecure:
        doc["insecure-registries"] = insecure
    return (json.dumps(doc, indent=2) + "\n").encode()
