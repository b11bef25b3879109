"""`edgecache client-config --out ROOT`: the files each client needs, staged under tmp.

Every file is parsed with the parser its client uses (TOML for containerd and containers, YAML
for k3s, JSON for Docker) and checked for the endpoints and CA paths it names. containerd then
pulls through the HTTPS listener (IPv4, and IPv6 with the inline host tables containerd 1.6
parses) using ROOT/etc/containerd/certs.d exactly as written, its `ca` lines relative to each
hosts.toml so the staged tree is right where it is and once installed.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.clientconfig import client_config, edgecache_cli, wait_listening
from tests.support.containerd import Containerd
from tests.support.corpus import HUB, Corpus
from tests.support.edgecache import StartEdgecache
from tests.support.registry import DockerRegistry, free_port

pytestmark = pytest.mark.integration

NS = "?ns=docker.io"
UPSTREAMS = {"docker.io": "https://registry-1.docker.io",
             "registry-b.test": "http://127.0.0.1:5999"}


def write_config(tmp_path: Path, https: bool) -> Path:
    listen = ({"http": None, "https": "127.0.0.1:30443"} if https
              else {"http": "127.0.0.1:30080", "https": None})
    path = tmp_path / "edgecache.yaml"
    path.write_text(yaml.safe_dump({
        "listen": listen,
        "storage": {"path": str(tmp_path / "storage")},
        "upstreams": {name: {"url": url} for name, url in UPSTREAMS.items()},
        "default_upstream": "docker.io",
    }))
    return path


def toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def test_https_client_files_name_the_mirror_and_the_ca_inside_root(tmp_path: Path) -> None:
    config = write_config(tmp_path, https=True)
    root = tmp_path / "root"
    written = client_config(config, root, "127.0.0.1", "localhost")
    ca = (tmp_path / "storage" / "tls" / "ca.crt").read_bytes()
    assert edgecache_cli("ca", "--config", str(config)).stdout.encode() == ca
    addresses = ["127.0.0.1:30443", "localhost:30443"]
    urls = [f"https://{a}" for a in addresses]

    # nothing is written outside ROOT, and the listing is what is on disk
    assert written and all(path.is_relative_to(root) for path in written)
    on_disk = sorted(p for p in root.rglob("*") if p.is_file())
    assert sorted(written) == on_disk

    # containerd: one hosts.toml per upstream, server = its URL; _default has no server
    certs_d = root / "etc/containerd/certs.d"
    containerd_ca = certs_d / "edgecache-ca.crt"
    assert containerd_ca.read_bytes() == ca
    for name, url in UPSTREAMS.items():
        hosts = toml(certs_d / name / "hosts.toml")
        assert hosts["server"] == url
        assert list(hosts["host"]) == urls
        for host in hosts["host"].values():
            assert host["capabilities"] == ["pull", "resolve"]
            assert host["ca"] == "../edgecache-ca.crt"  # from the file's dir, in any root
    default = toml(certs_d / "_default" / "hosts.toml")
    assert "server" not in default
    assert list(default["host"]) == urls
    assert all(host["ca"] == "../edgecache-ca.crt" for host in default["host"].values())
    assert sorted(p.name for p in certs_d.iterdir() if p.is_dir()) == sorted(
        [*UPSTREAMS, "_default"])

    # podman / CRI-O / skopeo: a path-prefix mirror per upstream and address, CA per address
    conf = toml(root / "etc/containers/registries.conf.d/edgecache.conf")
    registries = {entry["prefix"]: entry for entry in conf["registry"]}
    assert sorted(registries) == sorted(UPSTREAMS)
    for name, entry in registries.items():
        assert entry["location"] == name
        assert [m["location"] for m in entry["mirror"]] == [f"{a}/{name}" for a in addresses]
        assert not any(m.get("insecure") for m in entry["mirror"])
    for address in addresses:
        assert (root / "etc/containers/certs.d" / address / "ca.crt").read_bytes() == ca
        assert (root / "etc/docker/certs.d" / address / "ca.crt").read_bytes() == ca

    # k3s: every upstream mirrored to both endpoints; each endpoint trusts the CA file
    k3s = yaml.safe_load((root / "etc/rancher/k3s/registries.yaml").read_text())
    assert k3s["mirrors"] == {name: {"endpoint": urls} for name in UPSTREAMS}
    assert (root / "etc/rancher/k3s/edgecache-ca.crt").read_bytes() == ca
    # the path it will have once installed: the staged tree ships as it is
    assert k3s["configs"] == {a: {"tls": {"ca_file": "/etc/rancher/k3s/edgecache-ca.crt"}}
                              for a in addresses}

    # Docker: registry-mirrors (Docker Hub only, by Docker's design), TLS verified
    daemon = json.loads((root / "etc/docker/daemon.json").read_text())
    assert daemon == {"registry-mirrors": urls}


def test_plain_http_client_files_are_marked_insecure_and_carry_no_ca(tmp_path: Path) -> None:
    config = write_config(tmp_path, https=False)
    root = tmp_path / "root"
    written = client_config(config, root, "127.0.0.1")
    assert not any(path.name.endswith(".crt") for path in written)
    assert not (tmp_path / "storage").exists()  # no CA is created for a plain-HTTP mirror
    hosts = toml(root / "etc/containerd/certs.d/docker.io/hosts.toml")
    assert hosts["server"] == UPSTREAMS["docker.io"]
    assert hosts["host"] == {"http://127.0.0.1:30080": {"capabilities": ["pull", "resolve"]}}
    conf = toml(root / "etc/containers/registries.conf.d/edgecache.conf")
    for entry in conf["registry"]:
        assert entry["mirror"] == [{"location": f"127.0.0.1:30080/{entry['prefix']}",
                                    "insecure": True}]
    k3s = yaml.safe_load((root / "etc/rancher/k3s/registries.yaml").read_text())
    assert "configs" not in k3s
    assert json.loads((root / "etc/docker/daemon.json").read_text()) == {
        "registry-mirrors": ["http://127.0.0.1:30080"],
        "insecure-registries": ["127.0.0.1:30080"]}


def test_addresses_are_written_as_host_port_for_every_form(tmp_path: Path) -> None:
    """--address takes host or host:port; an IPv6 address, bare or in brackets, becomes
    [v6]:port (the form every client file needs), the listener's port when none is given.
    Two spellings of one address are one endpoint (a repeated TOML table would not parse)."""
    config = write_config(tmp_path, https=True)
    root = tmp_path / "root"
    given = ["::1", "[::1]", "[::1]:5000", "localhost", "localhost:5000", "127.0.0.1",
             "127.0.0.1:30443"]
    client_config(config, root, *given)
    expected = ["[::1]:30443", "[::1]:5000", "localhost:30443", "localhost:5000",
                "127.0.0.1:30443"]
    for name in ("docker.io", "_default"):
        hosts = toml(root / "etc/containerd/certs.d" / name / "hosts.toml")
        assert list(hosts["host"]) == [f"https://{a}" for a in expected]
    daemon = json.loads((root / "etc/docker/daemon.json").read_text())
    assert daemon["registry-mirrors"] == [f"https://{a}" for a in expected]
    k3s = yaml.safe_load((root / "etc/rancher/k3s/registries.yaml").read_text())
    assert k3s["mirrors"]["docker.io"]["endpoint"] == [f"https://{a}" for a in expected]
    conf = toml(root / "etc/containers/registries.conf.d/edgecache.conf")
    docker = next(e for e in conf["registry"] if e["prefix"] == "docker.io")
    # podman's reference grammar has no IPv6 literal: those are left out (and said so)
    names = [a for a in expected if not a.startswith("[")]
    assert [m["location"] for m in docker["mirror"]] == [f"{a}/docker.io" for a in names]
    for address in expected:
        assert (root / "etc/containers/certs.d" / address / "ca.crt").is_file() == (
            address in names)


# ---- containerd over HTTPS ------------------------------------------------------------------


def test_containerd_pulls_over_https_with_the_written_hosts_dir(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache,
        containerd: Containerd, tmp_path: Path) -> None:
    ec = edgecaches("edgecache", {HUB: hub.url}, tls=True)
    root = tmp_path / "root"
    client_config(ec.config_path, root, "127.0.0.1")
    hosts_dir = root / "etc/containerd/certs.d"
    hosts = toml(hosts_dir / "docker.io" / "hosts.toml")
    assert hosts["host"] == {f"https://127.0.0.1:{ec.https_port}": {
        "capabilities": ["pull", "resolve"], "ca": "../edgecache-ca.crt"}}
    seeded = corpus.alpha
    image = seeded.top
    ref = f"docker.io/{seeded.repository}:{seeded.tag}"
    mark = ec.mark()

    containerd.pull(ref, hosts_dir, "--platform", "linux/amd64")

    assert containerd.image_digest(ref) == image.digest
    for digest, data in seeded.content.items():
        assert containerd.content_get(digest) == data, digest
    requests = [r for r in ec.requests_since(mark)
                if r.path != "/v2/" and "edgecache-test-marker" not in r.path]
    # Every registry request containerd made came to edgecache with ?ns=, over HTTPS: the
    # hosts.toml names only the HTTPS port (the plain listener's port is nowhere in ROOT).
    assert requests and all(r.path.endswith(NS) for r in requests), requests
    served = {(r.method, r.path) for r in requests if r.status == 200}
    tag = f"/v2/{seeded.repository}/manifests/{seeded.tag}{NS}"
    assert ("HEAD", tag) in served or ("GET", tag) in served, served
    for digest in seeded.blobs:
        assert ("GET", f"/v2/{seeded.repository}/blobs/{digest}{NS}") in served
    plain = f"127.0.0.1:{ec.port}\""
    assert not any(plain in path.read_text() for path in hosts_dir.rglob("hosts.toml"))


def test_containerd_pulls_over_an_ipv6_https_listener_with_the_written_hosts_dir(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache,
        containerd: Containerd, tmp_path: Path) -> None:
    """containerd 1.6 cannot parse `[host."https://[::1]:port"]` and then silently skips the
    mirror: the pull would still succeed, from `server` (here the upstream itself), so the test
    counts what edgecache served."""
    port = free_port()
    ec = edgecaches("edgecache", {HUB: hub.url}, listen={"https": f"[::1]:{port}"})
    wait_listening("::1", port)
    root = tmp_path / "root"
    client_config(ec.config_path, root, "::1")
    hosts_dir = root / "etc/containerd/certs.d"
    assert list(toml(hosts_dir / "docker.io" / "hosts.toml")["host"]) == [f"https://[::1]:{port}"]
    seeded = corpus.alpha
    ref = f"docker.io/{seeded.repository}:{seeded.tag}"
    mark = ec.mark()

    containerd.pull(ref, hosts_dir, "--platform", "linux/amd64")

    assert containerd.image_digest(ref) == seeded.top.digest
    served = {(r.method, r.path) for r in ec.requests_since(mark) if r.status == 200}
    for digest in seeded.blobs:
        assert ("GET", f"/v2/{seeded.repository}/blobs/{digest}{NS}") in served, served
