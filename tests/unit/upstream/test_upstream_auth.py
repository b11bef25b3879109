"""Upstream authentication, seen from both ends: edgecache's answers and the fake's request log."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from tests.fakes.registry import FakeRegistry
from tests.support.images import Image, make_image, make_layer
from tests.unit.conftest import Edge, MakeEdge

REPO = "team/app"


def image(seed: int) -> Image:
    return make_image([make_layer(20_000, seed), make_layer(30_000, seed + 1)])


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def password_file(tmp_path: Path, password: str) -> str:
    path = tmp_path / "password"
    path.write_text(password + "\n")  # the trailing newline is not part of the password
    return str(path)


async def pull(edge: Edge, img: Image, repo: str = REPO, tag: str = "latest") -> None:
    """What a client does: the manifest by tag, then every blob; all must be byte-exact."""
    async with edge.client.get(f"/v2/{repo}/manifests/{tag}") as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.read() == img.manifest
    for blob in img.blobs:
        async with edge.client.get(f"/v2/{repo}/blobs/{blob.digest}") as resp:
            assert resp.status == 200, await resp.text()
            assert await resp.read() == blob.data


# ---- bearer tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize("challenge_scope", [True, False], ids=["scope-in-challenge", "no-scope"])
async def test_anonymous_token_flow(fake: FakeRegistry, edge: Edge, challenge_scope: bool) -> None:
    img = image(1)
    fake.add_image(REPO, img)
    fake.require_bearer(challenge_scope=challenge_scope)

    await pull(edge, img)

    first, second, *rest = fake.requests
    assert first.authorization is None and first.status == 401
    assert len(fake.token_requests) == 1
    token_request = fake.token_requests[0]
    # Without a scope in the challenge, edgecache must build it itself.
    assert token_request.query["scope"] == f"repository:{REPO}:pull"
    assert token_request.query["service"] == "fake-registry"
    assert token_request.authorization is None  # anonymous: no credentials configured
    assert (second.method, second.path) == (first.method, first.path)
    assert second.authorization == "Bearer token-1" and second.status == 200
    assert rest and all(r.authorization == "Bearer token-1" and r.status == 200 for r in rest)


async def test_docker_hub_scope_uses_library_prefix(fake: FakeRegistry,
                                                    make_edge: MakeEdge) -> None:
    img = image(3)
    fake.add_image("library/alpine", img)
    fake.require_bearer(challenge_scope=False)
    edge = await make_edge(upstream="docker.io")

    await pull(edge, img, repo="alpine")

    assert [r.query["scope"] for r in fake.token_requests] == ["repository:library/alpine:pull"]
    assert all(r.path.startswith("/v2/library/alpine/") for r in fake.requests)


async def test_token_is_reused_across_requests(fake: FakeRegistry, edge: Edge) -> None:
    images = [image(10), image(20)]
    fake.add_image(REPO, images[0], tags=["one"])
    fake.add_image(REPO, images[1], tags=["two"])
    fake.require_bearer()

    await pull(edge, images[0], tag="one")
    await pull(edge, images[1], tag="two")
    for tag in ("one", "two", "one"):  # a tag is always checked upstream
        async with edge.client.head(f"/v2/{REPO}/manifests/{tag}") as resp:
            assert resp.status == 200

    assert len(fake.token_requests) == 1
    assert [r.status for r in fake.requests].count(401) == 1
    assert len(fake.requests) >= 10


async def test_concurrent_cold_requests_fetch_one_token(fake: FakeRegistry, edge: Edge) -> None:
    layers = [make_layer(10_000, seed) for seed in range(40, 50)]
    digests = [fake.add_blob(layer) for layer in layers]
    fake.require_bearer()

    async def get(digest: str) -> bytes:
        async with edge.client.get(f"/v2/{REPO}/blobs/{digest}") as resp:
            assert resp.status == 200
            return await resp.read()

    bodies = await asyncio.gather(*(get(d) for d in digests))

    assert bodies == [layer.data for layer in layers]
    assert len(fake.token_requests) == 1


async def test_tokens_are_per_repository_scope(fake: FakeRegistry, edge: Edge) -> None:
    img_a, img_b = image(60), image(70)
    fake.add_image("team/a", img_a)
    fake.add_image("team/b", img_b)
    fake.require_bearer()

    await pull(edge, img_a, repo="team/a")
    await pull(edge, img_b, repo="team/b")
    await pull(edge, img_a, repo="team/a")

    assert [r.query["scope"] for r in fake.token_requests] == [
        "repository:team/a:pull", "repository:team/b:pull"]


async def test_revoked_token_is_refreshed_once(fake: FakeRegistry, edge: Edge) -> None:
    img = image(80)
    fake.add_image(REPO, img)
    fake.require_bearer()
    await pull(edge, img)
    assert len(fake.token_requests) == 1
    before = len(fake.requests)

    fake.revoke_tokens()  # expired or revoked upstream: the cached token now gets a 401
    extra = make_layer(15_000, 81)
    fake.add_blob(extra)
    async with edge.client.get(f"/v2/{REPO}/blobs/{extra.digest}") as resp:
        assert resp.status == 200
        assert await resp.read() == extra.data

    assert len(fake.token_requests) == 2
    refused, retried = fake.requests[before:]
    assert refused.authorization == "Bearer token-1" and refused.status == 401
    assert retried.authorization == "Bearer token-2" and retried.status == 200

    # The fresh token is reused in turn.
    async with edge.client.head(f"/v2/{REPO}/manifests/latest") as resp:
        assert resp.status == 200
    assert len(fake.token_requests) == 2
    assert fake.requests[-1].authorization == "Bearer token-2"


async def test_expired_token_is_not_reused(fake: FakeRegistry, edge: Edge) -> None:
    """`expires_in` is honoured: once it has passed, the token is fetched anew."""
    img = image(90)
    fake.add_image(REPO, img)
    fake.require_bearer(expires_in=1)  # edgecache keeps it for half of that at most
    async with edge.client.head(f"/v2/{REPO}/manifests/latest") as resp:
        assert resp.status == 200
    assert len(fake.token_requests) == 1

    # The scenario is time passing (the token's lifetime), not an event to wait for.
    await asyncio.sleep(0.75)
    async with edge.client.head(f"/v2/{REPO}/manifests/latest") as resp:
        assert resp.status == 200

    assert len(fake.token_requests) == 2
    assert fake.requests[-1].authorization == "Bearer token-2"
    assert all(r.authorization != "Bearer token-1" for r in fake.requests[2:])


async def test_basic_credentials_are_sent_to_the_token_realm(
        fake: FakeRegistry, make_edge: MakeEdge, tmp_path: Path) -> None:
    img = image(100)
    fake.add_image(REPO, img)
    fake.require_bearer(credentials=("alice", "s3cret"))
    edge = await make_edge(username="alice", password_file=password_file(tmp_path, "s3cret"),
                           access="public")

    await pull(edge, img)

    assert [r.authorization for r in fake.token_requests] == [basic("alice", "s3cret")]
    # The registry itself only ever sees the token.
    assert all(r.authorization in (None, "Bearer token-1") for r in fake.requests)


async def test_token_realm_refusing_credentials_is_denied(
        fake: FakeRegistry, make_edge: MakeEdge, tmp_path: Path) -> None:
    fake.add_image(REPO, image(110))
    fake.require_bearer(credentials=("alice", "s3cret"))
    edge = await make_edge(username="alice", password_file=password_file(tmp_path, "wrong"),
                           access="public")

    async with edge.client.get(f"/v2/{REPO}/manifests/latest") as resp:
        assert resp.status == 403
        assert (await resp.json())["errors"][0]["code"] == "DENIED"
    assert edge.blob_files() == []


# ---- basic auth ---------------------------------------------------------------------------------


async def test_basic_auth_upstream(fake: FakeRegistry, make_edge: MakeEdge,
                                   tmp_path: Path) -> None:
    img = image(120)
    fake.add_image(REPO, img)
    fake.require_basic("bob", "hunter2")
    edge = await make_edge(username="bob", password_file=password_file(tmp_path, "hunter2"),
                           access="public")

    await pull(edge, img)

    first, *rest = fake.requests
    assert first.authorization is None and first.status == 401
    # After the one challenge, credentials go with every request.
    assert rest and all(r.authorization == basic("bob", "hunter2") for r in rest)
    assert all(r.status == 200 for r in rest)
    assert fake.token_requests == []


async def test_basic_auth_upstream_without_credentials_is_denied(
        fake: FakeRegistry, edge: Edge) -> None:
    fake.add_image(REPO, image(130))
    fake.require_basic("bob", "hunter2")

    async with edge.client.get(f"/v2/{REPO}/manifests/latest") as resp:
        assert resp.status == 403
        assert (await resp.json())["errors"][0]["code"] == "DENIED"
    assert all(r.authorization is None for r in fake.requests)


async def test_token_locks_and_tokens_stay_bounded_over_many_repositories() -> None:
    """A scope is a repository, named by clients: the lock map keeps only scopes a request
    holds or waits on, and tokens are bounded (least recently used dropped)."""
    from edgecache.upstream.auth import Challenge, TokenCache

    fetched: list[str] = []
    release = asyncio.Event()

    async def fetch(challenge: Challenge, scope: str) -> tuple[str, float]:
        fetched.append(scope)
        if scope == "repository:slow:pull":
            await release.wait()
        return f"token-{scope}", 300.0

    cache = TokenCache(fetch, limit=64)
    challenge = Challenge("bearer", {"realm": "http://127.0.0.1/token"})
    for i in range(500):
        await cache.obtain(challenge, f"repository:r{i}:pull", None)
        assert cache.fetching == 0
    assert len(cache) == 64
    assert cache.get("repository:r499:pull") == "token-repository:r499:pull"
    assert cache.get("repository:r0:pull") is None

    fetched.clear()
    waiters = [asyncio.create_task(cache.obtain(challenge, "repository:slow:pull", None))
               for _ in range(20)]
    for _ in range(100):  # bounded: until every waiter has reached the lock
        if fetched:
            break
        await asyncio.sleep(0)
    assert cache.fetching == 1
    waiters[-1].cancel()  # a waiter that leaves does not keep the lock alive
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert fetched == ["repository:slow:pull"]  # still one fetch per scope at a time
    assert results[:-1] == ["token-repository:slow:pull"] * 19
    assert isinstance(results[-1], asyncio.CancelledError)
    assert cache.fetching == 0
