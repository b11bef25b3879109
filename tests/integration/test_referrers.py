"""Referrers of cached upstream content in front of a real Distribution 2.8 (Debian's
docker-registry), which has no referrers API: a signer's `sha256-<hex>` tag (the referrers tag
schema) is what it gives, and edgecache answers the referrers API from it, filtered, and from
its cached copy while the upstream is down. (The OCI 1.1 API itself: tests/unit/proxy/
test_referrers.py, against the fake; docker-registry 2.8 cannot produce one.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.artifacts import SBOM, SIGNATURE, descriptor, push_signed
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.httpclient import fetch
from tests.support.images import OCI_INDEX, Image, make_image, make_layer
from tests.support.registry import DockerRegistry

pytestmark = pytest.mark.integration

REPO = "team/signed"
UPSTREAM = "registry.test"


@pytest.fixture
def signed(tmp_path: Path) -> Iterator[tuple[DockerRegistry, Image, list[Image]]]:
    """An image with a signature and an SBOM pushed the way a signer does without the API."""
    registry = DockerRegistry(tmp_path / "registry")
    try:
        image, artifacts = push_signed(registry, REPO, "v1", 401)
        yield registry, image, artifacts
    finally:
        registry.close()


def referrers(edge: EdgecacheProcess, subject: str, query: str = "") -> tuple[list[object], str]:
    answer = fetch(f"{edge.url}/v2/{REPO}/referrers/{subject}{query}")
    assert answer.status == 200, answer.body[:300]
    assert answer.headers["Content-Type"] == OCI_INDEX
    doc = json.loads(answer.body)
    assert doc["mediaType"] == OCI_INDEX
    if query:
        assert answer.headers["OCI-Filters-Applied"] == "artifactType"
    return doc["manifests"], answer.headers["X-Edgecache-Cache"]


def test_the_tag_schema_answers_the_referrers_api_online_and_offline(
        signed: tuple[DockerRegistry, Image, list[Image]], edgecaches: StartEdgecache) -> None:
    registry, image, (signature, sbom) = signed
    assert fetch(f"{registry.url}/v2/{REPO}/referrers/{image.digest}").status == 404
    edge = edgecaches("edgecache", {UPSTREAM: registry.url}, default_upstream=UPSTREAM)

    found, _ = referrers(edge, image.digest)
    assert found == [descriptor(signature), descriptor(sbom)]
    assert referrers(edge, image.digest, f"?artifactType={SIGNATURE}")[0] == [
        descriptor(signature)]
    for artifact in (signature, sbom):  # what a verifier pulls next: by digest, the usual path
        manifest = fetch(f"{edge.url}/v2/{REPO}/manifests/{artifact.digest}",
                         headers={"Accept": artifact.media_type})
        assert (manifest.status, manifest.body) == (200, artifact.manifest)
        layer = artifact.layers[0]
        assert fetch(f"{edge.url}/v2/{REPO}/blobs/{layer.digest}").body == layer.data
    other = make_image([make_layer(100, 402)])  # no tag for it: no referrers, and no 404
    assert referrers(edge, other.digest) == ([], "miss")

    registry.close()  # the uplink goes down: every tag revalidation (tag_ttl 0) fails
    assert referrers(edge, image.digest) == ([descriptor(signature), descriptor(sbom)], "stale")
    assert referrers(edge, image.digest, f"?artifactType={SBOM}") == ([descriptor(sbom)],
                                                                       "stale")
    manifest = fetch(f"{edge.url}/v2/{REPO}/manifests/{signature.digest}",
                     headers={"Accept": signature.media_type})
    assert (manifest.status, manifest.body) == (200, signature.manifest)
