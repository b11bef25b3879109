"""Pushed content in cluster mode: an image pushed into one node's local registry pulls through
every node (containerd through another node, every routing style), a node that pulled it
keeps serving it once the node it was pushed to is gone, and a tag pushed again into another
node is what every node answers next. Deletes are the site's: a tag deleted on one node is gone
through every node (last writer wins: a push after it brings it back), a manifest deleted by
digest is not copied back, and a tags list through any node is the live nodes' union.

Three edgecache processes on 127.0.0.1-.3 (`test_cluster.Site`), each with the local registry
`registry.local` (anonymous pushes: the push rules are test_push.py's), the seeded
docker-registry `registry-b.test` as the source of the image skopeo copies in.
"""

from __future__ import annotations

import json
import subprocess
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
NODE: dict[str, object] = {"local": {"registry": LOCAL, "push": "anonymous"}}


def push(skopeo: Skopeo, source: DockerRegistry, image: Seeded, node: EdgecacheProcess,
         name: str) -> None:
    """`skopeo copy --all` of a seeded image into the node's local registry as `name`."""
    origin = f"docker://{source.url.removeprefix('http://')}/{image.repository}:{image.tag}"
    result = skopeo_push(skopeo, origin, f"docker://{node.address}/{LOCAL}/{name}", creds=False)
    assert result.returncode == 0, result.stderr[-3000:]


def three_nodes(site_of: Callable[[str, int], Site], source: DockerRegistry) -> Site:  # noqa: F811
    """Three nodes with the local registry (anonymous pushes), each seeing the other two."""
    site = site_of(source.url, 3)
    for i in range(3):
        site.start(i, extra=NODE)
    for i in range(3):
        site.wait_peers(i, 2)
    return site


def test_pushed_into_one_node_pulls_through_the_others_and_outlives_it(
        registry_b: DockerRegistry, corpus: Corpus, site_of: Callable[[str, int], Site],  # noqa: F811
        skopeo: Skopeo, containerd: Containerd, tmp_path: Path) -> None:
    site = three_nodes(site_of, registry_b)
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


def _tag(node: EdgecacheProcess, repository: str, tag: str) -> int:
    return fetch(f"{node.url}/v2/{LOCAL}/{repository}/manifests/{tag}",
                 headers={"Accept": MANIFEST_ACCEPT}).status


def _tags(node: EdgecacheProcess, repository: str, query: str = "") -> tuple[int, list[str]]:
    got = fetch(f"{node.url}/v2/{LOCAL}/{repository}/tags/list{query}")
    return got.status, json.loads(got.body).get("tags", []) if got.status == 200 else []


def skopeo_delete(skopeo: Skopeo, reference: str) -> subprocess.CompletedProcess[str]:
    """`skopeo delete` (it resolves a tag to its digest and deletes the manifest by digest)."""
    return subprocess.run(
        [skopeo.binary, "--policy", str(skopeo.policy), "delete", "--retry-times", "0",
         "--tls-verify=false", reference], env=skopeo.env, capture_output=True, text=True,
        timeout=120, check=False)


def test_deletes_and_tag_lists_are_the_sites(
        registry_b: DockerRegistry, corpus: Corpus, site_of: Callable[[str, int], Site],  # noqa: F811
        skopeo: Skopeo, tmp_path: Path) -> None:
    site = three_nodes(site_of, registry_b)
    a, b, c = site.nodes[0], site.nodes[1], site.nodes[2]
    image, repo = corpus.app, "team/del"
    push(skopeo, registry_b, image, a, f"{repo}:v1")
    push(skopeo, registry_b, image, a, f"{repo}:only-a")
    skopeo.copy(f"docker://{b.address}/{LOCAL}/{repo}:v1", f"oci:{tmp_path / 'via-b'}:v1",
                tls_verify=False)  # B copies it

    # the tags list through C is the site's (`only-a` is A's alone: copies by digest, which
    # an owner makes, carry no tag), sorted, paged, not stale
    listed = fetch(f"{c.url}/v2/{LOCAL}/{repo}/tags/list")
    assert listed.status == 200, listed.body[:300]
    assert json.loads(listed.body)["tags"] == ["only-a", "v1"]
    assert listed.headers["X-Edgecache-Cache"] == "local"
    first = fetch(f"{c.url}/v2/{LOCAL}/{repo}/tags/list?n=1")
    assert json.loads(first.body)["tags"] == ["only-a"]
    assert "last=only-a" in first.headers["Link"]
    assert _tags(c, repo, "?n=1&last=only-a") == (200, ["v1"])

    # the tag deleted on A (the OCI tag delete): 404 through every node, pull after pull
    deleted = fetch(f"{a.url}/v2/{LOCAL}/{repo}/manifests/v1", method="DELETE")
    assert deleted.status == 202, deleted.body[:300]
    for _ in range(2):
        for node in (a, b, c):
            assert _tag(node, repo, "v1") == 404, node.url
    gone = skopeo.copy(f"docker://{b.address}/{LOCAL}/{repo}:v1", f"oci:{tmp_path / 'gone'}:v1",
                       tls_verify=False, check=False)
    assert gone.returncode != 0
    for node in (a, b, c):
        assert _tags(node, repo) == (200, ["only-a"]), node.url

    # pushed again on C: back everywhere, the tag in every node's list
    push(skopeo, registry_b, image, c, f"{repo}:v1")
    for node in (a, b, c):
        assert assert_complete(node, repo, "v1") == image.top.digest
        assert _tags(node, repo) == (200, ["only-a", "v1"]), node.url

    # the manifest deleted by digest on B (skopeo delete): 404 everywhere, by digest and by
    # every tag that named it, and never copied back
    removed = skopeo_delete(skopeo, f"docker://{b.address}/{LOCAL}/{repo}@{image.top.digest}")
    assert removed.returncode == 0, removed.stderr[-2000:]
    for _ in range(2):
        for node in (a, b, c):
            assert _tag(node, repo, image.top.digest) == 404, node.url
            assert _tag(node, repo, "v1") == 404, node.url
            assert _tag(node, repo, "only-a") == 404, node.url
    assert _tags(b, repo) == (404, [])

    # pushed again (by tag) on A: the newest event is a push, through every node
    push(skopeo, registry_b, image, a, f"{repo}:v1")
    for node in (b, c, a):
        assert assert_complete(node, repo, "v1") == image.top.digest
        assert _tags(node, repo) == (200, ["v1"]), node.url


