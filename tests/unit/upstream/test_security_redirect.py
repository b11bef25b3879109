"""No open proxy: where a hostile upstream's redirects and token realms may send edgecache.

The fake upstream lives on 127.0.0.1, so loopback targets are allowed by design (an upstream
may redirect within its own address class); link-local, private, reserved and multicast targets
are not. A refused target is refused before any connection: the error names the refusal (not a
timeout or a connection error), and edgecache's own count of upstream requests equals what the
fake received, so nothing was sent anywhere else. Addresses other than loopback appear here
only as targets that must be refused.
"""

from __future__ import annotations

import json
import socket

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from edgecache.upstream.guard import AddressGuard, GuardedResolver, address_class
from tests.fakes.registry import FakeRegistry
from tests.support.images import make_image, make_layer
from tests.unit.conftest import UPSTREAM, Edge, MakeEdge

REPO = "team/app"

# (redirect target, the address class edgecache must name when refusing it)
LITERAL_TARGETS = [
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "link-local"),
    ("http://169.254.169.254:80/computeMetadata/v1/", "link-local"),
    ("http://10.0.0.1:9/v2/x", "private"),
    ("http://192.168.1.1/admin", "private"),
    ("http://172.16.0.1:6443/api", "private"),
    ("http://100.64.0.1/", "private"),  # carrier-grade NAT
    ("http://[fe80::1]:9/x", "link-local"),
    ("http://[fd00::1]/x", "private"),  # unique local
    ("http://[::ffff:169.254.169.254]/latest/meta-data/", "link-local"),  # v4-mapped
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://224.0.0.1/", "reserved"),  # multicast
    ("https://10.1.2.3/", "private"),
]


def message(body: bytes) -> str:
    doc = json.loads(body)
    return str(doc["errors"][0]["message"])


def upstream_sends(edge: Edge) -> float:
    """How many requests edgecache's upstream client sent (token requests included)."""
    return edge.sample("edgecache_upstream_requests_total", upstream=UPSTREAM)


async def assert_refused_without_a_connection(fake: FakeRegistry, edge: Edge, path: str,
                                              expected: str) -> None:
    async with edge.client.get(path) as resp:
        body = await resp.read()
        assert resp.status == 502, body
        assert expected in message(body), body
    # edgecache sent exactly what the fake received: the redirect target got nothing
    assert upstream_sends(edge) == len(fake.requests) + len(fake.token_requests)
    assert edge.blob_files() == []
    assert edge.tmp_files() == []


@pytest.mark.parametrize(("target", "klass"), LITERAL_TARGETS,
                         ids=[t for t, _ in LITERAL_TARGETS])
async def test_blob_redirect_to_a_forbidden_literal_address_is_refused(
        fake: FakeRegistry, edge: Edge, target: str, klass: str) -> None:
    digest = fake.add_blob(make_layer(5000, seed=1))
    fake.redirect(target, path_contains="/blobs/")

    await assert_refused_without_a_connection(
        fake, edge, f"/v2/{REPO}/blobs/{digest}", f"redirect to a {klass} address refused")
    assert [r.status for r in fake.requests] == [307]


async def test_manifest_redirect_to_the_metadata_service_is_refused(
        fake: FakeRegistry, edge: Edge) -> None:
    fake.add_image(REPO, make_image([make_layer(1000, seed=2)]))
    fake.redirect("http://169.254.169.254/latest/meta-data/", path_contains="/manifests/")

    await assert_refused_without_a_connection(
        fake, edge, f"/v2/{REPO}/manifests/latest", "redirect to a link-local address refused")
    async with edge.client.head(f"/v2/{REPO}/manifests/latest") as resp:
        assert resp.status == 502
    assert upstream_sends(edge) == len(fake.requests)


async def test_redirect_to_the_unspecified_address_is_refused(
        fake: FakeRegistry, edge: Edge) -> None:
    """0.0.0.0 connects to the local host on Linux: a classic way around a loopback filter.
    Here it points at the fake's own port, so a followed redirect would show at the fake."""
    digest = fake.add_blob(make_layer(5000, seed=3))
    port = fake.url.rsplit(":", 1)[1]
    fake.redirect(lambda r: f"http://0.0.0.0:{port}{r.path}" if not r.query else None,
                  path_contains="/blobs/")

    await assert_refused_without_a_connection(
        fake, edge, f"/v2/{REPO}/blobs/{digest}", "redirect to a reserved address refused")
    assert len(fake.requests) == 1


