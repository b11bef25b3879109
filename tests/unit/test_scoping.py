"""Content from an authenticated upstream is not readable by digest through a public route."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from edgecache import config as config_mod
from edgecache.app import SERVICE, build_app
from edgecache.metrics import Metrics
from edgecache.oci import Digest
from tests.fakes.registry import FakeRegistry
from tests.support.htpasswd import write_htpasswd
from tests.support.images import Image, make_image, make_layer
from tests.support.waiting import eventually

PRIVATE, PUBLIC = "private.test", "public.test"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_a_private_blob_is_not_served_through_a_public_route(
        aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    private, public = FakeRegistry(), FakeRegistry()
    layer = make_layer(50_000, seed=61)
    image = make_image([layer])
    private.add_image("team/secret", image, tags=["1"])
    await private.start(aiohttp_server)
    await public.start(aiohttp_server)
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, "alice", "pw")
    config = config_mod.from_mapping({
        "listen": {"http": None},
        "storage": {"path": str(tmp_path / "cache")},
        "upstreams": {PRIVATE: {"url": private.url, "access": "authenticated"},
                      PUBLIC: {"url": public.url}},
        "default_upstream": PUBLIC,
        "auth": {"htpasswd_file": str(htpasswd)},
    })
    client = await aiohttp_client(build_app(config, Metrics()))

    # cached through the private route, with credentials
    async with client.get(f"/v2/team/secret/manifests/1?ns={PRIVATE}",
                          headers=basic("alice", "pw")) as resp:
        assert resp.status == 200
    async with client.get(f"/v2/team/secret/blobs/{layer.digest}?ns={PRIVATE}",
                          headers=basic("alice", "pw")) as resp:
        assert await resp.read() == layer.data
    # without credentials the private route refuses
    async with client.get(f"/v2/team/secret/blobs/{layer.digest}?ns={PRIVATE}") as resp:
        assert resp.status == 401
    # through the public route the cached bytes are not handed out: the public upstream is asked
    for path in (f"/v2/any/repo/blobs/{layer.digest}", f"/v2/any/repo/manifests/{image.digest}"):
        async with client.get(path) as resp:
            assert resp.status == 404, path
            assert "X-Edgecache-Cache" not in resp.headers
    assert {r.path for r in public.requests} == {
        f"/v2/any/repo/blobs/{layer.digest}", f"/v2/any/repo/manifests/{image.digest}"}


async def test_public_content_is_shared_across_routes(
        aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    """Without private upstreams, a digest cached through one route serves every route."""
    first, second = FakeRegistry(), FakeRegistry()
    layer = make_layer(20_000, seed=62)
    first.add_blob(layer)
    await first.start(aiohttp_server)
    await second.start(aiohttp_server)
    config = config_mod.from_mapping({
        "listen": {"http": None},
        "storage": {"path": str(tmp_path / "cache")},
        "upstreams": {"a.test": {"url": first.url}, "b.test": {"url": second.url}},
        "default_upstream": "a.test",
    })
    client = await aiohttp_client(build_app(config, Metrics()))
    async with client.get(f"/v2/x/blobs/{layer.digest}?ns=a.test") as resp:
        assert await resp.read() == layer.data
    async with client.get(f"/v2/y/blobs/{layer.digest}?ns=b.test") as resp:
        assert await resp.read() == layer.data
        assert resp.headers["X-Edgecache-Cache"] == "hit"
    assert second.requests == []


# ---- work shared between concurrent requests passes the same check ----------------------------

# seconds; reached only when a request wrongly waits on another's upstream. Below the
# upstream response timeout (10 s), so the held request is still held when it is reached.
JOIN_BOUND = 5.0


@dataclass
class Pair:
    """edgecache with a private (authenticated) and a public upstream, each its own fake."""

    private: FakeRegistry
    public: FakeRegistry
    client: TestClient[web.Request, web.Application]

    async def get(self, path: str, private: bool = False, method: str = "GET",
                  headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        url = f"{path}?ns={PRIVATE}" if private else path
        sent = {**(basic("alice", "pw") if private else {}), **(headers or {})}
        async with self.client.request(method, url, headers=sent) as resp:
            return resp.status, await resp.read()


@pytest.fixture
async def pair(aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient,
               tmp_path: Path) -> Pair:
    private, public = FakeRegistry(), FakeRegistry()
    await private.start(aiohttp_server)
    await public.start(aiohttp_server)
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, "alice", "pw")
    config = config_mod.from_mapping({
        "listen": {"http": None},
        "storage": {"path": str(tmp_path / "cache")},
        "upstreams": {PRIVATE: {"url": private.url, "access": "authenticated"},
                      PUBLIC: {"url": public.url}},
        "default_upstream": PUBLIC,
        "auth": {"htpasswd_file": str(htpasswd)},
    })
    return Pair(private, public, await aiohttp_client(build_app(config, Metrics())))


async def while_held(held: FakeRegistry, path: str, joiner: Awaitable[tuple[int, bytes]],
                     joined: Awaitable[object], starter: Awaitable[tuple[int, bytes]],
                     status: int = 200) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    """Start `starter`, whose GET of `path` `held` holds open; then start `joiner` and let it go
    until `joined` (it reached its own upstream, or joined the held work) or it ends; then
    release the hold, after which `held` answers `status` (404 and 503 are injected). Returns
    both answers."""
    gate = held.hold(path, method="GET")
    if status != 200:
        held.fail(status, path_contains=path, method="GET")
    arrived = held.arrival(path, method="GET")
    first = asyncio.ensure_future(starter)
    await asyncio.wait_for(arrived.wait(), JOIN_BOUND)
    signal = asyncio.ensure_future(joined)
    second = asyncio.ensure_future(joiner)
    try:
        await asyncio.wait({second, signal}, timeout=JOIN_BOUND,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        gate.set()
        signal.cancel()
    return await first, await second


async def readers(pair: Pair, digest: str, count: int) -> None:
    """Until `count` requests follow the download of `digest` (bounded poll of the service's
    downloads: joining one is invisible from outside until its size is known)."""
    fills = pair.client.app[SERVICE]._fills  # type: ignore[index]

    def joined() -> bool:
        fill = fills.get(Digest.parse(digest))
        return fill is not None and fill.readers >= count

    await eventually(joined, timeout=JOIN_BOUND)


def secret_image(private: FakeRegistry) -> Image:
    image = make_image([make_layer(30_000, seed=71)])
    private.add_image("team/secret", image, tags=["1"])
    return image


async def test_a_public_request_does_not_get_a_private_manifest_being_fetched(pair: Pair) -> None:
    image = secret_image(pair.private)
    path = f"/v2/team/secret/manifests/{image.digest}"
    private, public = await while_held(pair.private, path, pair.get(path),
                                       pair.public.arrival(path).wait(),
                                       pair.get(path, private=True))
    assert private == (200, image.manifest)
    assert public[0] == 404 and image.manifest not in public[1]
    assert [r.path for r in pair.public.api_requests("GET")] == [path]


@pytest.mark.parametrize("status", [404, 503])
async def test_a_private_pull_does_not_get_a_public_fetch_failure(pair: Pair, status: int) -> None:
    image = secret_image(pair.private)
    path = f"/v2/team/secret/manifests/{image.digest}"
    public, private = await while_held(pair.public, path, pair.get(path, private=True),
                                       pair.private.arrival(path).wait(), pair.get(path),
                                       status)
    assert private == (200, image.manifest)
    assert public[0] == status


async def test_a_public_request_does_not_join_a_private_blob_download(pair: Pair) -> None:
    image = secret_image(pair.private)
    layer = image.layers[0]
    path = f"/v2/team/secret/blobs/{layer.digest}"
    private, public = await while_held(pair.private, path, pair.get(path),
                                       pair.public.arrival(path).wait(),
                                       pair.get(path, private=True))
    assert private == (200, layer.data)
    assert public[0] == 404 and layer.data not in public[1]


@pytest.mark.parametrize("status", [404, 503])
async def test_a_private_pull_does_not_get_a_public_download_failure(pair: Pair,
                                                                     status: int) -> None:
    image = secret_image(pair.private)
    layer = image.layers[0]
    path = f"/v2/team/secret/blobs/{layer.digest}"
    public, private = await while_held(pair.public, path, pair.get(path, private=True),
                                       readers(pair, layer.digest, 2), pair.get(path), status)
    assert private == (200, layer.data)
    assert public[0] == status


@pytest.mark.parametrize("kind", ["blobs", "manifests"])
async def test_another_repositorys_404_is_not_this_ones(pair: Pair, kind: str) -> None:
    """The same upstream, the same digest: a request for a repository that lacks it (here the
    fake's 404) must not make a concurrent pull of a repository that has it fail."""
    image = make_image([make_layer(20_000, seed=72)])
    pair.public.add_image("real/app", image)
    digest = image.layers[0].digest if kind == "blobs" else image.digest
    body = image.layers[0].data if kind == "blobs" else image.manifest
    bogus, real = f"/v2/bogus/{kind}/{digest}", f"/v2/real/app/{kind}/{digest}"
    joined = (readers(pair, digest, 2) if kind == "blobs"
              else pair.public.arrival(real).wait())
    first, second = await while_held(pair.public, bogus, pair.get(real), joined,
                                     pair.get(bogus), 404)
    assert first[0] == 404
    assert second == (200, body)


# ---- nothing tells a public route that a private blob is cached --------------------------------

async def test_a_malformed_range_does_not_reveal_a_private_blobs_size(pair: Pair) -> None:
    """A malformed Range is refused before anything is fetched; the refusal names the size only
    where the route may know it without asking: for a private blob on a public route it is the
    answer a digest nobody has gets (asking the public upstream would tell too: a 404, or a 503
    while it is down, where an unknown digest gets a 416)."""
    image = secret_image(pair.private)
    layer = image.layers[0]
    unknown = make_layer(30_000, seed=74)
    path = f"/v2/team/secret/blobs/{layer.digest}"
    assert await pair.get(path, private=True) == (200, layer.data)
    bad = {"Range": "bytes=oops"}

    async def refusal(url: str, headers: dict[str, str]) -> tuple[int, str | None, bytes]:
        async with pair.client.get(url, headers={**bad, **headers}) as resp:
            return resp.status, resp.headers.get("Content-Range"), await resp.read()

    held = await refusal(path, {})
    assert held == await refusal(f"/v2/team/secret/blobs/{unknown.digest}", {})
    assert held[:2] == (416, None)
    assert pair.public.requests == []  # nobody was asked
    # the route that may read it learns the size
    size = f"bytes */{len(layer.data)}"
    assert (await refusal(f"{path}?ns={PRIVATE}", basic("alice", "pw")))[:2] == (416, size)
    # and so does a public route once its upstream has confirmed the digest
    pair.public.add_blob(layer)
    assert (await pair.get(path, method="HEAD"))[0] == 200
    assert (await refusal(path, {}))[:2] == (416, size)


async def test_a_cached_private_digest_looks_absent_like_any_other(pair: Pair) -> None:
    """The same status, code and message as for a digest nobody has: HEAD (claim) and GET
    (download) must not say different things."""
    image = secret_image(pair.private)
    absent = make_image([make_layer(30_000, seed=73)])
    for kind, cached, unknown in (("blobs", image.layers[0].digest, absent.layers[0].digest),
                                  ("manifests", image.digest, absent.digest)):
        assert (await pair.get(f"/v2/team/secret/{kind}/{cached}", private=True))[0] == 200
        for method in ("GET", "HEAD"):
            seen = await pair.get(f"/v2/team/secret/{kind}/{cached}", method=method)
            never = await pair.get(f"/v2/team/secret/{kind}/{unknown}", method=method)
            assert seen[0] == 404
            assert seen == never, (kind, method)
