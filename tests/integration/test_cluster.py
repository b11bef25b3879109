"""Cluster mode, end to end: edgecache processes on 127.0.0.1-.4, each with its own store, one
real docker-registry upstream behind a relay (throttled when a transfer must last), skopeo
pulling through the nodes. The upstream's own log counts what crossed the "WAN"."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgecache.cluster.proof import HEADER, PeerProof
from edgecache.cluster.ring import order, tag_key
from tests.support import indexfile
from tests.support.corpus import Seeded
from tests.support.edgecache import EdgecacheProcess
from tests.support.images import make_image, make_layer
from tests.support.registry import DockerRegistry, free_port
from tests.support.skopeo import Skopeo, verify_oci_layout
from tests.support.throttle import ThrottledRelay
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

UPSTREAM = "site.test"


def seeded(registry: DockerRegistry, repository: str, sizes: list[int], seed: int) -> Seeded:
    image = make_image([make_layer(size, seed + i) for i, size in enumerate(sizes)])
    registry.push_image(repository, "v1", image)
    return Seeded(repository, "v1", image)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    registry = DockerRegistry(tmp_path_factory.mktemp("cluster-upstream"))
    try:
        yield registry
    finally:
        registry.close()


@pytest.fixture(scope="module")
def images(upstream: DockerRegistry) -> dict[str, Seeded]:
    return {"app": seeded(upstream, "team/app", [1 << 20, 2 << 20, 300_000], 10),
            "tool": seeded(upstream, "team/tool", [1 << 20, 500_000], 20),
            "big": seeded(upstream, "team/big", [12 << 20], 30),
            "solo": seeded(upstream, "team/solo", [700_000, 400_000], 40),
            "pre": seeded(upstream, "team/pre", [600_000, 900_000, 300_000], 50)}


class Site:
    """Nodes on 127.0.0.N sharing one secret and one peer list; stopped by PID at the end."""

    def __init__(self, workdir: Path, upstream_url: str, size: int) -> None:
        self.workdir = workdir
        self.upstream_url = upstream_url
        self.secret = workdir / "cluster-secret"
        workdir.mkdir(parents=True, exist_ok=True)
        self.secret.write_text(secrets.token_hex(32))
        self.secret.chmod(0o600)
        self.hosts = [f"127.0.0.{i + 1}" for i in range(size)]
        self.ports = [free_port(host) for host in self.hosts]
        self.urls = [f"http://{h}:{p}" for h, p in zip(self.hosts, self.ports, strict=True)]
        self.nodes: dict[int, EdgecacheProcess] = {}
        self._started: list[EdgecacheProcess] = []

    def start(self, i: int, peers: list[int] | None = None,
              cluster: dict[str, str] | None = None,
              extra: dict[str, object] | None = None) -> EdgecacheProcess:
        chosen = peers if peers is not None else list(range(len(self.hosts)))
        node = EdgecacheProcess(
            self.workdir / f"node{i}", {UPSTREAM: self.upstream_url}, default_upstream=UPSTREAM,
            host=self.hosts[i], port=self.ports[i], metrics=True,
            extra={"cluster": {"peers": [self.urls[j] for j in chosen],
                               "secret_file": str(self.secret), "health_interval": "0.3s",
                               **(cluster or {})}, **(extra or {})})
        self.nodes[i] = node
        self._started.append(node)
        return node

    def wait_peers(self, i: int, up: int) -> None:
        """Until node i's metrics say `up` peers answer its probes (bounded)."""
        node = self.nodes[i]
        assert node.metrics_url is not None

        def count() -> int:
            with urllib.request.urlopen(node.metrics_url + "/metrics", timeout=5) as resp:
                text = resp.read().decode()
            return sum(1 for line in text.splitlines()
                       if line.startswith("edgecache_peer_up{") and line.endswith(" 1.0"))
        wait_until(lambda: count() == up, f"node {i} sees {up} peers up", timeout=20)

    def metric(self, i: int, name: str) -> float:
        """The sum of a metric's samples on node i."""
        node = self.nodes[i]
        assert node.metrics_url is not None
        with urllib.request.urlopen(node.metrics_url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith((name + " ", name + "{")))

    def close(self) -> None:
        for node in reversed(self._started):
            node.close()


@pytest.fixture
def site_of(tmp_path: Path) -> Iterator[Callable[[str, int], Site]]:
    made: list[Site] = []

    def make(upstream_url: str, size: int) -> Site:
        made.append(Site(tmp_path / f"site{len(made)}", upstream_url, size))
        return made[-1]

    try:
        yield make
    finally:
        for site in made:
            site.close()


