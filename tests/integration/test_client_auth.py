"""containerd pulls an `access: authenticated` upstream through edgecache's own token service
(issue 14, items 1 and 5), with the files `edgecache client-config` writes.

containerd does not ping `/v2/`: its first manifest request gets 401 with the Bearer challenge,
and with credentials (`ctr --user`) it POSTs an OAuth2 password form to the realm. Without
`ctr --user`, the credentials reach the mirror only as node configuration keyed by the mirror's
address: the `Authorization` header `client-config --username --password-file` writes into our
host entries (a CRI pull secret naming the registry is never sent to the mirror).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.support.clientconfig import client_config, edgecache_cli
from tests.support.containerd import Containerd
from tests.support.corpus import HUB, REGISTRY_B, Corpus, Seeded
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.htpasswd import write_htpasswd
from tests.support.registry import DockerRegistry

pytestmark = pytest.mark.integration

USER, PASSWORD = "site", "pull-secret-7Uj8Ik"
CERTS_D = "etc/containerd/certs.d"


@pytest.fixture
def private_b(hub: DockerRegistry, registry_b: DockerRegistry, edgecaches: StartEdgecache,
              tmp_path: Path) -> EdgecacheProcess:
    """docker.io public, registry-b.test authenticated."""
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, USER, PASSWORD)
    return edgecaches("edgecache", {}, default_upstream=HUB, extra={
        "upstreams": {HUB: {"url": hub.url},
                      REGISTRY_B: {"url": registry_b.url, "access": "authenticated"}},
        "auth": {"htpasswd_file": str(htpasswd)}})


def served(ec: EdgecacheProcess, mark: int, seeded: Seeded) -> set[tuple[str, str]]:
    """(method, path) edgecache answered 200 for the image, whichever routing style named it."""
    got = set()
    for r in ec.requests_since(mark):
        path = r.path.split("?")[0].replace(f"/v2/{REGISTRY_B}/", "/v2/")
        if r.status == 200 and path.startswith(f"/v2/{seeded.repository}/"):
            got.add((r.method, path))
    return got


def no_fallback(hosts: Path) -> None:
    """Drop the `server` line (the registry itself, here a reachable docker-registry), so a
    refused mirror request cannot be hidden by containerd pulling from the registry directly."""
    text = hosts.read_text()
    assert "\nserver = " in text
    hosts.write_text(text.replace("\nserver = ", "\n# server = "))


def assert_private_pulled(containerd: Containerd, ec: EdgecacheProcess, mark: int,
                          ref: str, seeded: Seeded) -> None:
    assert containerd.image_digest(ref) == seeded.top.digest
    got = served(ec, mark, seeded)
    assert {("GET", f"/v2/{seeded.repository}/blobs/{d}") for d in seeded.blobs} <= got, got


def test_ctr_with_user_pulls_the_private_upstream_through_the_token_endpoint(
        private_b: EdgecacheProcess, corpus: Corpus, containerd: Containerd,
        tmp_path: Path) -> None:
    ec = private_b
    root = tmp_path / "root"
    client_config(ec.config_path, root, "127.0.0.1")
    no_fallback(root / CERTS_D / REGISTRY_B / "hosts.toml")
    ref = f"{REGISTRY_B}/{corpus.app.repository}:{corpus.app.tag}"
    mark = ec.mark()
    containerd.pull(ref, root / CERTS_D, "--user", f"{USER}:{PASSWORD}")
    assert_private_pulled(containerd, ec, mark, ref, corpus.app)
    tokens = [r for r in ec.requests_since(mark) if r.path.startswith("/v2/token")]
    assert ("POST", 200) in {(r.method, r.status) for r in tokens}, tokens  # the OAuth2 form


def test_the_generated_hosts_toml_header_pulls_the_private_upstream_without_ctr_user(
        private_b: EdgecacheProcess, corpus: Corpus, containerd: Containerd,
        tmp_path: Path) -> None:
    ec = private_b
    root = tmp_path / "root"
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    result = edgecache_cli("client-config", "--config", str(ec.config_path), "--out", str(root),
                           "--address", "127.0.0.1", "--username", USER,
                           "--password-file", str(password))
    assert PASSWORD not in result.stdout + result.stderr
    hosts = root / CERTS_D / REGISTRY_B / "hosts.toml"
    entry = tomllib.loads(hosts.read_text())["host"][ec.url]
    assert entry["header"]["Authorization"].startswith("Basic ")
    no_fallback(hosts)

    ref = f"{REGISTRY_B}/{corpus.app.repository}:{corpus.app.tag}"
    mark = ec.mark()
    containerd.pull(ref, root / CERTS_D)
    assert_private_pulled(containerd, ec, mark, ref, corpus.app)
    # the header goes with every request: no challenge was needed for the image's requests
    assert all(r.status == 200 for r in ec.requests_since(mark)
               if r.path.startswith(f"/v2/{corpus.app.repository}/"))