def test_a_node_down_during_deletes(
        registry_b: DockerRegistry, corpus: Corpus, site_of: Callable[[str, int], Site],  # noqa: F811
        skopeo: Skopeo) -> None:
    """A node that is down misses the carried DELETE and keeps its copy: once back, the tag is
    still deleted through every node (the others' tombstone is newer than its push) and the
    manifest is not copied back from it to a node that took the delete. While it is down, a
    tags list says it is stale."""
    site = three_nodes(site_of, registry_b)
    a, b, c = site.nodes[0], site.nodes[1], site.nodes[2]
    image, repo = corpus.app, "team/down"
    push(skopeo, registry_b, image, a, f"{repo}:v1")
    push(skopeo, registry_b, corpus.app_multi, a, f"{repo}:keep")
    assert assert_complete(c, repo, "v1") == image.top.digest  # C copies v1
    c.close()  # by PID
    site.wait_peers(0, 1)
    site.wait_peers(1, 1)

    listed = fetch(f"{b.url}/v2/{LOCAL}/{repo}/tags/list")
    assert json.loads(listed.body)["tags"] == ["keep", "v1"]
    assert listed.headers["X-Edgecache-Cache"] == "stale"
    assert "Warning" in listed.headers
    assert fetch(f"{a.url}/v2/{LOCAL}/{repo}/manifests/v1", method="DELETE").status == 202
    removed = skopeo_delete(skopeo, f"docker://{a.address}/{LOCAL}/{repo}@{image.top.digest}")
    assert removed.returncode == 0, removed.stderr[-2000:]

    c = site.start(2, extra=NODE)  # the same store and address
    for i in range(3):
        site.wait_peers(i, 2)
    for node in (a, b, c):  # C's copy of the tag is older than A's delete
        assert _tag(node, repo, "v1") == 404, node.url
        assert _tags(node, repo) == (200, ["keep"]), node.url
    for node in (a, b):  # the tombstone: never copied back from C, which missed the delete
        assert _tag(node, repo, image.top.digest) == 404, node.url
    # what C missed by digest it still serves itself (deleted there by a DELETE through it)
    assert _tag(c, repo, image.top.digest) == 200
    again = skopeo_delete(skopeo, f"docker://{c.address}/{LOCAL}/{repo}@{image.top.digest}")
    assert again.returncode == 0, again.stderr[-2000:]
    for node in (a, b, c):
        assert _tag(node, repo, image.top.digest) == 404, node.url


def test_a_push_of_what_another_node_holds(
        registry_b: DockerRegistry, corpus: Corpus, site_of: Callable[[str, int], Site],  # noqa: F811
        skopeo: Skopeo) -> None:
    """skopeo HEADs each blob before uploading it: a blob held only on another node is copied
    here before that answer, so the push that skips it has it when its manifest is checked."""
    site = three_nodes(site_of, registry_b)
    a, b = site.nodes[0], site.nodes[1]
    push(skopeo, registry_b, corpus.app, a, "team/again:v1")
    assert not b.stored_blobs()
    push(skopeo, registry_b, corpus.app, b, "team/again:v2")
    assert set(a.stored_blobs()) <= set(b.stored_blobs())
    assert assert_complete(b, "team/again", "v2") == corpus.app.top.digest