def pull(tmp_path: Path, node: EdgecacheProcess, image: Seeded, name: str) -> None:
    """skopeo through `node` as the mirror of site.test; the bytes are checked."""
    skopeo = Skopeo(tmp_path / f"skopeo-{name}")
    try:
        conf = skopeo.registries_conf({UPSTREAM: node.address})
        out = tmp_path / f"oci-{name}"
        skopeo.copy(f"docker://{UPSTREAM}/{image.repository}:{image.tag}", f"oci:{out}",
                    registries_conf=conf)
        verify_oci_layout(out, image)
    finally:
        skopeo.close()


def pull_all(tmp_path: Path, jobs: list[tuple[EdgecacheProcess, Seeded, str]]) -> None:
    """The pulls at once, one thread each; every failure reported."""
    failures: list[BaseException] = []

    def run(job: tuple[EdgecacheProcess, Seeded, str]) -> None:
        try:
            pull(tmp_path, *job)
        except BaseException as exc:  # collected, raised below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=170)
    assert not any(t.is_alive() for t in threads), "a pull did not finish"
    assert not failures, failures


def blob_gets(upstream: DockerRegistry, mark: int) -> Counter[str]:
    return Counter(entry.path.rsplit("/", 1)[1] for entry in upstream.pulls_since(mark)
                   if entry.method == "GET" and "/blobs/" in entry.path)


def test_three_nodes_fetch_each_blob_once_and_a_restarted_node_rejoins(
        upstream: DockerRegistry, images: dict[str, Seeded], site_of: Callable[[str, int], Site],
        tmp_path: Path) -> None:
    site = site_of(upstream.url, 3)
    for i in range(3):
        site.start(i)
    for i in range(3):
        site.wait_peers(i, 2)
    app, tool = images["app"], images["tool"]
    layer = app.top.blobs[1].digest
    view = json.loads(subprocess.run(  # `edgecache peers`: the ring as node 0 sees it
        [sys.executable, "-m", "edgecache", "peers", "--config", str(site.nodes[0].config_path),
         "--key", layer, "--json"], capture_output=True, text=True, check=True,
        timeout=60).stdout)
    assert [(p["url"], p["state"]) for p in view["peers"]] == [
        (site.urls[0], "self"), (site.urls[1], "up"), (site.urls[2], "up")]
    assert view["order"] == order(site.urls, layer)
    mark = upstream.mark()
    pull_all(tmp_path, [(site.nodes[i], app, f"app-{i}") for i in range(3)])
    assert blob_gets(upstream, mark) == Counter({b.digest: 1 for b in app.top.blobs})

    site.nodes[2].close()  # a restart on the same store and address
    site.start(2)
    for i in range(3):
        site.wait_peers(i, 2)
    mark = upstream.mark()
    pull_all(tmp_path, [(site.nodes[i], tool, f"tool-{i}") for i in range(3)])
    pull(tmp_path, site.nodes[2], app, "app-again")
    assert blob_gets(upstream, mark) == Counter({b.digest: 1 for b in tool.top.blobs})


def test_owner_killed_mid_transfer_costs_only_time(
        upstream: DockerRegistry, images: dict[str, Seeded], site_of: Callable[[str, int], Site],
        tmp_path: Path) -> None:
    big = images["big"]
    layer = big.top.blobs[-1]
    relay = ThrottledRelay(upstream.port, rate=3 << 20)  # 12 MiB: about 4 s at this rate
    try:
        site = site_of(relay.url, 3)
        for i in range(3):
            site.start(i)
        for i in range(3):
            site.wait_peers(i, 2)
        owner = site.urls.index(order(site.urls, layer.digest)[0])
        others = [i for i in range(3) if i != owner]
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                pull(tmp_path, site.nodes[i], big, f"big-{i}")
            except BaseException as exc:  # asserted below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in others]
        for thread in threads:
            thread.start()
        wait_until(lambda: relay.relayed > 3 << 20, "the owner is mid-transfer", timeout=60)
        site.nodes[owner].proc.kill()  # kill -9: no goodbye to anyone
        for thread in threads:
            thread.join(timeout=170)
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors
        for i in others:  # and each survivor keeps its own verified copy
            assert site.nodes[i].stored_blobs().get(layer.digest) == len(layer.data)
        # they streamed from the owner before it died, and went on from another source
        assert sum(site.metric(i, "edgecache_peer_fetched_bytes_total") for i in others) > 0
        assert sum(site.metric(i, "edgecache_peer_failures_total") for i in others) > 0
    finally:
        relay.close()


