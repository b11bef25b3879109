"""`client-config --out` into a tree that already holds client files: every key edgecache does
not own survives, the previous file is kept beside as `.edgecache-bak`, `--diff` writes nothing,
and a file that cannot be read back is refused in one line before anything is written."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml

from edgecache.cli import main

DAEMON = {"data-root": "/srv/docker", "log-driver": "journald",
          "log-opts": {"tag": "{{.Name}}"}, "insecure-registries": ["10.0.0.5:5000"],
          "registry-mirrors": ["https://mirror.example"]}
K3S = {"mirrors": {"docker.io": {"endpoint": ["https://mirror.example"],
                                 "rewrite": {"^(.*)$": "hub/$1"}},
                   "ghcr.io": {"endpoint": ["https://ghcr-mirror.example"]}},
       "configs": {"127.0.0.1:30080": {"auth": {"username": "u", "password": "p"}},
                   "mirror.example": {"tls": {"insecure_skip_verify": True}}}}
HOSTS = """# hand-written
server = "https://docker.example"
capabilities = ["pull"]

[host."https://mirror.example"]
  capabilities = ["pull", "resolve"]
  skip_verify = true

[host."http://127.0.0.1:30080"]
  capabilities = ["pull"]
  [host."http://127.0.0.1:30080".header]
    Authorization = "Basic dTpw"
