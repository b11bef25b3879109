"""`GET /v2/<name>/referrers/<digest>`: an OCI 1.1 upstream's answer passed through; otherwise
a 404 whose code is not NAME_UNKNOWN, so clients fall back to the `sha256-<hex>` tag schema.

The fake stands in for the OCI 1.1 upstream (the Debian docker-registry, 2.8, has no referrers
API; tests/integration/test_contract.py checks edgecache in front of it)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import bcrypt
import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from edgecache import config as config_mod
from edgecache.app import build_app
from edgecache.metrics import Metrics
from tests.fakes.registry import OCI_INDEX_TYPE, FakeRegistry
from tests.support.images import make_image, make_layer
from tests.unit.conftest import UPSTREAM, Edge, MakeEdge

REPO = "team/app"
SBOM = "application/vnd.example.sbom.v1"
SIG = "application/vnd.example.signature.v1"


def descriptor(n: int, artifact_type: str) -> dict[str, object]:
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 100 + n,
            "digest": "sha256:" + f"{n:02x}" * 32, "artifactType": artifact_type,
            "annotations": {"n": str(n)}}


def with_referrers(fake: FakeRegistry) -> str:
    image = make_image([make_layer(1000, 1)])
    fake.add_image(REPO, image)
    fake.referrers_api = True
    for n, kind in enumerate([SBOM, SIG, SBOM]):
        fake.add_referrer(REPO, image.digest, descriptor(n, kind))
    return image.digest


async def test_an_oci_upstream_answer_is_passed_through(fake: FakeRegistry, edge: Edge) -> None:
    subject = with_referrers(fake)

    async with edge.client.get(f"/v2/{REPO}/referrers/{subject}") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == OCI_INDEX_TYPE
        assert "OCI-Filters-Applied" not in resp.headers
        doc = json.loads(await resp.read())
    assert doc["mediaType"] == OCI_INDEX_TYPE
    assert doc["manifests"] == fake.referrers[(REPO, subject)]
    asked = fake.api_requests(path=f"/v2/{REPO}/referrers/{subject}")
    assert len(asked) == 1 and asked[0].headers["Accept"] == OCI_INDEX_TYPE
    assert edge.sample("edgecache_requests_total", route="referrers", result="miss") == 1


async def test_the_artifact_type_filter_and_its_header(fake: FakeRegistry, edge: Edge) -> None:
    subject = with_referrers(fake)

    async with edge.client.get(f"/v2/{REPO}/referrers/{subject}",
                               params={"artifactType": SBOM, "ns": UPSTREAM}) as resp:
        assert resp.status == 200
        assert resp.headers["OCI-Filters-Applied"] == "artifactType"
        doc = await resp.json(content_type=OCI_INDEX_TYPE)
    assert [d["artifactType"] for d in doc["manifests"]] == [SBOM, SBOM]
    assert fake.requests[-1].query == {"artifactType": SBOM}  # ns is ours, not the upstream's

    fake.filter_referrers = False  # an upstream that does not filter says nothing
    async with edge.client.get(f"/v2/{REPO}/referrers/{subject}",
                               params={"artifactType": SBOM}) as resp:
        assert "OCI-Filters-Applied" not in resp.headers
        assert len((await resp.json(content_type=OCI_INDEX_TYPE))["manifests"]) == 3


async def test_upstream_pages_come_back_through_edgecache(fake: FakeRegistry,
                                                          edge: Edge) -> None:
    subject = with_referrers(fake)
    fake.referrers_page = 2
    url = f"/v2/{UPSTREAM}/{REPO}/referrers/{subject}"

    async with edge.client.get(url) as resp:
        first = (await resp.json(content_type=OCI_INDEX_TYPE))["manifests"]
        link = resp.headers["Link"]
    assert link == f'<{url}?next=2>; rel="next"'
    async with edge.client.get(url + "?next=2") as resp:
        rest = (await resp.json(content_type=OCI_INDEX_TYPE))["manifests"]
        assert "Link" not in resp.headers
    assert first + rest == fake.referrers[(REPO, subject)]


@pytest.mark.parametrize("link", [
    "<http://[::1/v2/x?next=2>; rel=next", "<http://h:99999999/x?next=2>; rel=next",
    "<?next=2#frag%zz>; rel=next"])
async def test_a_hostile_upstream_link_keeps_only_its_query(fake: FakeRegistry, edge: Edge,
                                                             link: str) -> None:
    subject = with_referrers(fake)
    fake.extra_headers = {"Link": link}

    async with edge.client.get(f"/v2/{REPO}/referrers/{subject}") as resp:
        assert resp.status == 200
        ours = resp.headers["Link"]
    assert ours.startswith(f"</v2/{REPO}/referrers/{subject}?next=2") and "\n" not in ours


async def test_no_referrers_api_is_a_404_to_fall_back_on(fake: FakeRegistry, edge: Edge) -> None:
    """Distribution 2.8 answers 404 (plain text): the client must read the tag schema next."""
    image = make_image([make_layer(1000, 2)])
    fake.add_image(REPO, image)

    async with edge.client.get(f"/v2/{REPO}/referrers/{image.digest}") as resp:
        assert resp.status == 404
        error = (await resp.json())["errors"][0]
    assert error["code"] == "UNSUPPORTED"  # never NAME_UNKNOWN: ORAS would not fall back
    assert "sha256-" + image.digest.removeprefix("sha256:") in error["message"]
    assert len(fake.api_requests(path=f"/v2/{REPO}/referrers/{image.digest}")) == 1


@pytest.mark.parametrize("answer", [
    (200, "application/json", b'{"schemaVersion": 2, "manifests": []}'),
    (200, OCI_INDEX_TYPE, b"<html>registry UI</html>"),
    (200, OCI_INDEX_TYPE, b'{"schemaVersion": 2, "manifests": "none"}'),
    (200, OCI_INDEX_TYPE, b'{"manifests": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
    (200, OCI_INDEX_TYPE, b'{"manifests": [], "x": "' + b"a" * (4 << 20) + b'"}'),
    (400, "application/json", b'{"errors": [{"code": "UNSUPPORTED"}]}'),
    (404, "application/json", b'{"errors": [{"code": "NAME_UNKNOWN"}]}'),
    (405, "text/plain", b"method not allowed"),
    (500, "text/plain", b"boom"),
    (503, "application/json", b'{"errors": [{"code": "UNAVAILABLE"}]}'),
], ids=["json-not-index", "html", "manifests-not-a-list", "nested", "over-4MiB", "400",
        "404-name-unknown", "405", "500", "503"])
async def test_anything_but_an_index_is_the_fallback_404(
        fake: FakeRegistry, edge: Edge, answer: tuple[int, str, bytes]) -> None:
    subject = with_referrers(fake)
    fake.referrers_body = answer

    async with edge.client.get(f"/v2/{REPO}/referrers/{subject}") as resp:
        assert resp.status == 404, await resp.text()
        assert (await resp.json())["errors"][0]["code"] == "UNSUPPORTED"


async def test_an_unreachable_upstream_is_the_fallback_404(fake: FakeRegistry,
                                                           edge: Edge) -> None:
    """Offline, the tag schema may still be in the cache: a 404 sends the client there."""
    subject = with_referrers(fake)
    async with edge.client.get(f"/v2/{REPO}/manifests/sha256-{subject[7:]}") as resp:
        assert resp.status == 404  # (no such tag here; the fallback path is the manifest one)
    await fake.stop()

    async with edge.client.get(f"/v2/{REPO}/referrers/{subject}") as resp:
        assert resp.status == 404
        assert (await resp.json())["errors"][0]["code"] == "UNSUPPORTED"


async def test_refused_credentials_stay_a_403(fake: FakeRegistry, make_edge: MakeEdge,
                                              tmp_path: Path) -> None:
    subject = with_referrers(fake)
    fake.require_basic("edge", "right")
    (tmp_path / "password").write_text("wrong\n")
    edge = await make_edge(username="edge", password_file=str(tmp_path / "password"),
                           access="public")

    async with edge.client.get(f"/v2/{REPO}/referrers/{subject}") as resp:
        assert resp.status == 403
        assert (await resp.json())["errors"][0]["code"] == "DENIED"


async def test_credentials_reach_the_upstream(fake: FakeRegistry, make_edge: MakeEdge) -> None:
    subject = with_referrers(fake)
    fake.require_bearer()
    edge = await make_edge()

    async with edge.client.get(f"/v2/{REPO}/referrers/{subject}") as resp:
        assert resp.status == 200
    assert fake.requests[-1].authorization is not None
    assert fake.token_requests[-1].query["scope"] == f"repository:{REPO}:pull"


async def test_a_private_upstream_is_asked_only_on_its_route_with_credentials(
        aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    private, public = FakeRegistry(), FakeRegistry()
    subject = with_referrers(private)
    public.add_image(REPO, make_image([make_layer(1000, 3)]))
    await private.start(aiohttp_server)
    await public.start(aiohttp_server)
    htpasswd = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    htpasswd.write_text(f"alice:{hashed}\n")
    config = config_mod.from_mapping({
        "listen": {"http": None},
        "storage": {"path": str(tmp_path / "cache")},
        "upstreams": {"private.test": {"url": private.url, "access": "authenticated"},
                      "public.test": {"url": public.url}},
        "default_upstream": "public.test",
        "auth": {"htpasswd_file": str(htpasswd)},
    })
    client = await aiohttp_client(build_app(config, Metrics()))
    url = f"/v2/{REPO}/referrers/{subject}"
    alice = {"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}

    async with client.get(url, params={"ns": "private.test"}) as resp:
        assert resp.status == 401
    assert private.api_requests(path=url) == []
    async with client.get(url, params={"ns": "private.test"}, headers=alice) as resp:
        assert resp.status == 200
    async with client.get(url) as resp:  # the public route: its own upstream, no referrers API
        assert resp.status == 404
    assert len(private.api_requests(path=url)) == 1 and len(public.api_requests(path=url)) == 1
