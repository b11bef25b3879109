"""tags/list: passed through from the upstream; the tags edgecache has seen when it is down."""

from __future__ import annotations

import pytest

from tests.fakes.registry import FakeRegistry
from tests.support.images import make_image, make_layer
from tests.unit.conftest import UPSTREAM, Edge

REPO = "team/app"


async def test_tags_pass_through(fake: FakeRegistry, edge: Edge) -> None:
    fake.add_image(REPO, make_image([make_layer(1000, 1)]), tags=["v2", "latest", "v1"])

    async with edge.client.get(f"/v2/{REPO}/tags/list") as resp:
        assert resp.status == 200
        assert await resp.json() == {"name": REPO, "tags": ["latest", "v1", "v2"]}
    assert [r.path for r in fake.requests] == [f"/v2/{REPO}/tags/list"]


@pytest.mark.parametrize("ns", [False, True], ids=["default-upstream", "ns-query"])
async def test_tag_pagination_is_forwarded(fake: FakeRegistry, edge: Edge, ns: bool) -> None:
    fake.add_image(REPO, make_image([make_layer(1000, 2)]), tags=["a", "b", "c", "d"])
    extra = f"&ns={UPSTREAM}" if ns else ""

    async with edge.client.get(f"/v2/{REPO}/tags/list?n=2{extra}") as resp:
        assert await resp.json() == {"name": REPO, "tags": ["a", "b"]}
        link = resp.headers["Link"]
    # Only n and last go upstream; the next link points back at edgecache, ns kept.
    assert fake.requests[-1].query == {"n": "2"}
    assert link.startswith(f"</v2/{REPO}/tags/list?") and link.endswith('>; rel="next"')
    assert "n=2" in link and "last=b" in link and (f"ns={UPSTREAM}" in link) == ns

    async with edge.client.get(f"/v2/{REPO}/tags/list?n=2&last=b{extra}") as resp:
        assert await resp.json() == {"name": REPO, "tags": ["c", "d"]}
    assert fake.requests[-1].query == {"n": "2", "last": "b"}


async def test_large_tag_list_passes_through(fake: FakeRegistry, edge: Edge) -> None:
    """A tag list bigger than one network read (about 600 KB of JSON) arrives whole."""
    tags = [f"build-{i:06d}-{'x' * 12}" for i in range(25_000)]
    fake.tags[REPO] = tags

    async with edge.client.get(f"/v2/{REPO}/tags/list") as resp:
        assert resp.status == 200
        assert await resp.json() == {"name": REPO, "tags": sorted(tags)}


async def pull_tags(edge: Edge, tags: list[str]) -> None:
    for tag in tags:
        async with edge.client.get(f"/v2/{REPO}/manifests/{tag}") as resp:
            assert resp.status == 200


@pytest.mark.parametrize("outage", ["down", "503-on-tags", "500-on-tags"])
async def test_tags_fall_back_to_seen_tags(fake: FakeRegistry, edge: Edge, outage: str) -> None:
    fake.add_image(REPO, make_image([make_layer(1000, 3)]), tags=["v1", "v2", "v3", "latest"])
    await pull_tags(edge, ["v2", "v1", "latest"])  # v3 is never pulled through edgecache
    if outage == "down":
        fake.down = True
    else:
        fake.fail(int(outage[:3]), path_contains="/tags/list")

    async with edge.client.get(f"/v2/{REPO}/tags/list") as resp:
        assert resp.status == 200
        assert await resp.json() == {"name": REPO, "tags": ["latest", "v1", "v2"]}
    async with edge.client.get(f"/v2/{REPO}/tags/list?n=1&last=latest") as resp:
        assert await resp.json() == {"name": REPO, "tags": ["v1"]}
    assert fake.requests[-1].path == f"/v2/{REPO}/tags/list"  # the upstream was asked first
    assert edge.sample("edgecache_stale_serves_total", upstream=UPSTREAM) == 2


async def test_tags_of_other_repositories_are_not_mixed_in(fake: FakeRegistry,
                                                           edge: Edge) -> None:
    fake.add_image(REPO, make_image([make_layer(1000, 4)]), tags=["mine"])
    fake.add_image("team/other", make_image([make_layer(1000, 5)]), tags=["theirs"])
    await pull_tags(edge, ["mine"])
    async with edge.client.get("/v2/team/other/manifests/theirs") as resp:
        assert resp.status == 200
    fake.down = True

    async with edge.client.get(f"/v2/{REPO}/tags/list") as resp:
        assert await resp.json() == {"name": REPO, "tags": ["mine"]}


async def test_tags_unavailable_when_nothing_seen(fake: FakeRegistry, edge: Edge) -> None:
    fake.add_image(REPO, make_image([make_layer(1000, 6)]), tags=["v1"])
    fake.down = True

    async with edge.client.get(f"/v2/{REPO}/tags/list") as resp:
        assert resp.status == 503
        assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"
