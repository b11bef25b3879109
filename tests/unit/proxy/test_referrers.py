"""`GET /v2/<name>/referrers/<digest>` for cached upstream content: an OCI 1.1 upstream's answer,
kept and revalidated as a tag is (served stale when the upstream fails); without the API, the
referrers tag schema through the manifest path; never a 404.

The fake stands in for the OCI 1.1 upstream (the Debian docker-registry, 2.8, has no referrers
API; tests/integration/test_referrers.py checks the tag schema in front of it)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from edgecache import config as config_mod
from edgecache.app import build_app
from edgecache.metrics import Metrics
from tests.fakes.registry import OCI_INDEX_TYPE, FakeRegistry
from tests.support.htpasswd import write_htpasswd
from tests.support.images import make_image, make_layer
from tests.unit.conftest import UPSTREAM, Edge, MakeEdge

REPO = "team/app"
SBOM = "application/vnd.example.sbom.v1"
SIG = "application/vnd.example.signature.v1"
KEEP = {"cache": {"tag_ttl": "5m"}}


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


async def listed(edge: Edge, subject: str, **params: str) -> tuple[list[object], str]:
    async with edge.client.get(f"/v2/{REPO}/referrers/{subject}", params=params) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == OCI_INDEX_TYPE
        assert "Link" not in resp.headers
        doc = json.loads(await resp.read())
    assert doc["mediaType"] == OCI_INDEX_TYPE and doc["schemaVersion"] == 2
    return doc["manifests"], resp.headers["X-Edgecache-Cache"]


async def test_an_oci_upstream_answer_is_kept(fake: FakeRegistry, make_edge: MakeEdge) -> None:
    subject = with_referrers(fake)
    edge = await make_edge(top=KEEP)

    assert await listed(edge, subject) == (fake.referrers[(REPO, subject)], "miss")
    assert await listed(edge, subject) == (fake.referrers[(REPO, subject)], "hit")
    asked = fake.api_requests(path=f"/v2/{REPO}/referrers/{subject}")
    assert len(asked) == 1 and asked[0].headers["Accept"] == OCI_INDEX_TYPE
    assert edge.sample("edgecache_requests_total", route="referrers", result="hit") == 1


async def test_an_expired_answer_is_asked_again(fake: FakeRegistry, edge: Edge) -> None:
    subject = with_referrers(fake)
    assert len((await listed(edge, subject))[0]) == 3
    fake.add_referrer(REPO, subject, descriptor(9, SIG))

    found, source = await listed(edge, subject)
    assert (len(found), source) == (4, "miss")
    assert len(fake.api_requests(path=f"/v2/{REPO}/referrers/{subject}")) == 2


async def test_the_kept_answer_serves_an_outage(fake: FakeRegistry, edge: Edge) -> None:
    subject = with_referrers(fake)
    first, _ = await listed(edge, subject)
    await fake.stop()

    assert await listed(edge, subject) == (first, "stale")
    assert await listed(edge, subject, artifactType=SIG) == ([first[1]], "stale")
    assert edge.sample("edgecache_stale_serves_total", upstream=UPSTREAM) == 2


async def test_an_outage_with_nothing_kept_is_503(fake: FakeRegistry, edge: Edge) -> None:
    subject = with_referrers(fake)
    await fake.stop()

    async with edge.client.get(f"/v2/{REPO}/referrers/{subject}") as resp:
        assert resp.status == 503
        assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"


async def test_the_artifact_type_filter_is_ours(fake: FakeRegistry, make_edge: MakeEdge) -> None:
    subject = with_referrers(fake)
    fake.filter_referrers = False  # whatever the upstream does with it: asked unfiltered
    edge = await make_edge(top=KEEP)

    async with edge.client.get(f"/v2/{REPO}/referrers/{subject}",
                               params={"artifactType": SBOM, "ns": UPSTREAM}) as resp:
        assert resp.status == 200
        assert resp.headers["OCI-Filters-Applied"] == "artifactType"
        doc = await resp.json(content_type=OCI_INDEX_TYPE)
    assert [d["artifactType"] for d in doc["manifests"]] == [SBOM, SBOM]
    assert fake.requests[-1].query == {}
    assert await listed(edge, subject, artifactType=SIG) == ([descriptor(1, SIG)], "hit")
    assert await listed(edge, subject, artifactType="none/such") == ([], "hit")
    assert len(fake.api_requests(path=f"/v2/{REPO}/referrers/{subject}")) == 1


async def test_upstream_pages_are_merged(fake: FakeRegistry, edge: Edge) -> None:
    subject = with_referrers(fake)
    fake.referrers_page = 2

    found, _ = await listed(edge, subject)
    assert found == fake.referrers[(REPO, subject)]
    asked = fake.api_requests(path=f"/v2/{REPO}/referrers/{subject}")
    assert [r.query for r in asked] == [{}, {"next": "2"}]


@pytest.mark.parametrize("link", [
    "<http://[::1/v2/x?next=2>; rel=next", "<http://h:99999999/x?next=2>; rel=next",
    "<?next=2#frag%zz>; rel=next", "<?>; rel=next"])
async def test_a_hostile_upstream_link_is_bounded(fake: FakeRegistry, edge: Edge,
                                                  link: str) -> None:
    """A Link on every page (the same page again) ends: each digest once, pages bounded."""
    subject = with_referrers(fake)
    fake.extra_headers = {"Link": link}

    found, _ = await listed(edge, subject)
    assert found == fake.referrers[(REPO, subject)]
    assert 1 <= len(fake.api_requests(path=f"/v2/{REPO}/referrers/{subject}")) <= 16


async def test_no_referrers_api_reads_the_tag_schema(fake: FakeRegistry,
                                                     make_edge: MakeEdge) -> None:
    """Distribution 2.8 answers 404 (plain text): the `sha256-<hex>` tag names the index. (A
    404 of the tag is remembered as any: negative_ttl 0 here, to see the tag appear.)"""
    edge = await make_edge(top={"cache": {"tag_ttl": "5m", "negative_ttl": "0s"}})
    image = make_image([make_layer(1000, 2)])
    fake.add_image(REPO, image)
    subject = image.digest
    assert await listed(edge, subject) == ([], "miss")  # no tag: no referrers

    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX_TYPE,
                        "manifests": [descriptor(1, SIG), descriptor(2, SBOM), "junk"]})
    fake.add_manifest(REPO, index.encode(), OCI_INDEX_TYPE, tags=["sha256-" + subject[7:]])
    assert await listed(edge, subject, artifactType=SBOM) == ([descriptor(2, SBOM)], "miss")
    asked = len(fake.api_requests())
    assert await listed(edge, subject) == ([descriptor(1, SIG), descriptor(2, SBOM)], "hit")
    # the tag is a cached tag like any (tag_ttl 5m); the API's 404 is asked again (an API may
    # 404 one subject only: never remembered for the upstream)
    assert [r.path for r in fake.api_requests()[asked:]] == [f"/v2/{REPO}/referrers/{subject}"]


async def test_an_upstream_answering_no_index_is_not_asked_again(fake: FakeRegistry,
                                                                 make_edge: MakeEdge) -> None:
    subject = with_referrers(fake)
    fake.referrers_body = (405, "text/plain", b"method not allowed")
    edge = await make_edge(top=KEEP)
    other = make_image([make_layer(1000, 4)]).digest

    assert await listed(edge, subject) == ([], "miss")
    assert await listed(edge, other) == ([], "miss")
    assert len(fake.api_requests(path=f"/v2/{REPO}/referrers/{subject}")) == 1
    assert fake.api_requests(path=f"/v2/{REPO}/referrers/{other}") == []


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
async def test_anything_but_an_index_falls_back_to_the_tag_schema(
        fake: FakeRegistry, edge: Edge, answer: tuple[int, str, bytes]) -> None:
    subject = with_referrers(fake)
    fake.referrers_body = answer

    assert await listed(edge, subject) == ([], "miss")  # the fake has no such tag
    assert fake.api_requests(path=f"/v2/{REPO}/manifests/sha256-{subject[7:]}")


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
    write_htpasswd(htpasswd, "alice", "pw")
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
        assert resp.status == 200
        assert (await resp.json(content_type=OCI_INDEX_TYPE))["manifests"] == []
    assert len(private.api_requests(path=url)) == 1 and len(public.api_requests(path=url)) == 1
