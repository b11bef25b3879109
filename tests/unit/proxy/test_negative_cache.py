"""Absent content: concurrent misses share one upstream request, a confirmed 404 is believed
for `cache.negative_ttl`, per upstream and repository, and never for a cached tag."""

from __future__ import annotations

import asyncio

import pytest

from edgecache import config as config_mod
from edgecache.errors import ConfigError
from edgecache.proxy.negative import Absences
from tests.fakes.registry import FakeRegistry
from tests.support.images import make_image, make_layer, sha256
from tests.unit.conftest import Edge, MakeEdge

REPO = "team/app"


def missing(count: int, salt: str) -> list[str]:
    return [sha256(f"absent {salt} {i}".encode()) for i in range(count)]


async def status(edge: Edge, path: str, method: str = "GET") -> int:
    async with edge.client.request(method, path) as resp:
        await resp.read()
        return resp.status


async def storm(edge: Edge, paths: list[str], copies: int, method: str = "GET") -> list[int]:
    return await asyncio.gather(*(status(edge, p, method) for p in paths for _ in range(copies)))


async def test_absent_digests_cost_one_upstream_request_each(fake: FakeRegistry,
                                                             edge: Edge) -> None:
    """The issue's case, scaled: 2 concurrent requests for each of 100 absent blobs and 50 absent
    manifests, then all of them again, GET and HEAD: one upstream request per digest."""
    blobs = [f"/v2/{REPO}/blobs/{d}" for d in missing(100, "blob")]
    manifests = [f"/v2/{REPO}/manifests/{d}" for d in missing(50, "manifest")]
    assert set(await storm(edge, blobs + manifests, 2)) == {404}
    assert len(fake.api_requests()) == 150
    for method in ("GET", "HEAD"):
        assert set(await storm(edge, blobs + manifests, 1, method)) == {404}
    assert len(fake.api_requests()) == 150
    # the second round, and any first-round copy that came after its twin's answer
    assert edge.sample("edgecache_negative_cache_hits_total", upstream="fake.test") >= 300


async def test_concurrent_heads_of_absent_content_are_one_request(fake: FakeRegistry,
                                                                  edge: Edge) -> None:
    blobs = [f"/v2/{REPO}/blobs/{d}" for d in missing(20, "head blob")]
    manifests = [f"/v2/{REPO}/manifests/{d}" for d in missing(20, "head manifest")]
    assert set(await storm(edge, blobs + manifests, 3, "HEAD")) == {404}
    assert len(fake.api_requests("HEAD")) == 40
    assert len(fake.api_requests()) == 40


async def test_an_absent_tag_is_asked_once(
        fake: FakeRegistry, make_edge: MakeEdge) -> None:
    edge = await make_edge(top={"cache": {"negative_ttl": "1h"}})
    assert set(await storm(edge, [f"/v2/{REPO}/manifests/nope"], 4)) == {404}
    assert set(await storm(edge, [f"/v2/{REPO}/manifests/nope"], 1, "HEAD")) == {404}
    assert [r.method for r in fake.api_requests()] == ["HEAD"]


async def test_a_cached_tag_is_never_answered_from_the_memory(fake: FakeRegistry,
                                                              edge: Edge) -> None:
    image = make_image([make_layer(2000, seed=81)])
    fake.add_image(REPO, image, tags=["1"])
    path = f"/v2/{REPO}/manifests/1"
    assert await status(edge, path) == 200
    body = fake.manifests.pop((REPO, "1"))  # the tag is deleted upstream ...
    assert await status(edge, path) == 404
    fake.manifests[(REPO, "1")] = body  # ... and pushed again: the next request sees it
    assert await status(edge, path) == 200
    assert edge.sample("edgecache_negative_cache_hits_total", upstream="fake.test") == 0


async def test_the_memory_is_per_upstream_and_repository(fake: FakeRegistry,
                                                         make_edge: MakeEdge) -> None:
    """A second name for the same upstream (`other.test`) and another repository each ask for
    themselves: one's 404 never answers the other."""
    edge = await make_edge(top={"upstreams": {"other.test": {"url": fake.url}}})
    layer = make_layer(3000, seed=82)
    digest = layer.digest
    fake.fail(404, path_contains=f"/v2/{REPO}/blobs/")  # this repository lacks it
    fake.add_blob(layer)
    assert await status(edge, f"/v2/{REPO}/blobs/{digest}") == 404
    assert await status(edge, f"/v2/{REPO}/blobs/{digest}", "HEAD") == 404
    fake.clear_failures()  # now it has it: still believed absent here for a while ...
    assert await status(edge, f"/v2/{REPO}/blobs/{digest}") == 404
    # ... but not on another upstream's route or in another repository
    assert await status(edge, f"/v2/{REPO}/blobs/{digest}?ns=other.test", "HEAD") == 200
    assert await status(edge, f"/v2/team/other/blobs/{digest}", "HEAD") == 200
    assert len(fake.api_requests()) == 3
    # once cached (through another route), the remembered 404 stands in nobody's way
    async with edge.client.get(f"/v2/team/other/blobs/{digest}") as resp:
        assert await resp.read() == layer.data
    assert await status(edge, f"/v2/{REPO}/blobs/{digest}") == 200


async def test_a_zero_ttl_remembers_nothing(fake: FakeRegistry, make_edge: MakeEdge) -> None:
    edge = await make_edge(top={"cache": {"negative_ttl": "0s"}})
    paths = [f"/v2/{REPO}/blobs/{d}" for d in missing(5, "zero")]
    for _ in range(3):
        assert set(await storm(edge, paths, 1)) == {404}
    assert len(fake.api_requests()) == 15


def test_negative_ttl_is_read_from_the_config() -> None:
    base = {"listen": {"http": None}, "upstreams": {"a.test": {"url": "http://127.0.0.1:1"}},
            "default_upstream": "a.test"}
    assert config_mod.from_mapping(base).cache.negative_ttl == 30
    cfg = config_mod.from_mapping({**base, "cache": {"negative_ttl": "2m"}})
    assert cfg.cache.negative_ttl == 120
    with pytest.raises(ConfigError, match=r"cache\.negative_ttl"):
        config_mod.from_mapping({**base, "cache": {"negative_ttl": "soon"}})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key(n: int) -> tuple[str, str, str, str]:
    return ("a.test", "repo", "blobs", f"sha256:{n:064x}")


def test_absences_expire() -> None:
    clock = Clock()
    absences = Absences(30, clock=clock)
    absences.remember(key(1))
    clock.now += 29.9
    assert absences.known(key(1))
    clock.now += 0.2
    assert not absences.known(key(1))
    assert len(absences) == 0


def test_absences_are_bounded_and_drop_the_oldest_first() -> None:
    clock = Clock()
    absences = Absences(30, max_entries=100, clock=clock)
    for n in range(250):
        clock.now += 0.01
        absences.remember(key(n))
        assert len(absences) <= 100
    assert not absences.known(key(149))
    assert all(absences.known(key(n)) for n in range(150, 250))
    absences.remember(key(150))  # remembered again: now the youngest
    absences.remember(key(999))
    assert absences.known(key(150)) and not absences.known(key(151))


def test_expired_absences_are_dropped_as_new_ones_arrive() -> None:
    clock = Clock()
    absences = Absences(30, clock=clock)
    for n in range(50):
        absences.remember(key(n))
    clock.now += 31
    absences.remember(key(100))
    assert len(absences) == 1


def test_a_zero_ttl_stores_nothing() -> None:
    absences = Absences(0)
    absences.remember(key(1))
    assert not absences.known(key(1)) and len(absences) == 0
