"""Who may pull: client credentials on `access: authenticated` upstreams, in-process.

edgecache holds two upstreams (the same fake behind two names): `fake.test`, authenticated,
and `public.test`, public. Clients log in with HTTP Basic (a bcrypt htpasswd file, `$2y$` as
`htpasswd -B` writes it) or a static bearer token. A refused request never reaches the upstream;
a public route ignores whatever Authorization it is sent; and the decision follows the upstream
a request resolves to, whichever routing style names it (path prefix, `?ns=`, default).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer

from tests.fakes.registry import BlobFault, FakeRegistry
from tests.support.htpasswd import entry
from tests.support.images import Image, make_image, make_layer
from tests.support.waiting import eventually
from tests.unit.conftest import Edge, MakeEdge

PRIVATE = "fake.test"
PUBLIC = "public.test"
REPO = "team/app"
USER, PASSWORD = "alice", "correct horse battery staple"
TOKEN = "tok-3f9a1c7e5b2d4a6c8e0f"
# /v2/ and private routes challenge with Bearer, naming edgecache's own token endpoint at the
# address the client used (issue 14: dockerd gives up on a mirror that challenges with Basic)
CHALLENGE = re.compile(r'Bearer realm="http://127\.0\.0\.1:\d+/v2/token",service="edgecache"'
                       r'(,scope="repository:[a-z0-9./_-]+:pull")?(,error="[a-z_]+")?')


def challenged(header: str) -> bool:
    return CHALLENGE.fullmatch(header) is not None


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def htpasswd_entry(user: str, password: str) -> str:
    return entry(user, password)


@pytest.fixture
def auth_files(tmp_path: Path) -> dict[str, Path]:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"# clients\n{htpasswd_entry(USER, PASSWORD)}\n"
                        "legacy:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"  # not bcrypt: ignored
                        "plain:plaintext\n")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ci-runner:{TOKEN}\n# a comment\nbare-token-without-a-name\n")
    for path in (htpasswd, tokens):
        path.chmod(0o600)
    return {"htpasswd": htpasswd, "tokens": tokens}


@pytest.fixture
async def locked(fake: FakeRegistry, make_edge: MakeEdge, auth_files: dict[str, Path]) -> Edge:
    """`fake.test` authenticated (the default upstream), `public.test` public."""
    return await make_edge(access="authenticated", top={
        "auth": {"htpasswd_file": str(auth_files["htpasswd"]),
                 "tokens_file": str(auth_files["tokens"])},
        "upstreams": {PUBLIC: {"url": fake.url}},
    })


def seed(fake: FakeRegistry) -> Image:
    image = make_image([make_layer(40_000, seed=1), make_layer(3000, seed=2)])
    fake.add_image(REPO, image, tags=("1.0",))
    return image


async def get(edge: Edge, path: str, headers: dict[str, str] | None = None,
              method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    async with edge.client.request(method, path, headers=headers or {}) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def assert_refused(status: int, headers: dict[str, str], body: bytes, head: bool = False) -> None:
    assert status == 401
    assert challenged(headers["WWW-Authenticate"])
    if not head:
        doc = json.loads(body)
        assert doc["errors"][0]["code"] == "UNAUTHORIZED"


# ---- the API root ------------------------------------------------------------------------------

async def test_api_root_challenges_when_any_upstream_is_authenticated(locked: Edge) -> None:
    assert_refused(*await get(locked, "/v2/"))
    status, headers, _ = await get(locked, "/v2/", method="HEAD")
    assert status == 401 and challenged(headers["WWW-Authenticate"])
    assert (await get(locked, "/v2/", {"Authorization": basic(USER, PASSWORD)}))[0] == 200
    assert (await get(locked, "/v2/", {"Authorization": f"Bearer {TOKEN}"}))[0] == 200
    assert (await get(locked, "/v2", {"Authorization": basic(USER, PASSWORD)}))[0] == 200


async def test_api_root_is_open_when_every_upstream_is_public(edge: Edge) -> None:
    assert (await get(edge, "/v2/"))[0] == 200
    assert (await get(edge, "/v2/", {"Authorization": "Basic !!garbage!!"}))[0] == 200


# (Authorization header, why it must be refused)
BAD_CREDENTIALS = [
    (None, "none"),
    (basic(USER, "wrong password"), "wrong password"),
    (basic(USER, PASSWORD.upper()), "password differs in case"),
    (basic(USER, PASSWORD + " "), "password with a trailing space"),
    (basic("mallory", PASSWORD), "unknown user"),
    (basic(USER.upper(), PASSWORD), "user name differs in case"),
    (basic("legacy", "password"), "a non-bcrypt entry is ignored"),
    (basic("plain", "plaintext"), "a plain-text entry is ignored"),
    (basic("", ""), "empty user and password"),
    ("Basic " + base64.b64encode(USER.encode()).decode(), "no colon"),
    ("Basic not-base64!!", "not base64"),
    ("Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), "not UTF-8"),
    ("Basic", "no value"),
    (f"Bearer {TOKEN}x", "token with a suffix"),
    (f"Bearer {TOKEN[:-1]}", "token prefix"),
    ("Bearer ", "empty token"),
    ("Bearer ci-runner", "the token's name, not the token"),
    (f"Token {TOKEN}", "unknown scheme"),
    (f"Digest username={USER!r}", "digest scheme"),
    (TOKEN, "a token without a scheme"),
]


@pytest.mark.parametrize(("header", "why"), BAD_CREDENTIALS, ids=[w for _, w in BAD_CREDENTIALS])
async def test_bad_credentials_are_refused_before_any_upstream_request(
        fake: FakeRegistry, locked: Edge, header: str | None, why: str) -> None:
    image = seed(fake)
    headers = {"Authorization": header} if header is not None else {}
    for path in (f"/v2/{REPO}/manifests/1.0", f"/v2/{REPO}/manifests/{image.digest}",
                 f"/v2/{REPO}/blobs/{image.layers[0].digest}", f"/v2/{REPO}/tags/list",
                 "/v2/"):
        assert_refused(*await get(locked, path, headers))
        status, response_headers, _ = await get(locked, path, headers, method="HEAD")
        assert status == 401 and challenged(response_headers["WWW-Authenticate"])
    assert fake.requests == []
    assert locked.blob_files() == []


@pytest.mark.parametrize("header", [basic(USER, PASSWORD), f"Bearer {TOKEN}",
                                    "Bearer bare-token-without-a-name",
                                    f"basic {basic(USER, PASSWORD).split()[1]}",
                                    f"BEARER  {TOKEN} "])
async def test_valid_credentials_pull_byte_identical_content(
        fake: FakeRegistry, locked: Edge, header: str) -> None:
    image = seed(fake)
    auth = {"Authorization": header}
    status, _, body = await get(locked, f"/v2/{REPO}/manifests/1.0", auth)
    assert status == 200 and body == image.manifest
    for blob in image.blobs:
        status, _, body = await get(locked, f"/v2/{REPO}/blobs/{blob.digest}", auth)
        assert status == 200 and body == blob.data
    status, _, body = await get(locked, f"/v2/{REPO}/tags/list", auth)
    assert status == 200 and json.loads(body)["tags"] == ["1.0"]
    # the client's credentials are edgecache's business: never forwarded upstream
    assert fake.requests and all(r.authorization is None for r in fake.requests)
    # and once cached, content still needs credentials
    assert_refused(*await get(locked, f"/v2/{REPO}/blobs/{image.layers[0].digest}"))


async def test_a_remembered_login_does_not_open_the_door_to_another_password(
        fake: FakeRegistry, locked: Edge) -> None:
    seed(fake)
    assert (await get(locked, "/v2/", {"Authorization": basic(USER, PASSWORD)}))[0] == 200
    for _ in range(3):
        assert_refused(*await get(locked, "/v2/", {"Authorization": basic(USER, "guess")}))
        assert (await get(locked, "/v2/", {"Authorization": basic(USER, PASSWORD)}))[0] == 200


async def test_public_upstream_needs_nothing_and_ignores_any_authorization(
        fake: FakeRegistry, locked: Edge) -> None:
    image = seed(fake)
    for header in (None, "Basic !!!", basic(USER, "wrong"), "Bearer nonsense", "Negotiate xyz",
                   basic(USER, PASSWORD)):
        headers = {"Authorization": header} if header is not None else {}
        status, _, body = await get(locked, f"/v2/{PUBLIC}/{REPO}/manifests/1.0", headers)
        assert status == 200 and body == image.manifest, header
        status, _, body = await get(locked, f"/v2/{REPO}/manifests/1.0?ns={PUBLIC}", headers)
        assert status == 200 and body == image.manifest, header
    assert all(r.authorization is None for r in fake.requests)


# (request target, the upstream it resolves to, status with valid credentials): the decision
# follows the resolved upstream
ROUTES = [
    (f"/v2/{REPO}/manifests/1.0", PRIVATE, 200),  # the default upstream
    (f"/v2/{PRIVATE}/{REPO}/manifests/1.0", PRIVATE, 200),
    (f"/v2/FAKE.TEST/{REPO}/manifests/1.0", PRIVATE, 200),  # registry names: any case
    (f"/v2/{REPO}/manifests/1.0?ns={PRIVATE}", PRIVATE, 200),
    (f"/v2/{REPO}/manifests/1.0?ns=FAKE.test", PRIVATE, 200),
    (f"/v2/{PRIVATE}/{REPO}/manifests/1.0?ns={PRIVATE}", PRIVATE, 200),
    # ns wins: repository `public.test/team/app` at fake.test, which does not have it
    (f"/v2/{PUBLIC}/{REPO}/manifests/1.0?ns={PRIVATE}", PRIVATE, 404),
    (f"/v2/{PUBLIC}/{REPO}/manifests/1.0", PUBLIC, 200),
    (f"/v2/{REPO}/manifests/1.0?ns={PUBLIC}", PUBLIC, 200),
]


@pytest.mark.parametrize(("target", "upstream", "status"), ROUTES,
                         ids=[t for t, _, _ in ROUTES])
async def test_every_routing_style_reaches_the_same_decision(
        fake: FakeRegistry, locked: Edge, target: str, upstream: str, status: int) -> None:
    seed(fake)
    resp = await locked.raw("GET", target)
    if upstream == PRIVATE:
        assert resp.status == 401, target
        assert challenged(resp.headers["www-authenticate"])
        assert fake.requests == []
    else:
        assert resp.status == 200, target
    resp = await locked.raw("GET", target, {"Authorization": basic(USER, PASSWORD)})
    assert resp.status == status, target


async def test_credential_files_are_reread_when_they_change(
        fake: FakeRegistry, locked: Edge, auth_files: dict[str, Path]) -> None:
    """Rotation without a restart: a new user and token work at once, removed ones stop."""
    seed(fake)
    old = {"Authorization": basic(USER, PASSWORD)}
    assert (await get(locked, "/v2/", old))[0] == 200
    htpasswd, tokens = auth_files["htpasswd"], auth_files["tokens"]
    htpasswd.write_text(htpasswd_entry("bob", "new secret") + "\n")
    tokens.write_text("rotated-token-1234567890\n")
    for path in (htpasswd, tokens):  # a distinct modification time, whatever the clock's grain
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))

    assert_refused(*await get(locked, "/v2/", old))  # remembered logins are forgotten too
    assert_refused(*await get(locked, "/v2/", {"Authorization": f"Bearer {TOKEN}"}))
    assert (await get(locked, "/v2/", {"Authorization": basic("bob", "new secret")}))[0] == 200
    assert (await get(locked, "/v2/",
                      {"Authorization": "Bearer rotated-token-1234567890"}))[0] == 200


async def test_tokens_only_configuration(fake: FakeRegistry, make_edge: MakeEdge,
                                         auth_files: dict[str, Path]) -> None:
    image = seed(fake)
    edge = await make_edge(access="authenticated",
                           top={"auth": {"tokens_file": str(auth_files["tokens"])}})
    assert_refused(*await get(edge, f"/v2/{REPO}/manifests/1.0",
                              {"Authorization": basic(USER, PASSWORD)}))
    status, _, body = await get(edge, f"/v2/{REPO}/manifests/1.0",
                                {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and body == image.manifest


async def test_a_custom_realm_is_named_in_the_challenge(
        fake: FakeRegistry, make_edge: MakeEdge, auth_files: dict[str, Path]) -> None:
    edge = await make_edge(access="authenticated", top={
        "auth": {"htpasswd_file": str(auth_files["htpasswd"]), "realm": "edge node 7"}})
    status, headers, _ = await get(edge, "/v2/")
    assert status == 401
    assert headers["WWW-Authenticate"].endswith(',service="edge node 7"')


# ---- content from an authenticated upstream stays behind its login --------------------------

@pytest.fixture
async def split(fake: FakeRegistry, make_edge: MakeEdge, auth_files: dict[str, Path],
                aiohttp_server: AiohttpServer) -> tuple[Edge, FakeRegistry]:
    """`fake.test` authenticated; `public.test` public and another registry, empty: whatever
    a public route serves of the private content can only come from edgecache itself."""
    other = await FakeRegistry().start(aiohttp_server)
    edge = await make_edge(access="authenticated", top={
        "auth": {"htpasswd_file": str(auth_files["htpasswd"])},
        "upstreams": {PUBLIC: {"url": other.url}},
    })
    return edge, other


async def test_cached_private_content_is_not_served_through_a_public_route(
        fake: FakeRegistry, split: tuple[Edge, FakeRegistry]) -> None:
    edge, other = split
    image = seed(fake)
    auth = {"Authorization": basic(USER, PASSWORD)}
    layer = image.layers[0]
    assert (await get(edge, f"/v2/{REPO}/manifests/1.0", auth))[2] == image.manifest
    assert (await get(edge, f"/v2/{REPO}/blobs/{layer.digest}", auth))[2] == layer.data
    assert await edge.wait_published(layer.digest)

    for path in (f"/v2/{PUBLIC}/{REPO}/blobs/{layer.digest}",
                 f"/v2/{REPO}/blobs/{layer.digest}?ns={PUBLIC}",
                 f"/v2/{PUBLIC}/{REPO}/manifests/{image.digest}",
                 f"/v2/{PUBLIC}/other/repo/manifests/{image.digest}"):
        status, _, body = await get(edge, path)
        assert status == 404, (path, status)
        assert layer.data not in body and image.manifest not in body, path
    # the public route asked its own upstream, which does not have it
    assert other.requests


async def test_a_private_download_in_progress_is_not_joined_through_a_public_route(
        fake: FakeRegistry, split: tuple[Edge, FakeRegistry]) -> None:
    edge, _ = split
    image = seed(fake)
    layer = image.layers[0]
    fault = fake.fault(layer.digest, BlobFault(gate_after=10_000))
    private = asyncio.create_task(
        get(edge, f"/v2/{REPO}/blobs/{layer.digest}", {"Authorization": basic(USER, PASSWORD)}))
    try:
        await eventually(lambda: fake.api_requests("GET"), timeout=4.0)  # held at the gate
        assert fake.api_requests("GET"), "the private download did not start"
        # the status is enough: a reader that joined gets 200 as soon as the size is known
        async with edge.client.get(f"/v2/{PUBLIC}/{REPO}/blobs/{layer.digest}") as resp:
            assert resp.status == 404, "a public route joined a private download"
    finally:
        fault.gate.set()
        status, _, body = await asyncio.wait_for(private, 10)
    assert status == 200 and body == layer.data