def test_upstream_down_the_site_serves_what_any_node_holds(
        upstream: DockerRegistry, images: dict[str, Seeded], site_of: Callable[[str, int], Site],
        tmp_path: Path) -> None:
    solo = images["solo"]
    relay = ThrottledRelay(upstream.port, rate=None)
    site = site_of(relay.url, 4)
    try:
        a = site.start(0, peers=[0, 1])  # node B is not running yet: A pulls on its own
        pull(tmp_path, a, solo, "solo-a")
    finally:
        relay.close()  # the uplink is gone
    b = site.start(1, peers=[0, 1])
    site.wait_peers(1, 1)
    pull(tmp_path, b, solo, "solo-b")
    d = site.start(3, peers=[0, 1, 3])  # a node added while the uplink is down, empty
    site.wait_peers(3, 2)
    layer = solo.top.blobs[1]
    head = urllib.request.Request(f"{d.url}/v2/{solo.repository}/blobs/{layer.digest}",
                                  method="HEAD")
    with urllib.request.urlopen(head, timeout=30) as resp:  # a size the site knows
        assert int(resp.headers["Content-Length"]) == len(layer.data)
    pull(tmp_path, d, solo, "solo-d")
    assert solo.top.blobs[0].digest in d.stored_blobs()


def test_a_peer_claim_without_the_site_secret_is_refused(
        upstream: DockerRegistry, images: dict[str, Seeded], site_of: Callable[[str, int], Site]
        ) -> None:
    site = site_of(upstream.url, 1)
    node = site.start(0, cluster={"self": "http://127.0.0.1:1"})  # wrong: found by a probe
    wait_until(lambda: f"this node answers as {site.urls[0]}" in node.log(),
               "the node found itself in the peer list", timeout=20)
    app = images["app"]
    path = f"/v2/{app.repository}/blobs/{app.top.blobs[0].digest}?ns={UPSTREAM}"
    wrong = PeerProof(b"not-the-site-secret-at-all").sign("GET", path, "owner")
    for value in ("yes", wrong, "v1 owner 1 00"):
        request = urllib.request.Request(node.url + path, headers={HEADER: value})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 401
        body = json.loads(caught.value.read())
        caught.value.close()
        assert body["errors"][0]["code"] == "UNAUTHORIZED"
    right = PeerProof(site.secret.read_bytes().strip()).sign("GET", path, "local")
    request = urllib.request.Request(node.url + path, headers={HEADER: right})
    with pytest.raises(urllib.error.HTTPError) as caught:  # local: never fetched for a peer
        urllib.request.urlopen(request, timeout=10)
    caught.value.close()
    assert caught.value.code == 404


def test_private_content_stays_private_across_peers(
        upstream: DockerRegistry, images: dict[str, Seeded], site_of: Callable[[str, int], Site],
        tmp_path: Path) -> None:
    """A blob node A holds from an authenticated upstream is not handed to a public route on
    node B through the site: whichever node owns it, the node that holds it applies the claim
    check (the public upstream does not have it: 404), as it does for its own clients."""
    public = DockerRegistry(tmp_path / "public")  # has nothing
    try:
        tokens = tmp_path / "tokens"
        tokens.write_text("ci:s3cret-token-for-the-test\n")
        tokens.chmod(0o600)
        site = site_of(upstream.url, 2)
        extra: dict[str, object] = {
            "upstreams": {"private.test": {"url": upstream.url, "access": "authenticated"},
                          "public.test": {"url": public.url}},
            "default_upstream": "", "auth": {"tokens_file": str(tokens)}}
        a, b = site.start(0, extra=extra), site.start(1, extra=extra)
        site.wait_peers(0, 1)
        site.wait_peers(1, 1)
        app = images["app"]
        layers = [blob.digest for blob in app.top.blobs]
        bearer = {"Authorization": "Bearer s3cret-token-for-the-test"}
        for digest in layers:  # cached on A (and on whichever node owns each) from private
            url = f"{a.url}/v2/{app.repository}/blobs/{digest}?ns=private.test"
            with urllib.request.urlopen(urllib.request.Request(url, headers=bearer),
                                        timeout=30) as resp:
                resp.read()
        for node in (a, b):
            for digest in layers:
                url = f"{node.url}/v2/{app.repository}/blobs/{digest}?ns=public.test"
                with pytest.raises(urllib.error.HTTPError) as caught:
                    urllib.request.urlopen(urllib.request.Request(url, headers=bearer),
                                           timeout=30)
                caught.value.close()
                assert caught.value.code == 404, (node.url, digest)
        asked = set()  # its 404s are logged as "response completed with error"
        for line in public.log_path.read_text().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("http.response.status") == 404:
                asked.add(entry["http.request.uri"].rsplit("/", 1)[1])
        assert asked == set(layers)  # the public upstream was asked, and said no
    finally:
        public.close()


