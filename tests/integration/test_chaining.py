"""edgecache behind edgecache: B's upstream `docker.io` is edgecache A, whose is a registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.corpus import HUB, Corpus
from tests.support.edgecache import StartEdgecache
from tests.support.httpclient import fetch
from tests.support.images import OCI_INDEX, OCI_MANIFEST
from tests.support.registry import DockerRegistry, pulls
from tests.support.skopeo import Skopeo, verify_oci_layout

pytestmark = pytest.mark.integration

ACCEPT = {"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"}


def test_pull_through_a_chain_and_heads_download_nothing(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, skopeo: Skopeo,
        tmp_path: Path) -> None:
    a = edgecaches("a", {HUB: hub.url}, default_upstream=HUB)
    b = edgecaches("b", {HUB: a.url}, default_upstream=HUB)

    # a real client through B, configured as a Docker Hub mirror
    conf = skopeo.registries_conf({"docker.io": b.address})
    for seeded in (corpus.multi, corpus.alpha):
        out = tmp_path / f"oci-{seeded.repository.replace('/', '-')}"
        skopeo.copy(f"docker://docker.io/{seeded.repository}:{seeded.tag}", f"oci:{out}",
                    registries_conf=conf)
        verify_oci_layout(out, seeded)
    pulled = {**corpus.multi.content, **corpus.alpha.content}
    assert set(a.stored_blobs()) == set(b.stored_blobs()) == set(pulled)

    # HEADs of content neither cache holds: beta's own layer, its manifest by digest and by tag
    beta = corpus.beta
    own_layer = next(layer for layer in beta.top.layers if layer.digest not in pulled)
    hub_mark, a_mark = hub.mark(), a.mark()
    answer = fetch(f"{b.url}/v2/library/beta/blobs/{own_layer.digest}", method="HEAD")
    assert answer.status == 200
    assert answer.headers["Docker-Content-Digest"] == own_layer.digest
    assert int(answer.headers["Content-Length"]) == len(own_layer.data)
    for reference in (beta.top.digest, beta.tag):
        answer = fetch(f"{b.url}/v2/library/beta/manifests/{reference}", method="HEAD",
                       headers=ACCEPT)
        assert answer.status == 200
        assert answer.headers["Docker-Content-Digest"] == beta.top.digest
        assert answer.headers["Content-Type"] == beta.top.media_type
        assert int(answer.headers["Content-Length"]) == len(beta.top.manifest)

    expected = sorted([
        ("HEAD", f"/v2/library/beta/blobs/{own_layer.digest}"),
        ("HEAD", f"/v2/library/beta/manifests/{beta.top.digest}"),
        ("HEAD", f"/v2/library/beta/manifests/{beta.tag}"),
    ])
    # each HEAD reached A as a HEAD, and A passed it on as a HEAD: no GET anywhere
    assert sorted((r.method, r.path) for r in pulls(a.requests_since(a_mark))) == expected
    assert sorted((r.method, r.path) for r in hub.pulls_since(hub_mark)) == expected
    # and nothing was downloaded or stored by either cache
    for cache in (a, b):
        stored = cache.stored_blobs()
        assert own_layer.digest not in stored
        assert beta.top.digest not in stored
        assert beta.top.config.digest not in stored
        assert not any((cache.storage / "tmp").iterdir())
