"""The status page's JSON twin, its HTML, `/v2/_catalog`, and who sees what, in-process.

edgecache runs (build_app) in front of the fake upstream; the metrics listener's app is built
the way `server.py` builds it (metrics_app + add_status_routes over the same components).
Private content: `fake.test` is `access: authenticated`, `public.test` public (the same fake
behind two names); only a viewer with valid client credentials sees the first one's images,
on either listener, in the page, its JSON and the catalog.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from edgecache.app import AUTH, READY, STATUS
from edgecache.web.observability import metrics_app
from edgecache.web.status import add_status_routes
from tests.fakes.registry import FakeRegistry
from tests.support.images import Blob, Image, make_image, make_index, make_layer
from tests.unit.conftest import UPSTREAM, Edge, MakeEdge
from tests.unit.web.test_security_access import (
    PASSWORD,
    PUBLIC,
    TOKEN,
    USER,
    auth_files,  # noqa: F401 - a fixture
    basic,
)

PRIVATE = UPSTREAM
CREDENTIALS = {"Authorization": basic(USER, PASSWORD)}


async def get(client: TestClient[web.Request, web.Application], path: str,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with client.get(path, headers=headers or {}, allow_redirects=False) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def doc(client: TestClient[web.Request, web.Application], path: str,
              headers: dict[str, str] | None = None) -> Any:
    status, _, body = await get(client, path, headers)
    assert status == 200, body[:300]
    return json.loads(body)


async def pull(edge: Edge, name: str, image: Image, headers: dict[str, str] | None = None,
               ) -> None:
    """A whole pull: the manifest by tag, then every blob."""
    repo, _, tag = name.rpartition(":")
    for path in [f"/v2/{repo}/manifests/{tag}",
                 *(f"/v2/{repo}/blobs/{blob.digest}" for blob in image.blobs)]:
        status, _, body = await get(edge.client, path, headers)
        assert status == 200, (path, body[:200])


def names(page: dict[str, Any]) -> list[str]:
    return [f"{r['upstream']}/{r['repository']}:{r['tag']}" for r in page["images"]["rows"]]


@pytest.fixture
async def warm(fake: FakeRegistry, make_edge: MakeEdge) -> tuple[Edge, dict[str, Image]]:
    """Three images of one public upstream, pulled; `team/big` pinned by the config."""
    images = {"team/app:1.0": make_image([make_layer(30_000, 11), make_layer(2000, 12)]),
              "team/big:2": make_image([make_layer(90_000, 13)], arch="arm64"),
              "tools/tiny:latest": make_image([make_layer(500, 14)])}
    for name, image in images.items():
        repo, _, tag = name.rpartition(":")
        fake.add_image(repo, image, tags=[tag])
    edge = await make_edge(top={"pins": [f"{UPSTREAM}/team/big:2"]})
    for name, image in images.items():
        await pull(edge, name, image)
    await pull(edge, "team/app:1.0", images["team/app:1.0"])  # hits: from the cache
    return edge, images


async def test_the_json_twin_shows_disk_rates_upstreams_and_images(
        warm: tuple[Edge, dict[str, Image]]) -> None:
    edge, images = warm
    page = await doc(edge.client, "/?format=json")
    held = sum(len(b.data) for image in images.values() for b in image.blobs) + sum(
        len(image.manifest) for image in images.values())
    assert page["disk"]["used_bytes"] == held
    assert page["disk"]["quota_bytes"] > 0 and page["disk"]["free_bytes"] > 0
    # 3 manifests + 7 blobs fetched, then team/app again (its manifest and 3 blobs): 4 hits
    for window in ("last_hour", "since_start"):
        rate = page["rates"][window]
        assert rate["requests"] == 14 and rate["hit_ratio"] == round(4 / 14, 4)
        assert rate["saved_bytes"] == sum(len(b.data) for b in images["team/app:1.0"].blobs)
    assert page["upstreams"] == [{"name": UPSTREAM, "up": True, "suspect": False,
                                  "last_error": "", "access": "public",
                                  "ratelimit": {"remaining": None, "limit": None}}]
    assert page["peers"] == {"cluster": False, "nodes": []}
    assert page["viewer"] == {"authenticated": False, "hidden_upstreams": 0}
    assert names(page) == [f"{UPSTREAM}/team/app:1.0", f"{UPSTREAM}/team/big:2",
                           f"{UPSTREAM}/tools/tiny:latest"]
    big = page["images"]["rows"][1]
    image = images["team/big:2"]
    assert big == {"upstream": UPSTREAM, "repository": "team/big", "tag": "2",
                   "digest": image.digest, "media_type": image.media_type, "held": True,
                   "platforms": ["linux/arm64"],
                   "size_bytes": len(image.manifest) + sum(len(b.data) for b in image.blobs),
                   "last_pulled": big["last_pulled"], "pinned": True, "local": False}
    assert isinstance(big["last_pulled"], float)
    assert [r["pinned"] for r in page["images"]["rows"]] == [False, True, False]


async def test_search_sort_and_pages(warm: tuple[Edge, dict[str, Image]]) -> None:
    edge, _ = warm
    assert names(await doc(edge.client, "/?format=json&q=team/")) == [
        f"{UPSTREAM}/team/app:1.0", f"{UPSTREAM}/team/big:2"]
    assert names(await doc(edge.client, "/?format=json&q=tiny:lat")) == [
        f"{UPSTREAM}/tools/tiny:latest"]
    assert names(await doc(edge.client, "/?format=json&q=%25")) == []  # LIKE's % is literal
    assert names(await doc(edge.client, "/?format=json&q=_")) == []
    by_size = await doc(edge.client, "/?format=json&sort=size&order=desc")
    assert [r["repository"] for r in by_size["images"]["rows"]] == [
        "team/big", "team/app", "tools/tiny"]
    first = await doc(edge.client, "/?format=json&sort=size&n=2")
    assert [r["repository"] for r in first["images"]["rows"]] == ["tools/tiny", "team/app"]
    assert first["images"]["more"] is True
    second = await doc(edge.client, first["images"]["next"])
    assert [r["repository"] for r in second["images"]["rows"]] == ["team/big"]
    assert second["images"]["more"] is False and second["images"]["next"] is None
    # nonsense parameters are defaults, never an error
    assert names(await doc(edge.client, "/?format=json&n=-3&offset=x&sort=evil;drop")) == \
        names(await doc(edge.client, "/?format=json"))


async def test_an_image_page_lists_its_blobs_and_referrers(
        fake: FakeRegistry, warm: tuple[Edge, dict[str, Image]]) -> None:
    edge, images = warm
    image = images["team/app:1.0"]
    detail = await doc(edge.client, f"/image?upstream={UPSTREAM}&repository=team/app&tag=1.0"
                       "&format=json")
    assert detail["image"]["digest"] == image.digest
    assert detail["blobs"] == [
        {"digest": image.digest, "size_bytes": len(image.manifest),
         "media_type": image.media_type, "cached": True},
        *({"digest": b.digest, "size_bytes": len(b.data), "media_type": b.media_type,
           "cached": True} for b in image.blobs)]
    assert detail["referrers"] == []
    status, _, body = await get(edge.client, f"/image?upstream={UPSTREAM}&repository=team/app"
                                "&tag=1.0")
    assert status == 200 and b"no referrers cached" in body and image.digest.encode() in body
    assert (await get(edge.client, f"/image?upstream={UPSTREAM}&repository=team/app&tag=9"
                      "&format=json"))[0] == 404
    assert (await get(edge.client, "/image"))[0] == 404


async def test_an_index_shows_its_platforms_and_what_is_not_cached(
        fake: FakeRegistry, edge: Edge) -> None:
    index = make_index([make_image([make_layer(1000, 21)], "amd64"),
                        make_image([make_layer(1000, 22)], "arm64")])
    fake.add_index("team/multi", index, tags=["3"])
    status, _, _ = await get(edge.client, "/v2/team/multi/manifests/3")
    assert status == 200
    amd64 = index.images[0]
    await get(edge.client, f"/v2/team/multi/manifests/{amd64.digest}")
    page = await doc(edge.client, "/?format=json")
    assert page["images"]["rows"][0]["platforms"] == ["linux/amd64", "linux/arm64"]
    detail = await doc(edge.client, f"/image?upstream={UPSTREAM}&repository=team/multi&tag=3"
                       "&format=json")
    cached = {b["digest"]: b["cached"] for b in detail["blobs"]}
    assert cached[index.digest] and cached[amd64.digest]
    assert not cached[index.images[1].digest]  # never pulled: listed, not cached
    assert set(cached) == {index.digest, *(i.digest for i in index.images),
                           amd64.config.digest, amd64.layers[0].digest}


async def test_the_html_page_escapes_what_it_shows(warm: tuple[Edge, dict[str, Image]]) -> None:
    edge, _ = warm
    status, headers, body = await get(edge.client, "/?q=%3Cscript%3Ealert(1)%3C/script%3E")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"<script" not in body and b"&lt;script&gt;" in body
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    status, _, body = await get(edge.client, "/")
    assert b"team/big" in body and b"pinned" in body and b"cluster mode off" in body


async def test_a_rate_limit_budget_is_shown(fake: FakeRegistry, edge: Edge) -> None:
    fake.add_image("team/app", make_image([make_layer(100, 31)]), tags=["1"])
    fake.extra_headers = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600"}
    assert (await get(edge.client, "/v2/team/app/manifests/1"))[0] == 200
    page = await doc(edge.client, "/?format=json")
    assert page["upstreams"][0]["ratelimit"] == {"remaining": 76, "limit": 100}


async def test_stale_tag_lists_say_so(fake: FakeRegistry, edge: Edge) -> None:
    fake.add_image("team/app", make_image([make_layer(100, 41)]), tags=["v1", "v2"])
    assert (await get(edge.client, "/v2/team/app/manifests/v1"))[0] == 200
    status, headers, _ = await get(edge.client, "/v2/team/app/tags/list")
    assert status == 200 and headers["X-Edgecache-Cache"] == "miss" and "Warning" not in headers
    fake.down = True
    status, headers, body = await get(edge.client, "/v2/team/app/tags/list")
    assert status == 200 and json.loads(body)["tags"] == ["v1"]
    assert headers["X-Edgecache-Cache"] == "stale"
    assert headers["Warning"].startswith('110 edgecache "Response is Stale')


# ---- who sees what -------------------------------------------------------------------------

@pytest.fixture
async def locked(fake: FakeRegistry, make_edge: MakeEdge,
                 auth_files: dict[str, Path]) -> Edge:  # noqa: F811 - the fixture's value
    """`fake.test` authenticated, `public.test` public; one image pulled through each."""
    fake.add_image("team/secret", make_image([make_layer(1000, 51)]), tags=["1"])
    fake.add_image("team/open", make_image([make_layer(1000, 52)]), tags=["1"])
    edge = await make_edge(access="authenticated", top={
        "auth": {"htpasswd_file": str(auth_files["htpasswd"]),
                 "tokens_file": str(auth_files["tokens"])},
        "upstreams": {PUBLIC: {"url": fake.url}}})
    for path in (f"/v2/{PRIVATE}/team/secret/manifests/1", f"/v2/{PUBLIC}/team/open/manifests/1"):
        assert (await get(edge.client, path, CREDENTIALS))[0] == 200
    return edge


@pytest.fixture
async def scrapes(locked: Edge, aiohttp_client: AiohttpClient
                  ) -> TestClient[web.Request, web.Application]:
    """The metrics listener's app over `locked`'s components, as server.py builds it."""
    main = locked.client.app
    assert main is not None
    app = metrics_app(locked.metrics, lambda: main.get(READY))
    add_status_routes(app, lambda: main.get(STATUS), main[AUTH], challenge=False)
    return await aiohttp_client(app)


async def anonymous_token(edge: Edge) -> dict[str, str]:
    token = (await doc(edge.client, "/v2/token?service=edgecache"))["token"]
    return {"Authorization": f"Bearer {token}"}


async def test_the_client_listener_asks_for_credentials_and_hides_private_images(
        locked: Edge) -> None:
    status, headers, _ = await get(locked.client, "/")
    assert status == 401 and headers["WWW-Authenticate"].startswith('Basic realm="')
    wrong = {"Authorization": basic(USER, "wrong")}
    assert (await get(locked.client, "/?format=json", wrong))[0] == 401
    anonymous = await anonymous_token(locked)
    page = await doc(locked.client, "/?format=json", anonymous)
    assert names(page) == [f"{PUBLIC}/team/open:1"]
    assert [u["name"] for u in page["upstreams"]] == [PUBLIC]  # its errors may name repos
    assert page["viewer"] == {"authenticated": False, "hidden_upstreams": 1}
    for viewer in (CREDENTIALS, {"Authorization": f"Bearer {TOKEN}"}):
        page = await doc(locked.client, "/?format=json", viewer)
        assert names(page) == [f"{PRIVATE}/team/secret:1", f"{PUBLIC}/team/open:1"]
        assert page["viewer"] == {"authenticated": True, "hidden_upstreams": 0}
    secret = f"/image?upstream={PRIVATE}&repository=team/secret&tag=1&format=json"
    assert (await get(locked.client, secret, anonymous))[0] == 404
    assert (await doc(locked.client, secret, CREDENTIALS))["image"]["repository"] == "team/secret"


async def test_the_metrics_listener_never_lists_private_images_without_credentials(
        locked: Edge, scrapes: TestClient[web.Request, web.Application]) -> None:
    for path in ("/?format=json", f"/?format=json&q={PRIVATE}", "/?format=json&q=secret"):
        page = await doc(scrapes, path)
        assert all(r["upstream"] == PUBLIC for r in page["images"]["rows"])
        assert page["viewer"]["hidden_upstreams"] == 1
    status, _, body = await get(scrapes, "/")
    assert status == 200 and b"team/secret" not in body and b"team/open" in body
    secret = f"/image?upstream={PRIVATE}&repository=team/secret&tag=1"
    status, _, body = await get(scrapes, secret)
    assert status == 404 and b"team/secret" in body  # it echoes the query, names nothing held
    assert (await get(scrapes, secret + "&format=json"))[0] == 404
    assert (await get(scrapes, "/?format=json", {"Authorization": basic(USER, "no")}))[0] == 200
    page = await doc(scrapes, "/?format=json", CREDENTIALS)
    assert names(page) == [f"{PRIVATE}/team/secret:1", f"{PUBLIC}/team/open:1"]
    assert (await get(scrapes, "/login"))[0] == 401
    status, headers, _ = await get(scrapes, "/login", CREDENTIALS)
    assert status == 303 and headers["Location"] == "/"
    assert (await get(scrapes, "/metrics"))[0] == 200  # the listener's own routes still answer


async def test_the_catalog_lists_private_repositories_only_with_credentials(
        locked: Edge) -> None:
    status, headers, _ = await get(locked.client, "/v2/_catalog")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer ")
    anonymous = await anonymous_token(locked)
    assert await doc(locked.client, "/v2/_catalog", anonymous) == {
        "repositories": [f"{PUBLIC}/team/open"]}
    assert await doc(locked.client, "/v2/_catalog", CREDENTIALS) == {
        "repositories": [f"{PRIVATE}/team/secret", f"{PUBLIC}/team/open"]}
    assert (await get(locked.client, f"/v2/_catalog?ns={PRIVATE}", anonymous))[0] == 401
    assert (await get(locked.client, f"/v2/{PRIVATE}/_catalog", anonymous))[0] == 401
    assert await doc(locked.client, f"/v2/_catalog?ns={PRIVATE}", CREDENTIALS) == {
        "repositories": ["team/secret"]}
    assert await doc(locked.client, f"/v2/{PUBLIC}/_catalog", anonymous) == {
        "repositories": ["team/open"]}
    status, _, body = await get(locked.client, "/v2/_catalog?ns=elsewhere.test", CREDENTIALS)
    assert status == 404 and json.loads(body)["errors"][0]["code"] == "NAME_UNKNOWN"


async def test_the_catalog_pages_in_byte_order(fake: FakeRegistry, edge: Edge) -> None:
    repos = ["b/z", "B/upper", "a/b", "a-b/c", "a/a", "ab/c"]
    for i, repo in enumerate(repos):
        repo = repo.lower()
        fake.add_image(repo, make_image([make_layer(100, 60 + i)]), tags=["1", "2"])
        for tag in ("1", "2"):
            assert (await get(edge.client, f"/v2/{repo}/manifests/{tag}"))[0] == 200
    expected = sorted({r.lower() for r in repos})
    assert await doc(edge.client, f"/v2/_catalog?ns={UPSTREAM}") == {"repositories": expected}
    everything = await doc(edge.client, "/v2/_catalog")
    assert everything == {"repositories": [f"{UPSTREAM}/{r}" for r in expected]}
    pages, path = [], f"/v2/{UPSTREAM}/_catalog?n=2"
    for _ in range(10):  # bounded: 3 pages expected
        status, headers, body = await get(edge.client, path)
        assert status == 200
        pages.append(json.loads(body)["repositories"])
        if "Link" not in headers:
            break
        path = headers["Link"].split(">")[0].lstrip("<")
    assert pages == [expected[0:2], expected[2:4], expected[4:6]]
    after = await doc(edge.client, f"/v2/_catalog?n=2&last={UPSTREAM}/a/b")
    assert after == {"repositories": [f"{UPSTREAM}/{r}" for r in expected if r > "a/b"][:2]}
    assert await doc(edge.client, "/v2/_catalog?last=zzz") == {"repositories": []}


async def test_an_image_page_reads_manifests_only_never_a_layer(
        fake: FakeRegistry, edge: Edge) -> None:
    """A layer that happens to be JSON shaped like a manifest is bytes, not a manifest: the
    page never reads it (a layer may be gigabytes) and lists nothing it would name."""
    named = "sha256:" + "ab" * 32
    layer = Blob(json.dumps({"schemaVersion": 2, "layers": [
        {"digest": named, "size": 1, "mediaType": "x"}]}).encode())
    image = make_image([layer])
    fake.add_image("team/json", image, tags=["1"])
    await pull(edge, "team/json:1", image)
    detail = await doc(edge.client, f"/image?upstream={UPSTREAM}&repository=team/json&tag=1"
                       "&format=json")
    assert [b["digest"] for b in detail["blobs"]] == [image.digest, image.config.digest,
                                                     layer.digest]



async def test_a_public_image_does_not_show_what_only_a_private_pull_cached(
        fake: FakeRegistry, locked: Edge) -> None:
    """The claim rule (proxy/claims.py) on the page: a layer a public image shares with a
    private one is "not cached" to the public route until that route's upstream has confirmed
    it (as a pull through the public route would have to)."""
    shared = make_layer(5000, 81)
    secret = make_image([shared, make_layer(1000, 82)])
    public = make_image([shared])
    fake.add_image("team/s2", secret, tags=["1"])
    fake.add_image("team/p2", public, tags=["1"])
    await pull(locked, f"{PRIVATE}/team/s2:1", secret, CREDENTIALS)
    assert (await get(locked.client, f"/v2/{PUBLIC}/team/p2/manifests/1"))[0] == 200
    anonymous = await anonymous_token(locked)
    page = f"/image?upstream={PUBLIC}&repository=team/p2&tag=1&format=json"

    def cached(detail: dict[str, Any]) -> dict[str, tuple[bool, int | None]]:
        return {b["digest"]: (b["cached"], b["size_bytes"]) for b in detail["blobs"]}

    assert cached(await doc(locked.client, page, anonymous))[shared.digest] == (False, None)

    async def listed_size() -> int:
        rows = (await doc(locked.client, "/?format=json&q=p2", anonymous))["images"]["rows"]
        return int(rows[0]["size_bytes"])

    assert await listed_size() == len(public.manifest)  # the layer is not counted either
    for blob in public.blobs:  # the public route's own pull: its upstream confirms the layer
        assert (await get(locked.client, f"/v2/{PUBLIC}/team/p2/blobs/{blob.digest}",
                          anonymous))[0] == 200
    assert cached(await doc(locked.client, page, anonymous))[shared.digest] == (
        True, len(shared.data))
    assert await listed_size() == len(public.manifest) + sum(len(b.data) for b in public.blobs)
