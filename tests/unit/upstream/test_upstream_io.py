"""One rule for upstream I/O, and numbers from upstream headers read with bounds.

A network error while reading any body (manifest, tag list, blob) counts towards marking the
upstream down, as one in sending the request does (issue 13 item 11). Numeric headers from an
upstream, and a token's `expires_in`, are bounded before they are converted (item 13).
"""

from __future__ import annotations

import logging

import pytest

from edgecache.upstream.headers import content_range, leading_count, number
from tests.fakes.registry import FakeRegistry
from tests.support.images import make_image, make_layer
from tests.unit.conftest import UPSTREAM, MakeEdge

REPO = "team/app"
ONE_FAILURE = {"health": {"failure_threshold": 1, "probe_min_interval": "60s"}}


@pytest.mark.parametrize("path", [f"/v2/{REPO}/manifests/latest", f"/v2/{REPO}/tags/list"],
                         ids=["manifest", "tags"])
async def test_a_document_cut_mid_body_counts_towards_marking_the_upstream_down(
        fake: FakeRegistry, make_edge: MakeEdge, path: str) -> None:
    """Threshold 1: one failed exchange marks it down, whichever part of it failed."""
    fake.add_image(REPO, make_image([make_layer(1000, seed=81)]), tags=("latest",))
    fake.cut_documents_at = 10
    edge = await make_edge(top=ONE_FAILURE)
    assert edge.sample("edgecache_upstream_up", upstream=UPSTREAM) == 1

    async with edge.client.get(path) as resp:
        assert resp.status == 503, await resp.text()
        assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"

    assert edge.sample("edgecache_upstream_errors_total", upstream=UPSTREAM, kind="body") == 1
    assert edge.sample("edgecache_upstream_up", upstream=UPSTREAM) == 0
    asked = len(fake.requests)
    async with edge.client.get(path) as resp:  # marked down: answered at once, not asked
        assert resp.status == 503
    assert len(fake.requests) == asked


async def test_a_whole_document_does_not_count(fake: FakeRegistry, make_edge: MakeEdge) -> None:
    """The counterpart: the same requests, answered whole, leave the upstream up."""
    fake.add_image(REPO, make_image([make_layer(1000, seed=82)]), tags=("latest",))
    edge = await make_edge(top=ONE_FAILURE)
    for path in (f"/v2/{REPO}/manifests/latest", f"/v2/{REPO}/tags/list"):
        async with edge.client.get(path) as resp:
            assert resp.status == 200
    assert edge.sample("edgecache_upstream_up", upstream=UPSTREAM) == 1
    assert edge.sample("edgecache_upstream_errors_total", upstream=UPSTREAM, kind="body") == 0


async def test_a_huge_token_lifetime_is_bounded_not_a_500(
        fake: FakeRegistry, make_edge: MakeEdge) -> None:
    """`expires_in` of 400 digits: float() of it overflows (it used to be a 500)."""
    image = make_image([make_layer(1000, seed=83)])
    fake.add_image(REPO, image, tags=("latest",))
    fake.require_bearer(expires_in=10**400)
    edge = await make_edge()
    async with edge.client.get(f"/v2/{REPO}/manifests/latest") as resp:
        assert resp.status == 200
        assert await resp.read() == image.manifest


def test_numbers_in_headers_are_ascii_digits_and_bounded() -> None:
    assert number("1234") == 1234 and number(" 7 ") == 7 and number("0") == 0
    for bad in (None, "", "²", "١٢", "-1", "1e3", "0x10", "9" * 19, "9" * 5000, "1 2"):
        assert number(bad) is None, bad
    assert number("9" * 18) == 10**18 - 1
    assert content_range("bytes 100-199/1000") == (100, 1000)
    assert content_range("bytes 5-9/*") == (5, None)
    assert content_range("bytes ²-9/10") == (None, 10)
    assert content_range(f"bytes {'1' * 5000}-9/10") == (None, 10)
    assert content_range("items 1-2/3") == (None, None) and content_range(None) == (None, None)
    assert leading_count("76;w=21600") == 76 and leading_count("9" * 5000) is None


async def test_consecutive_cut_bodies_mark_the_upstream_down_at_the_threshold(
        fake: FakeRegistry, make_edge: MakeEdge) -> None:
    """Threshold 3 (the default): each request's headers arrive, each body breaks. The headers
    alone are not a success (they used to reset the count, so this never marked it down)."""
    for n in range(3):
        fake.add_image(f"team/app{n}", make_image([make_layer(1000, seed=84 + n)]),
                       tags=("latest",))
    fake.cut_documents_at = 10
    edge = await make_edge(top={"health": {"probe_min_interval": "60s"}})
    for n in range(3):
        assert edge.sample("edgecache_upstream_up", upstream=UPSTREAM) == 1, n
        async with edge.client.get(f"/v2/team/app{n}/tags/list") as resp:
            assert resp.status == 503
    assert edge.sample("edgecache_upstream_up", upstream=UPSTREAM) == 0
    fake.cut_documents_at = None


async def test_a_whole_body_resets_the_count(fake: FakeRegistry, make_edge: MakeEdge) -> None:
    """Two cut bodies, one whole, two cut: never three in a row, so still up."""
    fake.add_image(REPO, make_image([make_layer(1000, seed=88)]), tags=("latest",))
    edge = await make_edge(top={"health": {"probe_min_interval": "60s"}})
    for cut in (10, 10, None, 10, 10):
        fake.cut_documents_at = cut
        async with edge.client.get(f"/v2/{REPO}/tags/list") as resp:
            assert resp.status == (200 if cut is None else 503)
    assert edge.sample("edgecache_upstream_up", upstream=UPSTREAM) == 1


@pytest.mark.parametrize("location", ["http://[::1", "http://registry:99999/v2/x"])
async def test_a_redirect_to_an_unparsable_url_is_a_bad_response(
        fake: FakeRegistry, make_edge: MakeEdge, caplog: pytest.LogCaptureFixture,
        location: str) -> None:
    image = make_image([make_layer(1000, seed=89)])
    fake.add_image(REPO, image, tags=("latest",))
    fake.redirect(location, path_contains="/manifests/", method="GET")
    fake.redirect(location, path_contains="/blobs/", method="GET")
    edge = await make_edge()
    for path in (f"/v2/{REPO}/manifests/{image.digest}", f"/v2/{REPO}/blobs/{image.config.digest}"):
        async with edge.client.get(path) as resp:
            assert resp.status == 502, (path, await resp.text())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_token_realm_that_is_not_a_url_is_refused(
        fake: FakeRegistry, make_edge: MakeEdge, caplog: pytest.LogCaptureFixture) -> None:
    fake.add_image(REPO, make_image([make_layer(1000, seed=90)]), tags=("latest",))
    fake.require_bearer(realm="https://[::1/token")
    edge = await make_edge()
    async with edge.client.get(f"/v2/{REPO}/manifests/latest") as resp:
        assert resp.status == 403, await resp.text()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