def test_layer_prefetch_asks_the_site_too(
        upstream: DockerRegistry, images: dict[str, Seeded], site_of: Callable[[str, int], Site],
        tmp_path: Path) -> None:
    """`prefetch.layers` starts a manifest's fills ahead of the client: on every node, so they
    must go to the layers' owners like the client's own requests, not to the WAN."""
    site = site_of(upstream.url, 3)
    for i in range(3):
        site.start(i, extra={"prefetch": {"layers": True}})
    for i in range(3):
        site.wait_peers(i, 2)
    pre = images["pre"]
    mark = upstream.mark()
    pull_all(tmp_path, [(site.nodes[i], pre, f"pre-{i}") for i in range(3)])
    assert blob_gets(upstream, mark) == Counter({b.digest: 1 for b in pre.top.blobs})


def tag_checked_at(node: EdgecacheProcess, repository: str, tag: str) -> float:
    return indexfile.tag_checked_at(node.storage, UPSTREAM, repository, tag)


def test_a_tag_from_its_owner_keeps_the_owners_time(
        upstream: DockerRegistry, images: dict[str, Seeded], site_of: Callable[[str, int], Site],
        tmp_path: Path) -> None:
    """A node that asks the tag's owner keeps when the owner confirmed it, not "now": a tag is
    at most one tag_ttl old on every node, not the owner's TTL and then this node's."""
    site = site_of(upstream.url, 2)
    for i in range(2):
        site.start(i, extra={"cache": {"tag_ttl": "1h"}})
    for i in range(2):
        site.wait_peers(i, 1)
    solo = images["solo"]
    owner = site.urls.index(order(site.urls, tag_key(UPSTREAM, solo.repository, solo.tag))[0])
    other = 1 - owner
    pull(tmp_path, site.nodes[owner], solo, "at-owner")  # the owner asks the upstream
    confirmed = tag_checked_at(site.nodes[owner], solo.repository, solo.tag)
    pull(tmp_path, site.nodes[other], solo, "at-other")  # answered by the owner from cache
    assert tag_checked_at(site.nodes[other], solo.repository, solo.tag) == confirmed


def test_peers_on_listen_peer_and_clients_on_the_main_listener(
        upstream: DockerRegistry, images: dict[str, Seeded], site_of: Callable[[str, int], Site],
        tmp_path: Path) -> None:
    site = site_of(upstream.url, 2)
    peer_ports = [free_port(host) for host in site.hosts]
    peer_urls = [f"http://{h}:{p}" for h, p in zip(site.hosts, peer_ports, strict=True)]
    site.urls = peer_urls  # the ring is over the peer listeners' URLs
    for i in range(2):
        node = EdgecacheProcess(
            site.workdir / f"node{i}", {UPSTREAM: site.upstream_url}, default_upstream=UPSTREAM,
            host=site.hosts[i], port=site.ports[i], metrics=True,
            listen={"peer": f"{site.hosts[i]}:{peer_ports[i]}"},
            extra={"cluster": {"peers": peer_urls, "secret_file": str(site.secret),
                               "health_interval": "0.3s"}})
        site.nodes[i] = node
        site._started.append(node)
    for i in range(2):
        site.wait_peers(i, 1)  # the probes went to the peer listeners
    mark = upstream.mark()
    pull_all(tmp_path, [(site.nodes[i], images["tool"], f"tool-{i}") for i in range(2)])
    assert blob_gets(upstream, mark) == Counter({b.digest: 1 for b in images["tool"].top.blobs})
    with pytest.raises(urllib.error.HTTPError) as refused:  # a client on the peer listener
        urllib.request.urlopen(peer_urls[0] + "/v2/", timeout=5)
    refused.value.close()  # its response's socket
    assert refused.value.code == 401
