"""Pushed content in cluster mode: an image pushed into one node's local registry pulls through
every node (containerd through another node, every routing style), a node that pulled it
keeps serving it once the node it was pushed to is gone, and a tag pushed again into another
node is what every node answers next.

Three edgecache processes on 127.0.0.1-.3 (`test_cluster.Site`), each with the local registry
`registry.local` (anonymous pushes: the push rules are test_push.py's), the seeded
docker-registry `registry-b.test` as the source of the image skopeo copies in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edgecache.cluster.proof import HEADER, PeerProof
from tests.integration.test_cluster import Site, site_of  # noqa: F401 - the fixture
from tests.integration.test_push import MANIFEST_ACCEPT, assert_complete, skopeo_push
from tests.support.containerd import Containerd, write_hosts
from tests.support.corpus import Corpus, Seeded
from tests.support.edgecache import EdgecacheProcess
from tests.support.httpclient import fetch
from tests.support.registry import DockerRegistry
from tests.support.skopeo import Skopeo

pytestmark = pytest.mark.integration

LOCAL = "registry.local"


def push(skopeo: Skopeo, source: DockerRegistry, image: Seeded, node: EdgecacheProcess,
         name: str) -> None:
    """`skopeo copy --all` of a seeded image into the node's local registry as `name`."""
    origin = f"docker://{source.url.removeprefix('http://')}/{image.repository}:{image.tag}"
    result = skopeo_push(skopeo, origin, f"docker://{node.address}/{LOCAL}/{name}", creds=False)
    assert result.returncode == 0, result.stderr[-3000:]


def test_pushed_into_one_node_pulls_through_the_others_and_outlives_it(
        registry_b: DockerRegistry, corpus: Corpus, site_of: Callable[[str, int], Site],  # noqa: F811
        skopeo: Skopeo, containerd: Containerd, tmp_path: Path) -> None:
    site = site_of(registry_b.url, 3)
    for i in range(3):
        site.start(i, extra={"local": {"registry": LOCAL, "push": "anonymous"}})
    for i in range(3):
        site.wait_peers(i, 2)
    a, b, c = site.nodes[0], site.nodes[1], site.nodes[2]
    image = corpus.app_multi
    push(skopeo, registry_b, image, a, f"team/multi:{image.tag}")
    assert not b.stored_blobs() and not c.stored_blobs()

    # a peer's `local` question is answered from that node's store alone, never forwarded:
    # asked before any other node copied anything (which node owns a digest, and so copies it
    # when another node asks, depends on the ring: only A's holdings are certain here)
    proof = PeerProof(site.secret.read_text().strip().encode())
    for digest in sorted(a.stored_blobs()):
        path = f"/v2/team/multi/blobs/{digest}?ns={LOCAL}"
        held = fetch(a.url + path, headers={HEADER: proof.sign("GET", path, "local")})
        if held.status == 200:  # a blob, not a manifest: the holder answers the question
            break
    assert held.status == 200, held.body[:300]
    asked = fetch(b.url + path, headers={HEADER: proof.sign("GET", path, "local")})
    assert asked.status == 404, asked.body[:300]
    assert not b.stored_blobs()

    # containerd through node B (the `ns` routing style: containerd names the registry)
    hosts = tmp_path / "hosts"
    write_hosts(hosts, LOCAL, b.url)
    ref = f"{LOCAL}/team/multi:{image.tag}"
    containerd.pull(ref, hosts)
    assert containerd.image_digest(ref) == image.top.digest
    pulled = containerd.content_digests()
    assert pulled <= set(b.stored_blobs())  # B kept its own copy of what it served
    # every manifest and blob of every platform through node C, by path prefix
    assert assert_complete(c, "team/multi", image.tag) == image.top.digest
    # what no node holds is still a 404, not a wait
    missing = fetch(f"{b.url}/v2/{LOCAL}/team/multi/manifests/absent",
                    headers={"Accept": MANIFEST_ACCEPT})
    assert missing.status == 404, missing.body[:300]
    assert json.loads(missing.body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"

    a.close()  # by PID: the node the image was pushed to is gone
    containerd.remove_images(ref)
    containerd.pull(ref, hosts)
    assert containerd.image_digest(ref) == image.top.digest
    for digest in pulled:  # B serves the bytes from its own copy
        got = fetch(f"{b.url}/v2/{LOCAL}/team/multi/blobs/{digest}")
        if got.status != 200:  # a manifest
            got = fetch(f"{b.url}/v2/{LOCAL}/team/multi/manifests/{digest}",
                        headers={"Accept": MANIFEST_ACCEPT})
        assert got.status == 200, (digest, got.status)
        assert containerd.content_get(digest) == got.body

    # the tag pushed again, into node C: the newest push is what B answers next
    push(skopeo, registry_b, corpus.app, c, f"team/multi:{image.tag}")
    assert assert_complete(b, "team/multi", image.tag) == corpus.app.top.digest
