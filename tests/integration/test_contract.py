"""The OCI error and paging contract in front of a real Distribution 2.8 (Debian's
docker-registry), which ignores `n` and `last` and has no referrers API: edgecache pages its
tag list as the spec says, answers what cannot name content without asking it, and answers
referrers from the tag schema (tests/integration/test_referrers.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.httpclient import fetch
from tests.support.images import make_image, make_layer
from tests.support.registry import DockerRegistry

pytestmark = pytest.mark.integration

REPO = "team/tags"
TAGS = ["b", "a", "C", "e", "d", "1.0", "latest"]
LINK_RE = re.compile(r'^<(?P<url>/v2/[^>]+)>; rel="next"$')


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    registry = DockerRegistry(tmp_path_factory.mktemp("contract"))
    try:
        image = make_image([make_layer(1000, 301)])
        for tag in TAGS:
            registry.push_image(REPO, tag, image)
        yield registry
    finally:
        registry.close()


@pytest.fixture
def edge(registry: DockerRegistry, edgecaches: StartEdgecache) -> EdgecacheProcess:
    return edgecaches("edgecache", {"registry.test": registry.url},
                      default_upstream="registry.test")


def error_code(body: bytes) -> str:
    return str(json.loads(body)["errors"][0]["code"])


def test_distribution_ignores_n_and_edgecache_pages(registry: DockerRegistry,
                                                    edge: EdgecacheProcess) -> None:
    direct = fetch(f"{registry.url}/v2/{REPO}/tags/list?n=2")
    assert len(json.loads(direct.body)["tags"]) == len(TAGS)  # what edgecache has to fix

    url, pages = f"/v2/{REPO}/tags/list?n=3", []
    for _ in range(len(TAGS)):  # bounded: one page per tag at most
        answer = fetch(edge.url + url)
        assert answer.status == 200, answer.body[:300]
        pages.append(json.loads(answer.body)["tags"])
        link = answer.headers.get("Link")
        if link is None:
            break
        match = LINK_RE.match(link)
        assert match, link
        url = match.group("url")
    assert pages == [["1.0", "C", "a"], ["b", "d", "e"], ["latest"]]  # byte order, as sort.Strings


def test_what_names_no_content_is_answered_without_asking(registry: DockerRegistry,
                                                          edge: EdgecacheProcess) -> None:
    mark = registry.mark()
    for method in ("GET", "HEAD"):
        answer = fetch(f"{edge.url}/v2/{REPO}/manifests/.INVALID_MANIFEST_NAME", method=method)
        assert answer.status == 404
    assert error_code(fetch(f"{edge.url}/v2/{REPO}/manifests/.INVALID_MANIFEST_NAME").body) \
        == "MANIFEST_UNKNOWN"
    answer = fetch(f"{edge.url}/v2/_catalog")  # what is held: the index, not the upstream
    assert answer.status == 200 and isinstance(json.loads(answer.body)["repositories"], list)
    answer = fetch(f"{edge.url}/v2/{REPO}/referrers/sha256:nothex")
    assert (answer.status, error_code(answer.body)) == (400, "DIGEST_INVALID")
    assert registry.pulls_since(mark) == []


def test_no_referrers_api_upstream_is_answered_from_the_tag_schema(
        registry: DockerRegistry, edge: EdgecacheProcess) -> None:
    """No `sha256-<hex>` tag: no referrers; a 200 all the same (edgecache offers the API)."""
    digest = fetch(f"{registry.url}/v2/{REPO}/manifests/latest", method="HEAD", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"}).headers["Docker-Content-Digest"]
    assert fetch(f"{registry.url}/v2/{REPO}/referrers/{digest}").status == 404

    answer = fetch(f"{edge.url}/v2/{REPO}/referrers/{digest}")
    assert answer.status == 200
    assert json.loads(answer.body)["manifests"] == []
