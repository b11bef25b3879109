"""A real dockerd (Debian's docker.io 20.10) pulls through edgecache with the files
`edgecache client-config` writes: its `daemon.json` as the daemon's config file and, for HTTPS,
its `certs.d/<host:port>/ca.crt` installed where dockerd reads it.

Docker sends `registry-mirrors` requests for Docker Hub only, with nothing naming the registry
(`GET /v2/library/alpha/manifests/1`): edgecache answers them from `default_upstream`, here the
local docker-registry called `docker.io`. Any other registry is pulled by the mirror's address
(`<host:port>/registry-b.test/team/app:1`, the path-prefix style). dockerd's own fallback to
registry-1.docker.io is pinned to a dead loopback port (tests/support/docker.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.clientconfig import client_config, wait_listening
from tests.support.corpus import HUB, REGISTRY_B, Corpus, Seeded
from tests.support.docker import Dockerd, existing_daemon_json
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.htpasswd import write_htpasswd
from tests.support.images import Image
from tests.support.registry import DockerRegistry, free_port

pytestmark = pytest.mark.integration


def assert_pulled(dockerd: Dockerd, ref: str, seeded: Seeded) -> None:
    """dockerd holds the seeded image: its config as the image ID, its manifest's digest."""
    image = seeded.top
    assert isinstance(image, Image)
    found = dockerd.inspect(ref)
    assert found["Id"] == image.config.digest
    digests = found["RepoDigests"]
    assert isinstance(digests, list)
    assert any(d.endswith("@" + image.digest) for d in digests), digests


def assert_served(ec: EdgecacheProcess, mark: int, path_repo: str, seeded: Seeded) -> None:
    """edgecache answered the manifest and every blob, under the name dockerd used."""
    served = {(r.method, r.path.split("?")[0]) for r in ec.requests_since(mark) if r.status == 200}
    tag = f"/v2/{path_repo}/manifests/{seeded.tag}"
    assert ("GET", tag) in served or ("HEAD", tag) in served, served
    for digest in seeded.blobs:
        assert ("GET", f"/v2/{path_repo}/blobs/{digest}") in served, (digest, served)


def test_docker_pulls_through_registry_mirrors_and_by_mirror_address_over_plain_http(
        hub: DockerRegistry, registry_b: DockerRegistry, corpus: Corpus,
        edgecaches: StartEdgecache, dockerds: list[Dockerd], tmp_path: Path) -> None:
    ec = edgecaches("edgecache", {HUB: hub.url, REGISTRY_B: registry_b.url},
                    default_upstream=HUB)
    root = tmp_path / "root"
    key = existing_daemon_json(root, tmp_path / "dockerd")
    client_config(ec.config_path, root, "127.0.0.1")
    daemon_json = root / "etc/docker/daemon.json"
    assert json.loads(daemon_json.read_text()) == {
        **json.loads(key.with_name("daemon.json.edgecache-bak").read_text()),
        "registry-mirrors": [ec.url], "insecure-registries": [ec.address]}
    dockerd = Dockerd(tmp_path / "dockerd", daemon_json)
    dockerds.append(dockerd)
    assert dockerd.info()["RegistryConfig"]["Mirrors"] == [ec.url + "/"]  # type: ignore[index]

    mark = ec.mark()
    dockerd.pull(f"docker.io/{corpus.alpha.repository}:{corpus.alpha.tag}")
    assert_pulled(dockerd, f"{corpus.alpha.repository}:{corpus.alpha.tag}", corpus.alpha)
    assert_served(ec, mark, corpus.alpha.repository, corpus.alpha)

    # a registry that is not Docker Hub: by the mirror's address, path-prefix style
    mark = ec.mark()
    ref = f"{ec.address}/{REGISTRY_B}/{corpus.app.repository}:{corpus.app.tag}"
    dockerd.pull(ref)
    assert_pulled(dockerd, ref, corpus.app)
    assert_served(ec, mark, f"{REGISTRY_B}/{corpus.app.repository}", corpus.app)


def test_docker_pulls_through_an_ipv6_https_mirror_with_the_generated_certs_d(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache,
        dockerds: list[Dockerd], tmp_path: Path) -> None:
    """dockerd skips TLS verification for anything resolving into 127.0.0.0/8 (its built-in
    insecure range), so the HTTPS mirror listens on [::1], where dockerd verifies: the pull
    fails until the generated certs.d/[::1]:<port>/ca.crt is installed."""
    port = free_port()
    ec = edgecaches("edgecache", {HUB: hub.url}, default_upstream=HUB,
                    listen={"https": f"[::1]:{port}"})
    wait_listening("::1", port)
    root = tmp_path / "root"
    existing_daemon_json(root, tmp_path / "dockerd")
    client_config(ec.config_path, root, "::1")
    address = f"[::1]:{port}"
    daemon_json = root / "etc/docker/daemon.json"
    # TLS verified: nothing marks the mirror insecure, and the plain port is not named
    assert json.loads(daemon_json.read_text())["registry-mirrors"] == [f"https://{address}"]
    assert "insecure-registries" not in json.loads(daemon_json.read_text())
    dockerd = Dockerd(tmp_path / "dockerd", daemon_json)
    dockerds.append(dockerd)
    ref = f"docker.io/{corpus.beta.repository}:{corpus.beta.tag}"

    untrusted = dockerd.run("pull", ref)
    assert untrusted.returncode != 0
    assert "x509" in dockerd.log_tail(200), dockerd.log_tail()

    dockerd.trust(root / "etc/docker/certs.d", address)
    mark = ec.mark()
    dockerd.pull(ref)
    assert_pulled(dockerd, f"{corpus.beta.repository}:{corpus.beta.tag}", corpus.beta)
    assert_served(ec, mark, corpus.beta.repository, corpus.beta)


