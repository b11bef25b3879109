"""A manifest is stored and served under the media type its body declares; an upstream whose
Content-Type contradicts the body gets 502 MANIFEST_INVALID and nothing is stored."""

from __future__ import annotations

import pytest

from tests.fakes.registry import FakeRegistry
from tests.support.images import DOCKER_MANIFEST, OCI_MANIFEST, make_image, make_layer
from tests.unit.conftest import Edge

REPO = "team/app"


@pytest.mark.parametrize("by_digest", [False, True], ids=["by-tag", "by-digest"])
async def test_a_contradicting_content_type_is_refused_and_nothing_stored(
        fake: FakeRegistry, edge: Edge, by_digest: bool) -> None:
    image = make_image([make_layer(1000, seed=91)], docker=True)  # says DOCKER_MANIFEST
    fake.add_image(REPO, image, tags=["1"])
    for key in ((REPO, "1"), (REPO, image.digest)):
        fake.manifests[key] = (image.manifest, OCI_MANIFEST)  # ... served as OCI
    reference = image.digest if by_digest else "1"
    for _ in range(2):
        async with edge.client.get(f"/v2/{REPO}/manifests/{reference}") as resp:
            assert resp.status == 502
            assert (await resp.json())["errors"][0]["code"] == "MANIFEST_INVALID"
    assert edge.blob_files() == []


async def test_the_body_decides_over_a_vague_content_type(fake: FakeRegistry,
                                                          edge: Edge) -> None:
    image = make_image([make_layer(1000, seed=92)], docker=True)
    fake.add_image(REPO, image, tags=["1"])
    fake.manifests[(REPO, "1")] = (image.manifest, "application/json")
    for reference in ("1", image.digest):  # fetched, then cached
        async with edge.client.get(f"/v2/{REPO}/manifests/{reference}") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == DOCKER_MANIFEST
            assert await resp.read() == image.manifest