@pytest.mark.parametrize("host", ["2852039166", "0251.0376.0251.0376", "0xa9fea9fe",
                                  "169.254.43518"])
async def test_numeric_spellings_of_the_metadata_address_are_refused(
        fake: FakeRegistry, edge: Edge, host: str) -> None:
    """Not literal IPs to the guard, yet inet_aton (so getaddrinfo) reads each as
    169.254.169.254. The URL layer refuses them as non-canonical before any resolution or
    connection; were it to let one through, the guarded resolver would refuse the address."""
    assert socket.getaddrinfo(host, 80)[0][4][0] == "169.254.169.254"  # what a naive client hits
    digest = fake.add_blob(make_layer(5000, seed=4))
    fake.redirect(f"http://{host}/latest/meta-data/", path_contains="/blobs/")

    async with edge.client.get(f"/v2/{REPO}/blobs/{digest}") as resp:
        body = await resp.read()
        assert resp.status in (502, 503), body
        text = message(body)
        assert ("not a canonical IPv4 address" in text  # yarl
                or f"refused to connect to {host}: it resolves only to addresses this upstream "
                   "may not reach (169.254.169.254)" in text), text  # the guarded resolver
    assert len(fake.requests) == 1
    assert edge.blob_files() == [] and edge.tmp_files() == []


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x",
                                    "gopher://127.0.0.1:6379/_INFO", "data:,hello"])
async def test_redirect_to_another_scheme_is_refused(fake: FakeRegistry, edge: Edge,
                                                     target: str) -> None:
    digest = fake.add_blob(make_layer(5000, seed=5))
    fake.redirect(target, path_contains="/blobs/")

    async with edge.client.get(f"/v2/{REPO}/blobs/{digest}") as resp:
        body = await resp.read()
        assert resp.status == 502, body
        assert "redirect to unsupported URL" in message(body)
    assert upstream_sends(edge) == len(fake.requests) == 1


def hops(limit: int, fake: FakeRegistry):  # type: ignore[no-untyped-def]
    """A Location function: redirect to the same path `limit` times, then answer normally."""
    def where(request: web.Request) -> str | None:
        hop = int(request.query.get("hop", "0"))
        return f"{fake.url}{request.path}?hop={hop + 1}" if hop < limit else None
    return where


async def test_five_redirect_hops_are_followed(fake: FakeRegistry, edge: Edge) -> None:
    """The positive control for the refusals here: a redirect within the allowed class works,
    up to the limit."""
    blob = make_layer(5000, seed=6)
    digest = fake.add_blob(blob)
    fake.redirect(hops(5, fake), path_contains="/blobs/")

    async with edge.client.get(f"/v2/{REPO}/blobs/{digest}") as resp:
        assert resp.status == 200
        assert await resp.read() == blob.data
    assert [r.status for r in fake.requests] == [307] * 5 + [200]


async def test_a_redirect_loop_stops_after_five_hops(fake: FakeRegistry, edge: Edge) -> None:
    digest = fake.add_blob(make_layer(5000, seed=7))
    fake.redirect(lambda r: f"{fake.url}{r.path}?hop={int(r.query.get('hop', '0')) + 1}",
                  path_contains="/blobs/")

    async with edge.client.get(f"/v2/{REPO}/blobs/{digest}") as resp:
        body = await resp.read()
        assert resp.status == 502
        assert "more than 5 redirects" in message(body)
    assert [r.query.get("hop", "0") for r in fake.requests] == ["0", "1", "2", "3", "4", "5"]
    assert edge.blob_files() == [] and edge.tmp_files() == []


async def test_a_loopback_name_is_allowed_for_a_loopback_upstream(
        fake: FakeRegistry, edge: Edge, aiohttp_server: AiohttpServer) -> None:
    """By design: the upstream lives on loopback, so may its redirects (resolved by name)."""
    cdn = await fake.start_cdn(aiohttp_server)
    blob = make_layer(5000, seed=8)
    digest = fake.add_blob(blob)
    port = cdn.url.rsplit(":", 1)[1]
    fake.redirect(f"http://localhost:{port}/cdn/{digest}?sig=signed", path_contains="/blobs/")

    async with edge.client.get(f"/v2/{REPO}/blobs/{digest}") as resp:
        assert resp.status == 200
        assert await resp.read() == blob.data
    assert [r.status for r in cdn.requests] == [200]