# ---- client auth on another upstream (issue 14, item 1) -----------------------------------

USER, PASSWORD = "site", "pull-secret"


def start_private_b(hub: DockerRegistry, registry_b: DockerRegistry,
                    edgecaches: StartEdgecache, tmp_path: Path,
                    https: str | None = None) -> EdgecacheProcess:
    """docker.io public, registry-b.test `access: authenticated` (htpasswd)."""
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, USER, PASSWORD)
    return edgecaches("edgecache", {}, default_upstream=HUB,
                      listen={"https": https} if https else None, extra={
        "upstreams": {HUB: {"url": hub.url},
                      REGISTRY_B: {"url": registry_b.url, "access": "authenticated"}},
        "auth": {"htpasswd_file": str(htpasswd)}})


@pytest.fixture
def private_b(hub: DockerRegistry, registry_b: DockerRegistry, edgecaches: StartEdgecache,
              tmp_path: Path) -> EdgecacheProcess:
    return start_private_b(hub, registry_b, edgecaches, tmp_path)


def test_docker_pulls_the_private_upstream_by_mirror_address_after_docker_login(
        private_b: EdgecacheProcess, corpus: Corpus, dockerds: list[Dockerd],
        tmp_path: Path) -> None:
    ec = private_b
    root = tmp_path / "root"
    existing_daemon_json(root, tmp_path / "dockerd")
    client_config(ec.config_path, root, "127.0.0.1")
    dockerd = Dockerd(tmp_path / "dockerd", root / "etc/docker/daemon.json")
    dockerds.append(dockerd)
    ref = f"{ec.address}/{REGISTRY_B}/{corpus.app.repository}:{corpus.app.tag}"
    anonymous = dockerd.run("pull", ref)
    # anonymous token, then 401 on the private route: dockerd tells the user to log in
    assert anonymous.returncode != 0 and "may require 'docker login'" in anonymous.stderr

    with pytest.raises(AssertionError, match=r"(?i)unauthorized"):  # the token endpoint's 401
        dockerd.login(ec.address, USER, "wrong-password")
    dockerd.login(ec.address, USER, PASSWORD)
    mark = ec.mark()
    dockerd.pull(ref)
    assert_pulled(dockerd, ref, corpus.app)
    assert_served(ec, mark, f"{REGISTRY_B}/{corpus.app.repository}", corpus.app)


def test_docker_pulls_public_images_anonymously_through_registry_mirrors_with_auth_elsewhere(
        private_b: EdgecacheProcess, corpus: Corpus, dockerds: list[Dockerd],
        tmp_path: Path) -> None:
    ec = private_b
    root = tmp_path / "root"
    existing_daemon_json(root, tmp_path / "dockerd")
    client_config(ec.config_path, root, "127.0.0.1")
    dockerd = Dockerd(tmp_path / "dockerd", root / "etc/docker/daemon.json")
    dockerds.append(dockerd)
    mark = ec.mark()
    dockerd.pull(f"docker.io/{corpus.alpha.repository}:{corpus.alpha.tag}")
    assert_served(ec, mark, corpus.alpha.repository, corpus.alpha)
    # dockerd asked edgecache's token endpoint for an anonymous token (it holds no credentials
    # for a mirror): the Bearer challenge on /v2/ is what keeps it on the mirror
    tokens = [r for r in ec.requests_since(mark) if r.path.startswith("/v2/token")]
    assert tokens and {r.status for r in tokens} == {200}, tokens


def test_docker_pulls_public_images_anonymously_through_an_https_mirror_with_auth_elsewhere(
        hub: DockerRegistry, registry_b: DockerRegistry, corpus: Corpus,
        edgecaches: StartEdgecache, dockerds: list[Dockerd], tmp_path: Path) -> None:
    """As above over HTTPS (on [::1], where dockerd verifies TLS): the token realm is the
    https address the client used, which dockerd trusts through the same certs.d."""
    port = free_port()
    ec = start_private_b(hub, registry_b, edgecaches, tmp_path, https=f"[::1]:{port}")
    wait_listening("::1", port)
    root = tmp_path / "root"
    existing_daemon_json(root, tmp_path / "dockerd")
    client_config(ec.config_path, root, "::1")
    dockerd = Dockerd(tmp_path / "dockerd", root / "etc/docker/daemon.json")
    dockerds.append(dockerd)
    dockerd.trust(root / "etc/docker/certs.d", f"[::1]:{port}")
    mark = ec.mark()
    dockerd.pull(f"docker.io/{corpus.beta.repository}:{corpus.beta.tag}")
    assert_pulled(dockerd, f"{corpus.beta.repository}:{corpus.beta.tag}", corpus.beta)
    assert_served(ec, mark, corpus.beta.repository, corpus.beta)
    assert any(r.path.startswith("/v2/token") and r.status == 200
               for r in ec.requests_since(mark))
