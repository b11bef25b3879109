"""Hostile input, in-process (extends tests/unit/test_bad_input.py, which it does not repeat).

Range headers built to amplify or to crash the parser, path traversal in encodings the router
must not decode, absolute-form request targets and `ns` values naming hosts that are not
configured (edgecache must never contact them), and the concurrency bounds: more readers than
`limits.max_readers_per_blob` on one download get 429, and `limits.max_downloads` queues
upstream downloads. Limits on the request line and headers and the idle timeout are set where
the server is built (`serve`), so they are tested against a real process in
tests/integration/test_security.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from pytest_aiohttp import AiohttpServer

from tests.fakes.registry import BlobFault, FakeRegistry
from tests.support.images import make_image, make_layer
from tests.support.waiting import await_until
from tests.unit.conftest import UPSTREAM, Edge, MakeEdge, RawResponse

REPO = "team/app"


def code_of(body: bytes) -> str:
    return str(json.loads(body)["errors"][0]["code"])


def served(edge: Edge) -> float:
    return sum(edge.sample("edgecache_served_bytes_total", source=s) for s in ("cache", "upstream"))


# ---- Range: no amplification, no crash --------------------------------------------------------

HOSTILE_RANGES = [
    "bytes=" + ",".join(["0-"] * 1500),  # the same whole blob 1500 times
    "bytes=" + ",".join(f"{i}-{i + 4000}" for i in range(0, 600)),  # heavily overlapping
    "bytes=0-0," * 700 + "0-0",
    "bytes=0-4999,0-4999",
    "bytes=-1,-1,-1",
    "bytes=0-\t,1-",
    "bytes=99999999999999999999999999999999-",
    "bytes=0-1;5-6",
    "bytes=0-1 5-6",
    "bytes=+0-1",
    "bytes=0x10-0x20",
    "bytes=1e3-2e3",
    "bytes=²-",  # a digit to str.isdigit, not to int()
    "bytes=0-²",
    "bytes=-²",
    "bytes=١-٢",  # Arabic-Indic digits: not the ASCII DIGIT of RFC 9110
    "bytes=０-１",  # fullwidth
    "BYTES=0-1,2-3",
]


async def get_range(edge: Edge, path: str, spec: str) -> RawResponse:
    """Send the Range as UTF-8 bytes (what a hostile client can put on the wire)."""
    request = (f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               f"Range: {spec}\r\n\r\n").encode()
    return await edge.send_bytes(request)


@pytest.mark.parametrize("spec", HOSTILE_RANGES, ids=[s[:40] for s in HOSTILE_RANGES])
async def test_hostile_range_on_a_cached_blob_is_refused_small(
        fake: FakeRegistry, edge: Edge, spec: str) -> None:
    blob = make_layer(5000, seed=1)
    digest = fake.add_blob(blob)
    async with edge.client.get(f"/v2/{REPO}/blobs/{digest}") as resp:
        assert await resp.read() == blob.data
    before, upstream_seen = served(edge), len(fake.requests)

    resp = await get_range(edge, f"/v2/{REPO}/blobs/{digest}", spec)

    assert resp.status == 416, (resp.status, resp.body[:200])
    assert code_of(resp.body) == "SIZE_INVALID"
    assert resp.headers.get("content-range") == f"bytes */{len(blob.data)}"
    assert len(resp.body) < 1024  # the refusal is small whatever was asked
    assert blob.data[:64] not in resp.body
    assert served(edge) == before
    assert len(fake.requests) == upstream_seen


@pytest.mark.parametrize("spec", [*HOSTILE_RANGES[:3], "bytes=²-"],
                         ids=["repeat", "overlap", "zeros", "superscript"])
async def test_hostile_range_on_a_cold_blob_starts_no_download(
        fake: FakeRegistry, edge: Edge, spec: str) -> None:
    digest = fake.add_blob(make_layer(5000, seed=2))

    resp = await get_range(edge, f"/v2/{REPO}/blobs/{digest}", spec)

    assert resp.status == 416
    assert fake.requests == []
    assert edge.blob_files() == [] and edge.tmp_files() == []


# ---- paths the router must not decode ----------------------------------------------------------

SHA = "sha256:" + "ab" * 32
# request targets as sent on the wire (none of them in test_bad_input.py)
TRAVERSALS = [
    "/v2/a/..%2f../manifests/x",
    "/v2/a/..%2F..%2Fetc%2Fpasswd/manifests/x",
    "/v2/team%252Fapp/manifests/latest",  # double-encoded slash
    "/v2/%2e%2e/%2e%2e/etc/passwd/manifests/x",
    "/v2/%2E%2E/manifests/latest",
    "/v2/app/blobs/..%5c..%5cetc%5cpasswd",
    "/v2/app\\..\\..\\etc/manifests/latest",
    "/v2/app/manifests/..%00",
    "/v2/app/manifests/..;/x",
    "/v2/%c0%ae%c0%ae/manifests/latest",  # overlong UTF-8 dot
    "/v2/%u002e%u002e/manifests/latest",
    "/v2/．．/．．/manifests/latest",  # fullwidth dots, raw UTF-8
    "/v2/app/../../../../etc/passwd/manifests/latest",
    "/v2/app/manifests/../../../etc/passwd",
    "/v2/app/blobs/sha256:../../../../etc/passwd",
    f"/v2/app/blobs/{SHA}/../../../../../etc/passwd",
    "/v2/../v2/../v2/app/manifests/latest",
    "/v2/...../manifests/latest",
    "/v2/.%2e/.%2e/manifests/latest",
    "//v2/app/manifests/latest/../../..",
    "/v2/app/blobs/uploads/../../../etc",
]


@pytest.mark.parametrize("target", TRAVERSALS)
async def test_traversal_is_refused_and_touches_nothing(
        fake: FakeRegistry, edge: Edge, target: str) -> None:
    fake.add_image("app", make_image([make_layer(1000, seed=3)]))
    request = (f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").encode()

    resp = await edge.send_bytes(request)

    assert 400 <= resp.status < 500, (target, resp.status)
    assert fake.requests == [] and fake.token_requests == []
    assert edge.blob_files() == [] and edge.tmp_files() == []
    assert b"root:" not in resp.body


# ---- no open proxy from the client side ------------------------------------------------------

@pytest.fixture
async def bystander(aiohttp_server: AiohttpServer) -> FakeRegistry:
    """A second registry on loopback that edgecache is NOT configured for: it must see
    nothing, whatever a client names."""
    other = FakeRegistry()
    other.add_image("app", make_image([make_layer(1000, seed=4)]))
    return await other.start(aiohttp_server)


async def test_absolute_form_targets_and_host_headers_do_not_choose_the_upstream(
        fake: FakeRegistry, edge: Edge, bystander: FakeRegistry) -> None:
    fake.add_image("app", make_image([make_layer(1000, seed=5)]))
    elsewhere = bystander.url.removeprefix("http://")
    for target, host in [(f"{bystander.url}/v2/app/manifests/latest", elsewhere),
                         ("http://169.254.169.254/v2/app/manifests/latest", "169.254.169.254"),
                         ("/v2/app/manifests/latest", elsewhere)]:
        request = (f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
        resp = await edge.send_bytes(request.encode())
        # served from the configured upstream (or refused): never fetched from the named host
        assert resp.status in (200, 400, 404), (target, resp.status)
    assert bystander.requests == []
    assert fake.requests
    assert all(r.path.startswith("/v2/app/manifests/") for r in fake.requests)


async def test_connect_is_refused(fake: FakeRegistry, edge: Edge,
                                  bystander: FakeRegistry) -> None:
    elsewhere = bystander.url.removeprefix("http://")
    resp = await edge.send_bytes(f"CONNECT {elsewhere} HTTP/1.1\r\nHost: {elsewhere}\r\n"
                                  "Connection: close\r\n\r\n".encode())
    assert 400 <= resp.status < 500
    assert bystander.requests == [] and fake.requests == []


@pytest.mark.parametrize("ns", [
    "{bystander}", "http://{bystander}", "{bystander}/v2", "127.0.0.1", "localhost",
    "169.254.169.254", "[::1]", "..", "../..", "fake.test/..", "fake.test:80", "fake.test.",
    " fake.test", "fake.test%00", "", "docker.io", "*", "fake.test@evil",
])
async def test_an_unconfigured_ns_is_never_contacted(
        fake: FakeRegistry, edge: Edge, bystander: FakeRegistry, ns: str) -> None:
    value = ns.format(bystander=bystander.url.removeprefix("http://"))
    async with edge.client.get("/v2/app/manifests/latest", params={"ns": value}) as resp:
        assert resp.status in (400, 404), (value, resp.status)
        assert code_of(await resp.read()) in ("NAME_UNKNOWN", "NAME_INVALID")
    assert bystander.requests == [] and fake.requests == []


async def test_the_first_ns_decides_and_later_ones_change_nothing(
        fake: FakeRegistry, edge: Edge, bystander: FakeRegistry) -> None:
    fake.add_image("app", make_image([make_layer(1000, seed=6)]))
    elsewhere = bystander.url.removeprefix("http://")
    async with edge.client.get(f"/v2/app/manifests/latest?ns={UPSTREAM}&ns={elsewhere}") as resp:
        assert resp.status == 200
    async with edge.client.get(f"/v2/app/manifests/latest?ns={elsewhere}&ns={UPSTREAM}") as resp:
        assert resp.status == 404
    assert bystander.requests == []


# ---- query and upstream headers that look like numbers --------------------------------------

async def test_a_tag_list_page_size_that_is_not_ascii_is_no_crash(
        fake: FakeRegistry, edge: Edge) -> None:
    fake.add_image("app", make_image([make_layer(1000, seed=11)]), tags=("1", "2"))
    for tag in ("1", "2"):  # tags edgecache has seen, so it can list them on its own
        async with edge.client.get(f"/v2/app/manifests/{tag}") as resp:
            assert resp.status == 200
    fake.down = True  # the stale path: edgecache pages the tags it knows itself
    async with edge.client.get("/v2/app/tags/list", params={"n": "1"}) as resp:
        assert resp.status == 200 and (await resp.json())["tags"] == ["1"]
    for n in ("²", "١", "-1", "1e3", ""):  # not ASCII digits: ignored, like a missing n
        async with edge.client.get("/v2/app/tags/list", params={"n": n}) as resp:
            assert resp.status == 200, (n, await resp.text())
            assert (await resp.json())["tags"] == ["1", "2"]


async def test_an_upstream_rate_limit_header_that_is_not_ascii_is_ignored(
        fake: FakeRegistry, edge: Edge) -> None:
    image = make_image([make_layer(1000, seed=7)])
    fake.add_image("app", image)
    fake.extra_headers = {"RateLimit-Remaining": "²;w=21600"}

    async with edge.client.get("/v2/app/manifests/latest") as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.read() == image.manifest


# ---- concurrency bounds --------------------------------------------------------------------------

async def fetch(edge: Edge, path: str) -> tuple[int, bytes]:
    async with edge.client.get(path) as resp:
        return resp.status, await resp.read()


async def test_readers_beyond_the_limit_get_429_with_retry_after(
        fake: FakeRegistry, make_edge: MakeEdge) -> None:
    edge = await make_edge(top={"limits": {"max_readers_per_blob": 3}})
    blob = make_layer(200_000, seed=8)
    digest = fake.add_blob(blob)
    fault = fake.fault(digest, BlobFault(gate_after=50_000))
    path = f"/v2/{REPO}/blobs/{digest}"
    followers = [asyncio.create_task(fetch(edge, path)) for _ in range(3)]
    try:
        await await_until(lambda: edge.sample("edgecache_download_readers") == 3, "three readers")
        for _ in range(4):  # the excess, one after another while the download is held
            async with edge.client.get(path) as resp:
                assert resp.status == 429
                assert resp.headers["Retry-After"] == "1"
                assert code_of(await resp.read()) == "TOOMANYREQUESTS"
        async with edge.client.get(path, headers={"Range": "bytes=0-9"}) as resp:
            assert resp.status == 429  # a range reader counts the same
    finally:
        fault.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*followers), 10)
    assert results == [(200, blob.data)] * 3
    assert len(fake.api_requests("GET")) == 1  # one download for all
    assert await edge.wait_published(digest)
    assert await fetch(edge, path) == (200, blob.data)  # cached: no limit applies


async def test_downloads_beyond_the_limit_wait_their_turn(
        fake: FakeRegistry, make_edge: MakeEdge) -> None:
    edge = await make_edge(top={"limits": {"max_downloads": 1}})
    first, second = make_layer(100_000, seed=9), make_layer(100_000, seed=10)
    a, b = fake.add_blob(first), fake.add_blob(second)
    gate = fake.fault(a, BlobFault(gate_after=10_000)).gate
    task_a = asyncio.create_task(fetch(edge, f"/v2/{REPO}/blobs/{a}"))
    await await_until(lambda: fake.api_requests("GET"), "the first download")
    task_b = asyncio.create_task(fetch(edge, f"/v2/{REPO}/blobs/{b}"))
    try:
        await await_until(lambda: edge.sample("edgecache_downloads_in_flight") == 2,
                         "the second fill to be queued")
        for _ in range(20):  # while the first is held, the second never reaches the upstream
            await asyncio.sleep(0.01)  # a window to prove an absence in, not an event stand-in
            assert [r.path for r in fake.api_requests("GET")] == [f"/v2/{REPO}/blobs/{a}"]
        assert not task_b.done()
    finally:
        gate.set()
    await await_until(lambda: len(fake.api_requests("GET")) == 2, "the second download")
    assert fake.completed.get(a) == 1  # it started after the first one's body was sent whole
    assert await asyncio.wait_for(task_a, 10) == (200, first.data)
    assert await asyncio.wait_for(task_b, 10) == (200, second.data)
    gets = fake.api_requests("GET")
    assert [r.path for r in gets] == [f"/v2/{REPO}/blobs/{a}", f"/v2/{REPO}/blobs/{b}"]
    assert fake.completed == {a: 1, b: 1}
