"""Two real upstreams behind one edgecache: every request reaches the upstream it names.

Each routing style is exercised with plain HTTP: Docker's (no registry named: default upstream,
`library/` added), the path prefix (`/v2/<registry>/<repo>`) and containerd's `?ns=`. What each
docker-registry logged is compared with exactly what should have reached it.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.support.corpus import HUB, REGISTRY_B, Corpus, Seeded
from tests.support.edgecache import StartEdgecache
from tests.support.httpclient import fetch
from tests.support.images import OCI_INDEX, OCI_MANIFEST, sha256
from tests.support.registry import DockerRegistry

pytestmark = pytest.mark.integration

ACCEPT = {"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"}


def pull_over_http(base: str, query: str, seeded: Seeded) -> None:
    """Pull every manifest and blob of `seeded` from `base` (`.../v2/<route>`) and check bytes."""
    answer = fetch(f"{base}/manifests/{seeded.tag}{query}", headers=ACCEPT)
    assert answer.status == 200, answer.body[:300]
    assert answer.body == seeded.top.manifest
    assert answer.headers["Docker-Content-Digest"] == seeded.top.digest
    assert answer.headers["Content-Type"] == seeded.top.media_type
    for digest, body in seeded.manifests.items():
        if digest == seeded.top.digest:
            continue
        answer = fetch(f"{base}/manifests/{digest}{query}", headers=ACCEPT)
        assert answer.status == 200, answer.body[:300]
        assert answer.body == body
    for digest, data in seeded.blobs.items():
        answer = fetch(f"{base}/blobs/{digest}{query}")
        assert answer.status == 200, answer.body[:300]
        assert sha256(answer.body) == digest
        assert answer.body == data


def expected_reads(seeded: Seeded, already: set[str]) -> list[tuple[str, str]]:
    """What a cold pull of `seeded` makes its upstream serve: one HEAD for the tag, one GET per
    manifest and per blob not fetched before (edgecache is content-addressed)."""
    repo = seeded.repository
    reads = [("HEAD", f"/v2/{repo}/manifests/{seeded.tag}")]
    reads += [("GET", f"/v2/{repo}/manifests/{d}") for d in seeded.manifests if d not in already]
    reads += [("GET", f"/v2/{repo}/blobs/{d}") for d in seeded.blobs if d not in already]
    already.update(seeded.content)
    return reads


def test_each_request_reaches_the_upstream_it_names(
        hub: DockerRegistry, registry_b: DockerRegistry, corpus: Corpus,
        edgecaches: StartEdgecache) -> None:
    ec = edgecaches("edgecache", {HUB: hub.url, REGISTRY_B: registry_b.url},
                    default_upstream=HUB)
    hub_mark, b_mark = hub.mark(), registry_b.mark()

    routes = [
        (corpus.alpha, f"{ec.url}/v2/alpha", ""),  # Docker style: default upstream + library/
        (corpus.beta, f"{ec.url}/v2/docker.io/library/beta", ""),  # path prefix
        (corpus.multi, f"{ec.url}/v2/library/multi", "?ns=docker.io"),  # containerd
        (corpus.app, f"{ec.url}/v2/registry-b.test/team/app", ""),
        (corpus.app_multi, f"{ec.url}/v2/team/multi", "?ns=registry-b.test"),
    ]
    for seeded, base, query in routes:
        pull_over_http(base, query, seeded)

    # library/ is added to a single-component docker.io name in every style; the bytes are
    # cached, the tag is revalidated with one HEAD each time.
    for url in (f"{ec.url}/v2/docker.io/alpha/manifests/1",
                f"{ec.url}/v2/alpha/manifests/1?ns=docker.io",
                f"{ec.url}/v2/library/alpha/manifests/1?ns=index.docker.io"):
        answer = fetch(url, headers=ACCEPT)
        assert answer.status == 200
        assert answer.body == corpus.alpha.top.manifest

    # A registry that is not configured is refused without contacting anything.
    for url in (f"{ec.url}/v2/ghcr.io/team/app/manifests/1",
                f"{ec.url}/v2/team/app/manifests/1?ns=quay.io",
                f"{ec.url}/v2/localhost:5000/team/app/blobs/{corpus.app.top.config.digest}"):
        answer = fetch(url, headers=ACCEPT)
        assert answer.status == 404
        assert json.loads(answer.body)["errors"][0]["code"] == "NAME_UNKNOWN"

    hub_seen: set[str] = set()
    want_hub = [read for seeded in (corpus.alpha, corpus.beta, corpus.multi)
                for read in expected_reads(seeded, hub_seen)]
    want_hub += [("HEAD", "/v2/library/alpha/manifests/1")] * 3
    b_seen: set[str] = set()
    want_b = [read for seeded in (corpus.app, corpus.app_multi)
              for read in expected_reads(seeded, b_seen)]

    got_hub = [(r.method, r.path) for r in hub.pulls_since(hub_mark)]
    got_b = [(r.method, r.path) for r in registry_b.pulls_since(b_mark)]
    assert Counter(got_hub) == Counter(want_hub)
    assert Counter(got_b) == Counter(want_b)
    # the layer alpha and beta share crossed the network once, from alpha's repository
    shared = [path for _, path in got_hub if path.endswith(corpus.shared.digest)]
    assert shared == [f"/v2/library/alpha/blobs/{corpus.shared.digest}"]