# ---- token realms: the upstream names where we fetch tokens (with our credentials) -----------

async def test_token_realm_at_a_forbidden_literal_address_is_refused(
        fake: FakeRegistry, make_edge: MakeEdge, tmp_path: object) -> None:
    """The realm comes from the upstream's 401 just like a redirect's Location: the same guard
    applies. 0.0.0.0 would reach the fake's own /token (Linux connects it to the local host),
    so a followed realm shows up as a token request at the fake."""
    digest = fake.add_blob(make_layer(5000, seed=9))
    port = fake.url.rsplit(":", 1)[1]
    fake.require_bearer(realm=f"http://0.0.0.0:{port}/token")
    edge = await make_edge()

    async with edge.client.get(f"/v2/{REPO}/blobs/{digest}") as resp:
        body = await resp.read()
        assert 400 <= resp.status < 600 and resp.status != 404, body
        assert "reserved address refused" in message(body), body
    assert fake.token_requests == []
    assert upstream_sends(edge) == len(fake.requests) == 1


@pytest.mark.parametrize(("realm", "klass"), [
    ("http://[fe80::1]:9/token", "link-local"),
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "link-local"),
    ("http://10.0.0.1:9/token", "private"),
    ("http://[::ffff:192.168.0.1]/token", "private"),
])
async def test_token_realm_names_its_refusal(fake: FakeRegistry, edge: Edge, realm: str,
                                             klass: str) -> None:
    digest = fake.add_blob(make_layer(5000, seed=10))
    fake.require_bearer(realm=realm)

    async with edge.client.get(f"/v2/{REPO}/blobs/{digest}") as resp:
        body = await resp.read()
        assert f"{klass} address refused" in message(body), body
    assert upstream_sends(edge) == len(fake.requests) == 1


# ---- the guard itself -------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "klass"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
    ("::ffff:169.254.169.254", "link-local"), ("::ffff:127.0.0.1", "loopback"),
    ("10.0.0.1", "private"), ("172.31.255.255", "private"), ("192.168.0.1", "private"),
    ("100.64.0.1", "private"), ("fd12:3456::1", "private"), ("::ffff:10.0.0.1", "private"),
    ("0.0.0.0", "reserved"), ("::", "reserved"), ("224.0.0.251", "reserved"),
    ("ff02::1", "reserved"), ("240.0.0.1", "reserved"),
    ("203.0.113.5", "private"),  # TEST-NET-3 is "private" to Python: documentation range
    ("8.8.8.8", "public"), ("2606:4700::1111", "public"),
])
def test_address_classes(address: str, klass: str) -> None:
    assert address_class(address) == klass


def test_guard_permits_only_the_upstreams_own_class() -> None:
    public = AddressGuard("registry.example.org")
    assert public.allowed == {"public"}
    assert public.permits("cdn.example.net", "8.8.8.8")
    assert not public.permits("evil.example.net", "127.0.0.1")
    assert not public.permits("evil.example.net", "169.254.169.254")
    assert public.permits("REGISTRY.example.org", "10.0.0.5")  # its own name, as resolved
    harbor = AddressGuard("10.20.30.40")
    assert harbor.permits("storage.lan", "10.9.9.9")
    assert not harbor.permits("storage.lan", "169.254.169.254")
    assert not harbor.permits("storage.lan", "127.0.0.1")


async def test_guarded_resolver_refuses_a_name_resolving_to_loopback_for_a_public_upstream(
) -> None:
    resolver = GuardedResolver(AddressGuard("8.8.4.4"))  # an upstream at a public address
    try:
        with pytest.raises(OSError, match="refused to connect to localhost"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


async def test_guarded_resolver_permits_loopback_for_a_loopback_upstream() -> None:
    resolver = GuardedResolver(AddressGuard("127.0.0.1"))
    try:
        results = await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
    assert results and all(address_class(r["host"]) == "loopback" for r in results)


async def test_guarded_resolver_learns_the_class_of_the_upstreams_own_name() -> None:
    """An upstream named `localhost` resolves to loopback; its redirects may then use other
    loopback names. Before it resolved, they may not."""
    guard = AddressGuard("localhost")
    resolver = GuardedResolver(guard)
    try:
        assert not guard.permits("other.name", "127.0.0.1")
        await resolver.resolve("localhost", 80)
        assert guard.permits("other.name", "127.0.0.1")
        assert not guard.permits("other.name", "169.254.169.254")
    finally:
        await resolver.close()