"""


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "edgecache.yaml"
    path.write_text(yaml.safe_dump({
        "listen": {"http": "127.0.0.1:30080", "https": None},
        "storage": {"path": str(tmp_path / "storage")},
        "upstreams": {"docker.io": {"url": "https://registry-1.docker.io"},
                      "quay.io": {"url": "https://quay.io"}},
    }))
    return path


def existing_tree(root: Path) -> dict[Path, bytes]:
    files = {
        root / "etc/docker/daemon.json": json.dumps(DAEMON).encode(),
        root / "etc/rancher/k3s/registries.yaml": yaml.safe_dump(K3S).encode(),
        root / "etc/containerd/certs.d/docker.io/hosts.toml": HOSTS.encode(),
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "etc/docker/daemon.json").chmod(0o600)
    return files


def run(*args: str) -> int:
    return main(["client-config", *args])


def test_merge_keeps_every_key_it_does_not_own(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config, root = write_config(tmp_path), tmp_path / "root"
    before = existing_tree(root)
    assert run("--config", str(config), "--out", str(root), "--address", "127.0.0.1") == 0

    daemon = json.loads((root / "etc/docker/daemon.json").read_text())
    assert daemon == {**DAEMON,
                      "registry-mirrors": ["http://127.0.0.1:30080", "https://mirror.example"],
                      "insecure-registries": ["10.0.0.5:5000", "127.0.0.1:30080"]}
    assert (root / "etc/docker/daemon.json").stat().st_mode & 0o777 == 0o600

    k3s = yaml.safe_load((root / "etc/rancher/k3s/registries.yaml").read_text())
    assert k3s["mirrors"]["docker.io"] == {
        "endpoint": ["http://127.0.0.1:30080", "https://mirror.example"],
        "rewrite": {"^(.*)$": "hub/$1"}}
    assert k3s["mirrors"]["ghcr.io"] == K3S["mirrors"]["ghcr.io"]
    assert k3s["mirrors"]["quay.io"] == {"endpoint": ["http://127.0.0.1:30080"]}
    assert k3s["configs"] == K3S["configs"]  # plain HTTP: no ca_file to own

    hosts = tomllib.loads((root / "etc/containerd/certs.d/docker.io/hosts.toml").read_text())
    assert hosts["server"] == "https://docker.example"  # theirs, not the upstream's URL
    assert hosts["capabilities"] == ["pull"]
    # ours first (containerd tries hosts in file order); the header someone added stays
    assert list(hosts["host"]) == ["http://127.0.0.1:30080", "https://mirror.example"]
    assert hosts["host"]["http://127.0.0.1:30080"] == {
        "capabilities": ["pull", "resolve"], "header": {"Authorization": "Basic dTpw"}}
    assert hosts["host"]["https://mirror.example"] == {
        "capabilities": ["pull", "resolve"], "skip_verify": True}

    for path, data in before.items():
        assert path.with_name(path.name + ".edgecache-bak").read_bytes() == data
    out = capsys.readouterr().out
    assert f"wrote {root}/etc/docker/daemon.json (the previous file is " in out

    # a second run changes nothing, so the backups still hold the originals
    assert run("--config", str(config), "--out", str(root), "--address", "127.0.0.1") == 0
    out = capsys.readouterr().out
    assert "wrote" not in out and f"unchanged {root}/etc/docker/daemon.json" in out
    for path, data in before.items():
        assert path.with_name(path.name + ".edgecache-bak").read_bytes() == data


def test_diff_shows_the_change_by_installed_path_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, root = write_config(tmp_path), tmp_path / "root"
    before = existing_tree(root)
    listing = sorted(p for p in root.rglob("*"))
    assert run("--config", str(config), "--out", str(root), "--address", "127.0.0.1",
               "--diff") == 0
    out = capsys.readouterr().out
    assert sorted(p for p in root.rglob("*")) == listing
    assert all(path.read_bytes() == data for path, data in before.items())
    assert "--- /etc/docker/daemon.json\n+++ /etc/docker/daemon.json\n" in out
    assert '+    "http://127.0.0.1:30080",' in out
    assert "--- /dev/null\n+++ /etc/containers/registries.conf.d/edgecache.conf" in out
    assert str(root) not in out


@pytest.mark.parametrize(("path", "data", "says"), [
    ("etc/docker/daemon.json", b'{"data-root": ', "not valid JSON"),
    ("etc/docker/daemon.json", b"[1, 2]", "not a JSON object"),
    ("etc/rancher/k3s/registries.yaml", b"mirrors: [a", "not valid YAML"),
    ("etc/rancher/k3s/registries.yaml", b"mirrors: [a, b]\n", "`mirrors` is not a mapping"),
    ("etc/containerd/certs.d/quay.io/hosts.toml", b"[host\n", "not valid TOML"),
    ("etc/containerd/certs.d/quay.io/hosts.toml", b'host = "x"\n', "`host` is not a table"),
])
def test_a_file_it_cannot_merge_is_refused_in_one_line_before_any_write(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str, data: bytes,
        says: str) -> None:
    config, root = write_config(tmp_path), tmp_path / "root"
    (root / path).parent.mkdir(parents=True)
    (root / path).write_bytes(data)
    assert run("--config", str(config), "--out", str(root)) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and says in err and str(root / path) in err, err
    assert [p for p in root.rglob("*") if p.is_file()] == [root / path]
    assert (root / path).read_bytes() == data


def test_docker_gets_no_mirror_when_hub_requests_would_reach_another_upstream(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """dockerd's mirror requests name no registry; edgecache answers them from
    default_upstream, which here is quay.io: Hub names must not be served from it."""
    config, root = tmp_path / "edgecache.yaml", tmp_path / "root"
    config.write_text(yaml.safe_dump({
        "listen": {"http": "127.0.0.1:30080", "https": None},
        "upstreams": {"quay.io": {"url": "https://quay.io"}}, "default_upstream": "quay.io"}))
    assert run("--config", str(config), "--out", str(root)) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "default_upstream (quay.io)" in err[0], err
    assert json.loads((root / "etc/docker/daemon.json").read_text()) == {
        "insecure-registries": ["127.0.0.1:30080"]}


def test_podman_is_not_given_an_ipv6_literal_and_is_told_what_to_use(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, root = write_config(tmp_path), tmp_path / "root"
    assert run("--config", str(config), "--out", str(root), "--address", "::1") == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "[::1]:30080" in err[0] and "tls.extra_names" in err[0], err
    assert not (root / "etc/containers").exists()
    hosts = (root / "etc/containerd/certs.d/docker.io/hosts.toml").read_text()
    assert '  "http://[::1]:30080" = { capabilities = ["pull", "resolve"] }\n' in hosts


def test_a_symlinked_file_is_written_through_the_link(tmp_path: Path) -> None:
    config, root = write_config(tmp_path), tmp_path / "root"
    managed = tmp_path / "managed" / "daemon.json"
    managed.parent.mkdir()
    managed.write_text(json.dumps({"data-root": "/srv/docker"}))
    link = root / "etc/docker/daemon.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(managed)
    assert run("--config", str(config), "--out", str(root)) == 0
    assert link.is_symlink()
    assert json.loads(managed.read_text())["data-root"] == "/srv/docker"
    assert json.loads(managed.read_text())["registry-mirrors"] == ["http://127.0.0.1:30080"]
    assert json.loads(link.with_name("daemon.json.edgecache-bak").read_text()) == {
        "data-root": "/srv/docker"}


@pytest.mark.parametrize("address", ["../../x", "../../x:5000", "a/b", ":5000", "[mirror]",
                                     "host:99999", "mirror.example:5000/x", ""])
def test_an_address_that_is_not_host_or_host_port_is_refused_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], address: str) -> None:
    """`--address` names a directory (`certs.d/<address>/`) and a mirror URL: a path in it
    would write outside the tree."""
    config, root = write_config(tmp_path), tmp_path / "root"
    assert run("--config", str(config), "--out", str(root), "--address", address) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgecache: --address"), err
    assert not root.exists() and not (tmp_path / "x").exists()


def test_host_and_host_port_addresses_are_accepted(tmp_path: Path) -> None:
    config, root = write_config(tmp_path), tmp_path / "root"
    assert run("--config", str(config), "--out", str(root), "--address", "mirror.example",
               "--address", "10.0.0.5:5000", "--address", "[fd00::1]:5000",
               "--address", "fd00::2", "--address", "[fd00::3]") == 0
    hosts = tomllib.loads((root / "etc/containerd/certs.d/docker.io/hosts.toml").read_text())
    for url in ("http://mirror.example:30080", "http://10.0.0.5:5000",
                "http://[fd00::1]:5000", "http://[fd00::2]:30080", "http://[fd00::3]:30080"):
        assert url in hosts["host"], hosts
