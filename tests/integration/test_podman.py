"""Rootful podman 4.3 pulls through edgecache with the registries.conf.d drop-in that
`edgecache client-config` writes, as the registries configuration (tests/support/podman.py).

podman names the registry by a path prefix (`GET /v2/docker.io/library/alpha/...`). Its parser
has no IPv6 literal for a mirror location, so over an IPv6 listener podman is given a host
name: here `ec-v6.test`, mapped to ::1 in an /etc/hosts private to podman's mount namespace,
and in edgecache's `tls.extra_names` so the certificate names it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clientconfig import client_config, edgecache_cli, wait_listening
from tests.support.corpus import HUB, REGISTRY_B, Corpus, Seeded
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.htpasswd import write_htpasswd
from tests.support.images import Image
from tests.support.podman import Podman
from tests.support.registry import DockerRegistry, free_port

pytestmark = pytest.mark.integration

V6_NAME = "ec-v6.test"
DROP_IN = "etc/containers/registries.conf.d/edgecache.conf"


@pytest.fixture
def podmen(tmp_path: Path) -> Iterator[list[Podman]]:
    started: list[Podman] = []
    try:
        yield started
    finally:
        for client in started:
            client.close()


def assert_pulled(podman: Podman, conf: Path, ref: str, seeded: Seeded) -> None:
    image = seeded.top
    assert isinstance(image, Image)
    found = podman.inspect(conf, ref)
    assert found["Digest"] == image.digest
    assert f"sha256:{found['Id']}" == image.config.digest


def assert_served(ec: EdgecacheProcess, mark: int, path_repo: str, seeded: Seeded) -> None:
    served = {(r.method, r.path.split("?")[0]) for r in ec.requests_since(mark) if r.status == 200}
    tag = f"/v2/{path_repo}/manifests/{seeded.tag}"
    assert ("GET", tag) in served or ("HEAD", tag) in served, served
    for digest in seeded.blobs:
        assert ("GET", f"/v2/{path_repo}/blobs/{digest}") in served, (digest, served)


def test_podman_pulls_both_upstreams_through_the_generated_drop_in(
        hub: DockerRegistry, registry_b: DockerRegistry, corpus: Corpus,
        edgecaches: StartEdgecache, podmen: list[Podman], tmp_path: Path) -> None:
    ec = edgecaches("edgecache", {HUB: hub.url, REGISTRY_B: registry_b.url})
    root = tmp_path / "root"
    client_config(ec.config_path, root, "127.0.0.1")
    conf = root / DROP_IN
    podman = Podman(tmp_path / "podman")
    podmen.append(podman)
    for registry, seeded in ((HUB, corpus.alpha), (REGISTRY_B, corpus.app)):
        ref = f"{registry}/{seeded.repository}:{seeded.tag}"
        mark = ec.mark()
        podman.pull(conf, ref)
        assert_pulled(podman, conf, ref, seeded)
        assert_served(ec, mark, f"{registry}/{seeded.repository}", seeded)


def test_podman_pulls_over_an_ipv6_https_listener_by_host_name(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache,
        podmen: list[Podman], tmp_path: Path) -> None:
    port = free_port()
    ec = edgecaches("edgecache", {HUB: hub.url}, listen={"https": f"[::1]:{port}"},
                    extra={"tls": {"extra_names": [V6_NAME]}})
    wait_listening("::1", port)
    root = tmp_path / "root"
    args = ["client-config", "--config", str(ec.config_path), "--out", str(root),
            "--address", "::1", "--address", V6_NAME]
    result = edgecache_cli(*args)
    # the IPv6 literal is refused for podman in one line that says what to use instead
    refusal = [line for line in result.stderr.splitlines() if "IPv6" in line]
    assert len(refusal) == 1 and "tls.extra_names" in refusal[0], result.stderr
    conf = root / DROP_IN
    entries = tomllib.loads(conf.read_text())["registry"]
    assert [m["location"] for m in entries[0]["mirror"]] == [f"{V6_NAME}:{port}/docker.io"]

    hosts = tmp_path / "hosts"
    hosts.write_text(f"::1 {V6_NAME}\n127.0.0.1 localhost\n")
    podman = Podman(tmp_path / "podman", no_proxy=V6_NAME, hosts=hosts)
    podmen.append(podman)
    ref = f"docker.io/{corpus.beta.repository}:{corpus.beta.tag}"
    cert_dir = root / "etc/containers/certs.d" / f"{V6_NAME}:{port}"
    mark = ec.mark()
    podman.pull(conf, ref, "--cert-dir", str(cert_dir))
    assert_pulled(podman, conf, ref, corpus.beta)
    assert_served(ec, mark, f"docker.io/{corpus.beta.repository}", corpus.beta)

    # why the literal is left out: podman 4.3 rejects it outright
    literal = tmp_path / "literal.conf"
    literal.write_text(conf.read_text().replace(f"{V6_NAME}:{port}", f"[::1]:{port}"))
    rejected = podman.pull(literal, ref, check=False)
    assert rejected.returncode != 0 and "invalid reference format" in rejected.stderr


def test_podman_pulls_public_images_anonymously_and_the_private_upstream_after_login(
        hub: DockerRegistry, registry_b: DockerRegistry, corpus: Corpus,
        edgecaches: StartEdgecache, podmen: list[Podman], tmp_path: Path) -> None:
    """Client auth on registry-b.test only: /v2/ challenges everyone with Bearer; podman
    fetches an anonymous token from edgecache's token endpoint, which the public upstream's
    routes do not need and the private one refuses; after `podman login` it fetches a token
    with its credentials."""
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, "site", "pull-secret")
    ec = edgecaches("edgecache", {}, extra={
        "upstreams": {HUB: {"url": hub.url},
                      REGISTRY_B: {"url": registry_b.url, "access": "authenticated"}},
        "auth": {"htpasswd_file": str(htpasswd)}})
    root = tmp_path / "root"
    client_config(ec.config_path, root, "127.0.0.1")
    conf = root / DROP_IN
    podman = Podman(tmp_path / "podman")
    podmen.append(podman)

    public = f"{HUB}/{corpus.alpha.repository}:{corpus.alpha.tag}"
    mark = ec.mark()
    podman.pull(conf, public)
    assert_pulled(podman, conf, public, corpus.alpha)
    assert_served(ec, mark, f"{HUB}/{corpus.alpha.repository}", corpus.alpha)

    private = f"{REGISTRY_B}/{corpus.app.repository}:{corpus.app.tag}"
    refused = podman.pull(conf, private, check=False)
    # told what to send, and where: not "invalid credentials", since it sent none (item 3)
    assert refused.returncode != 0
    assert f"authentication required: log in to {ec.address}" in refused.stderr, refused.stderr
    assert "invalid credentials" not in refused.stderr
    podman.login(conf, ec.address, "site", "pull-secret", "--tls-verify=false")
    mark = ec.mark()
    podman.pull(conf, private)
    assert_pulled(podman, conf, private, corpus.app)
    assert_served(ec, mark, f"{REGISTRY_B}/{corpus.app.repository}", corpus.app)
