"""edgecache as its own token service (issue 14, items 1 and 5), in-process.

`fake.test` is authenticated (the default upstream), `public.test` public. `/v2/` and private
routes challenge with Bearer naming `/v2/token`; an anonymous token opens `/v2/` only, a token
issued against valid credentials (GET with Basic, or containerd's POSTed password form) opens
the private routes too; a forged, foreign or expired token opens nothing.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from edgecache.app import AUTH
from edgecache.web.tokens import TokenSigner
from tests.fakes.registry import FakeRegistry
from tests.unit.conftest import Edge, MakeEdge
from tests.unit.web.test_security_access import (
    PASSWORD,
    PUBLIC,
    REPO,
    TOKEN,
    USER,
    basic,
    get,
    htpasswd_entry,
    seed,
)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
MANIFEST = f"/v2/{REPO}/manifests/1.0"


@pytest.fixture
async def locked(fake: FakeRegistry, make_edge: MakeEdge, tmp_path: Path) -> Edge:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(htpasswd_entry(USER, PASSWORD) + "\n")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ci:{TOKEN}\n")
    for path in (htpasswd, tokens):
        path.chmod(0o600)
    return await make_edge(access="authenticated", top={
        "auth": {"htpasswd_file": str(htpasswd), "tokens_file": str(tokens)},
        "upstreams": {PUBLIC: {"url": fake.url}}})


def address(edge: Edge) -> str:
    return f"{edge.client.host}:{edge.client.port}"


async def token(edge: Edge, headers: dict[str, str] | None = None,
                query: str = "?service=edgecache&scope=repository:team/app:pull") -> str:
    status, _, body = await get(edge, "/v2/token" + query, headers)
    assert status == 200, body
    doc = json.loads(body)
    assert doc["token"] == doc["access_token"] and doc["expires_in"] == 300
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["issued_at"])
    return str(doc["token"])


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def test_the_challenge_names_this_servers_token_endpoint_and_the_scope(
        locked: Edge) -> None:
    realm = f'Bearer realm="http://{address(locked)}/v2/token",service="edgecache"'
    status, headers, _ = await get(locked, "/v2/")
    assert status == 401 and headers["WWW-Authenticate"] == realm
    status, headers, body = await get(locked, MANIFEST)
    assert status == 401
    assert headers["WWW-Authenticate"] == realm + ',scope="repository:team/app:pull"'
    # item 5: the body names the mirror's address, what to run, and why a registry's own
    # credentials do not help
    message = json.loads(body)["errors"][0]["message"]
    assert f"docker login {address(locked)}" in message and "mirror" in message
    assert "invalid" not in message


async def test_an_anonymous_token_opens_the_api_root_and_public_routes_only(
        fake: FakeRegistry, locked: Edge) -> None:
    image = seed(fake)
    anonymous = await token(locked)
    assert (await get(locked, "/v2/", bearer(anonymous)))[0] == 200
    status, _, body = await get(locked, f"/v2/{PUBLIC}/{REPO}/manifests/1.0", bearer(anonymous))
    assert status == 200 and body == image.manifest
    upstream_requests = len(fake.requests)
    status, headers, body = await get(locked, MANIFEST, bearer(anonymous))
    assert status == 401 and 'error="insufficient_scope"' in headers["WWW-Authenticate"]
    assert "authentication required" in json.loads(body)["errors"][0]["message"]
    assert len(fake.requests) == upstream_requests  # refused before any upstream request


@pytest.mark.parametrize("credentials", [basic(USER, PASSWORD), f"Bearer {TOKEN}"])
async def test_a_token_issued_against_valid_credentials_opens_the_private_routes(
        fake: FakeRegistry, locked: Edge, credentials: str) -> None:
    image = seed(fake)
    issued = await token(locked, {"Authorization": credentials})
    assert (await get(locked, "/v2/", bearer(issued)))[0] == 200
    status, _, body = await get(locked, MANIFEST, bearer(issued))
    assert status == 200 and body == image.manifest
    status, _, body = await get(locked, f"/v2/{REPO}/blobs/{image.layers[0].digest}",
                                bearer(issued))
    assert status == 200 and body == image.layers[0].data


async def test_wrong_credentials_at_the_token_endpoint_get_401_through_the_bcrypt_path(
        locked: Edge) -> None:
    app = locked.client.app
    assert app is not None
    auth = app[AUTH]
    before = auth.hashes_checked
    for credentials in (basic(USER, "wrong"), basic("nobody", PASSWORD), "Bearer ci"):
        status, headers, body = await get(locked, "/v2/token", {"Authorization": credentials})
        assert status == 401, credentials
        assert headers["WWW-Authenticate"].startswith("Basic ")
        assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
        assert "token" not in json.loads(body)
    assert auth.hashes_checked == before + 2  # one bcrypt per wrong password, none for a token


async def test_containerd_style_password_grant_form(fake: FakeRegistry, locked: Edge) -> None:
    image = seed(fake)
    form = f"grant_type=password&service=edgecache&client_id=containerd-client" \
           f"&scope=repository%3Ateam%2Fapp%3Apull&username={USER}" \
           f"&password={PASSWORD.replace(' ', '+')}"
    async with locked.client.post("/v2/token", data=form, headers=FORM) as resp:
        assert resp.status == 200
        doc = await resp.json()
    status, _, body = await get(locked, MANIFEST, bearer(doc["access_token"]))
    assert status == 200 and body == image.manifest

    wrong = form.replace("password=", "password=x")
    refused = [(wrong, 401), ("grant_type=refresh_token&refresh_token=abc", 400),
               ("grant_type=password", 200)]  # no credentials: an anonymous token
    for data, expected in refused:
        async with locked.client.post("/v2/token", data=data, headers=FORM) as resp:
            assert resp.status == expected, (data, await resp.text())
    async with locked.client.post("/v2/token", data=b"\xff\xfe", headers=FORM) as resp:
        assert resp.status == 400
    async with locked.client.post("/v2/token", json={"grant_type": "password"}) as resp:
        assert resp.status == 400
    async with locked.client.delete("/v2/token") as resp:
        assert resp.status == 405


async def test_tampered_and_foreign_tokens_open_nothing(locked: Edge) -> None:
    anonymous = await token(locked)
    prefix, payload, mac = anonymous.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["auth"] is False
    claims["auth"] = True  # promote the anonymous token, keeping its signature
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    foreign = TokenSigner().issue(USER, True)["token"]  # another process's key
    assert isinstance(foreign, str)
    for value in (f"{prefix}.{forged_payload}.{mac}", foreign, anonymous[:-2],
                  f"{prefix}.{payload}", "ec1." + "é" * 10):
        status, headers, body = await get(locked, MANIFEST, bearer(value))
        assert status == 401, value
        assert 'error="invalid_token"' in headers["WWW-Authenticate"]
        assert "token expired or not issued" in json.loads(body)["errors"][0]["message"]
        assert (await get(locked, "/v2/", bearer(value)))[0] == 401


def test_a_token_expires_after_its_lifetime() -> None:
    signer = TokenSigner(ttl=300)
    issued = signer.issue(USER, True, now=1_000_000)
    value = issued["token"]
    assert isinstance(value, str) and issued["expires_in"] == 300
    grant = signer.verify(value, now=1_000_299)
    assert grant is not None and grant.subject == USER and grant.authenticated
    assert signer.verify(value, now=1_000_300) is None
    assert signer.verify(value, now=2_000_000) is None


async def test_missing_and_wrong_credentials_get_different_messages(locked: Edge) -> None:
    """podman sends Basic with an empty user and password when it has none: that is missing
    credentials, not invalid ones (issue 14, item 3)."""
    for headers in ({}, {"Authorization": "Basic Og=="}, {"Authorization": basic("", "")}):
        status, _, body = await get(locked, MANIFEST, headers)
        message = json.loads(body)["errors"][0]["message"]
        assert status == 401 and message.startswith("authentication required"), headers
    # an empty Basic at the token endpoint is anonymous, not a failed login
    await token(locked, {"Authorization": "Basic Og=="})
    status, _, body = await get(locked, MANIFEST, {"Authorization": basic(USER, "wrong")})
    message = json.loads(body)["errors"][0]["message"]
    assert status == 401 and message.startswith(f"invalid credentials for {address(locked)}")


async def test_basic_credentials_on_data_requests_keep_working(
        fake: FakeRegistry, locked: Edge) -> None:
    image = seed(fake)
    status, _, body = await get(locked, MANIFEST, {"Authorization": basic(USER, PASSWORD)})
    assert status == 200 and body == image.manifest


async def test_without_client_auth_there_is_no_token_service(edge: Edge) -> None:
    assert (await get(edge, "/v2/"))[0] == 200
    status, _, body = await get(edge, "/v2/token")
    assert status == 404 and json.loads(body)["errors"][0]["code"] == "NAME_UNKNOWN"
