"""tags/list: the upstream's tags (the ones edgecache has seen when it is down), sorted and paged
by edgecache as the spec says (`n`, `last`, a Link of its own), whatever the upstream does."""

from __future__ import annotations

import re

import pytest
from yarl import URL

from edgecache.proxy.tags import MAX_PAGE
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


LINK_RE = re.compile(r'^<(?P<url>/v2/[^>]+)>; rel="next"$')


async def walk(edge: Edge, url: str, pages: int = 20) -> tuple[list[list[str]], list[str]]:
    """Follow our Link headers from `url` (at most `pages` requests): the pages and the links."""
    seen: list[list[str]] = []
    links: list[str] = []
    for _ in range(pages):
        async with edge.client.get(url) as resp:
            assert resp.status == 200, await resp.text()
            seen.append((await resp.json())["tags"])
            link = resp.headers.get("Link")
        if link is None:
            return seen, links
        links.append(link)
        match = LINK_RE.match(link)
        assert match, link
        url = match.group("url")
    raise AssertionError(f"still a Link after {pages} pages: {links[-3:]}")


@pytest.mark.parametrize("ns", [False, True], ids=["default-upstream", "ns-query"])
async def test_tag_pages_follow_our_link(fake: FakeRegistry, edge: Edge, ns: bool) -> None:
    fake.add_image(REPO, make_image([make_layer(1000, 2)]), tags=["a", "b", "c", "d", "e"])
    extra = f"&ns={UPSTREAM}" if ns else ""

    pages, links = await walk(edge, f"/v2/{REPO}/tags/list?n=2{extra}")

    assert pages == [["a", "b"], ["c", "d"], ["e"]]
    # n and last go upstream (n one more: is there a next page?); the Link points back at
    # edgecache as this client asked, ns kept
    assert [r.query for r in fake.api_requests(path=f"/v2/{REPO}/tags/list")] == [
        {"n": "3"}, {"n": "3", "last": "b"}, {"n": "3", "last": "d"}]
    for link, last in zip(links, ["b", "d"], strict=True):
        query = URL(LINK_RE.match(link).group("url")).query  # type: ignore[union-attr]
        assert dict(query) == {"n": "2", "last": last, **({"ns": UPSTREAM} if ns else {})}


async def test_tags_are_sorted_whatever_the_upstream_order(fake: FakeRegistry,
                                                           edge: Edge) -> None:
    """(An unsorted upstream that pages in its own order cannot be sorted page by page.)"""
    fake.tags_sorted = False
    fake.add_image(REPO, make_image([make_layer(1000, 7)]), tags=["v2", "B", "latest", "a", "v10"])

    async with edge.client.get(f"/v2/{REPO}/tags/list") as resp:
        assert (await resp.json())["tags"] == ["B", "a", "latest", "v10", "v2"]  # byte order
        assert "Link" not in resp.headers


async def test_an_upstream_page_limit_is_paged_through(fake: FakeRegistry, edge: Edge) -> None:
    """An upstream that pages at fewer than asked (its own limit, a Link of its own): fewer
    tags, and our Link, which edgecache turns into the upstream's next page in turn."""
    tags = [f"t{i:02d}" for i in range(7)]
    fake.tags_page_limit = 2
    fake.add_image(REPO, make_image([make_layer(1000, 8)]), tags=tags)

    pages, links = await walk(edge, f"/v2/{UPSTREAM}/{REPO}/tags/list?n=5")
    assert [tag for page in pages for tag in page] == tags
    assert all(link.startswith(f"</v2/{UPSTREAM}/{REPO}/tags/list?n=5&last=") for link in links)

    pages, _ = await walk(edge, f"/v2/{REPO}/tags/list")  # no n: the upstream's own pages
    assert [tag for page in pages for tag in page] == tags


async def test_an_upstream_refusing_n_plus_one_is_asked_for_n(fake: FakeRegistry,
                                                                edge: Edge) -> None:
    fake.tags_max_n = 2
    fake.add_image(REPO, make_image([make_layer(1000, 12)]), tags=["a", "b", "c"])

    pages, _ = await walk(edge, f"/v2/{REPO}/tags/list?n=2")

    assert pages == [["a", "b"], ["c"]]  # the upstream's Link said there was more
    assert [r.query.get("n") for r in fake.api_requests(path=f"/v2/{REPO}/tags/list")] == [
        "3", "2", "3", "2"]


async def test_n_zero_is_an_empty_list_without_link(fake: FakeRegistry, edge: Edge) -> None:
    fake.add_image(REPO, make_image([make_layer(1000, 9)]), tags=["a", "b"])

    async with edge.client.get(f"/v2/{REPO}/tags/list?n=0") as resp:
        assert resp.status == 200
        assert await resp.json() == {"name": REPO, "tags": []}
        assert "Link" not in resp.headers


async def test_n_is_bounded(fake: FakeRegistry, edge: Edge) -> None:
    tags = [f"t{i:05d}" for i in range(MAX_PAGE + 5)]
    fake.tags[REPO] = tags

    async with edge.client.get(f"/v2/{REPO}/tags/list?n={'9' * 5000}") as resp:
        assert resp.status == 200
        assert (await resp.json())["tags"] == tags[:MAX_PAGE]
        assert resp.headers["Link"] == (
            f'</v2/{REPO}/tags/list?n={MAX_PAGE}&last={tags[MAX_PAGE - 1]}>; rel="next"')
    assert fake.requests[-1].query == {"n": str(MAX_PAGE + 1)}


async def test_last_without_n(fake: FakeRegistry, edge: Edge) -> None:
    fake.add_image(REPO, make_image([make_layer(1000, 10)]), tags=["a", "b", "c"])

    async with edge.client.get(f"/v2/{REPO}/tags/list?last=a") as resp:
        assert (await resp.json())["tags"] == ["b", "c"]
        assert "Link" not in resp.headers
    async with edge.client.get(f"/v2/{REPO}/tags/list?last=zzz") as resp:
        assert (await resp.json())["tags"] == []


@pytest.mark.parametrize("body", [
    b'{"name": "team/app", "tags": "v1"}',
    b'{"name": "team/app", "tags": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b"[" * 100_000,
], ids=["tags-not-a-list", "nested-list", "nested-garbage"])
async def test_a_broken_tag_list_is_a_502(fake: FakeRegistry, edge: Edge, body: bytes) -> None:
    fake.add_image(REPO, make_image([make_layer(1000, 11)]), tags=["v1"])
    fake.tags_body = body

    async with edge.client.get(f"/v2/{REPO}/tags/list") as resp:
        assert resp.status == 502, await resp.text()
        assert (await resp.json())["errors"][0]["code"] == "UNKNOWN"


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
        assert resp.headers["Link"] == f'</v2/{REPO}/tags/list?n=1&last=v1>; rel="next"'
    assert fake.requests[-1].path == f"/v2/{REPO}/tags/list"  # the upstream was asked first
    assert edge.sample("edgecache_stale_serves_total", upstream=UPSTREAM) == 2
    pages, _ = await walk(edge, f"/v2/{REPO}/tags/list?n=2")
    assert pages == [["latest", "v1"], ["v2"]]


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
