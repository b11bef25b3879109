"""Content from an authenticated upstream is not readable by digest through a public route."""

from __future__ import annotations

import base64
from pathlib import Path

import bcrypt
from pytest_aiohttp import AiohttpClient, AiohttpServer

from edgecache import config as config_mod
from edgecache.app import build_app
from edgecache.metrics import Metrics
from tests.fakes.registry import FakeRegistry
from tests.support.images import make_image, make_layer

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
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    htpasswd.write_text(f"alice:{hashed}\n")
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
