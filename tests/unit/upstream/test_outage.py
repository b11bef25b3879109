"""Upstream outages, end to end over HTTP: tag TTL, stale-if-error, marked down, recovery.

Every test runs edgecache's real app against the fake upstream (or a TCP relay in front of it)
and counts what reaches the upstream. Waiting is done by bounded polling, never by asserting on
elapsed time. Covered elsewhere, not repeated here: tags/list falling back to seen tags
(test_tags.py) and a blob download resuming after a break (test_fills.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from tests.fakes.registry import FakeRegistry
from tests.support import indexfile
from tests.support.images import Image, make_image, make_layer, sha256
from tests.support.waiting import eventually
from tests.unit.conftest import UPSTREAM, Edge, MakeEdge

REPO = "team/app"
TAG_URL = f"/v2/{REPO}/manifests/latest"
POLL_ROUNDS = 200  # x POLL_DELAY: generous bound for a background probe, never an assertion
POLL_DELAY = 0.025

# The probe stays asleep for the whole test unless a test wants it.
NO_PROBE = {"probe_min_interval": "1h", "probe_max_interval": "1h"}


def settings(tag_ttl: str = "0s", **health: Any) -> dict[str, Any]:
    return {"cache": {"tag_ttl": tag_ttl}, "health": {**NO_PROBE, **health}}


async def error_of(resp: aiohttp.ClientResponse) -> tuple[str, str]:
    assert resp.content_type == "application/json"
    first = (await resp.json())["errors"][0]
    return str(first["code"]), str(first["message"])


async def tag(edge: Edge, method: str = "GET", url: str = TAG_URL) -> tuple[str, bytes]:
    """The tag's digest and body through edgecache; it must answer 200 with matching bytes."""
    async with edge.client.request(method, url) as resp:
        assert resp.status == 200
        body = await resp.read()
        digest = resp.headers["Docker-Content-Digest"]
        if method == "GET":
            assert sha256(body) == digest
        else:
            assert body == b""
        return digest, body


async def pull(edge: Edge, img: Image) -> None:
    """A full pull of `img` by tag: the manifest by tag and by digest, then every blob."""
    assert await tag(edge) == (img.digest, img.manifest)
    await pull_by_digest(edge, img)


async def pull_by_digest(edge: Edge, img: Image) -> None:
    for method in ("GET", "HEAD"):
        async with edge.client.request(method, f"/v2/{REPO}/manifests/{img.digest}") as resp:
            assert resp.status == 200
            assert resp.headers["Docker-Content-Digest"] == img.digest
            assert await resp.read() == (img.manifest if method == "GET" else b"")
        for blob in img.blobs:
            async with edge.client.request(method, f"/v2/{REPO}/blobs/{blob.digest}") as resp:
                assert resp.status == 200
                assert int(resp.headers["Content-Length"]) == len(blob.data)
                assert await resp.read() == (blob.data if method == "GET" else b"")


def upstream_up(edge: Edge) -> float:
    value = edge.metrics.registry.get_sample_value("edgecache_upstream_up",
                                                   {"upstream": UPSTREAM})
    assert value is not None, "the gauge is set for every configured upstream at start"
    return value


def stale_serves(edge: Edge) -> float:
    return edge.sample("edgecache_stale_serves_total", upstream=UPSTREAM)


def seen_by_upstream(fake: FakeRegistry) -> int:
    return len(fake.requests) + len(fake.token_requests)


def down_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "edgecache.upstream.health" and " is down " in r.getMessage()]


def up_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "edgecache.upstream.health" and " is up" in r.getMessage()]


async def wait_for_gauge(edge: Edge, value: float) -> bool:
    return await poll(lambda: upstream_up(edge) == value)


# ---- 1. tag TTL ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", ["1h", "0s"])
async def test_tag_ttl_decides_whether_the_upstream_is_asked(
        fake: FakeRegistry, make_edge: MakeEdge, ttl: str) -> None:
    img = make_image([make_layer(1000, 101)])
    fake.add_image(REPO, img)
    edge = await make_edge(top=settings(tag_ttl=ttl))

    assert await tag(edge) == (img.digest, img.manifest)  # cold: HEAD, then the body
    assert [(r.method, r.path) for r in fake.requests] == [
        ("HEAD", TAG_URL), ("GET", f"/v2/{REPO}/manifests/{img.digest}")]
    fake.requests.clear()

    for method in ("GET", "HEAD", "GET", "HEAD"):
        assert (await tag(edge, method))[0] == img.digest
    if ttl == "1h":
        assert fake.requests == []  # confirmed within the TTL: nobody is asked
    else:
        # Revalidated each time with a HEAD only; the body is cached, never fetched again.
        assert [(r.method, r.path) for r in fake.requests] == [("HEAD", TAG_URL)] * 4
    assert stale_serves(edge) == 0


# ---- 2. stale-if-error, per kind of failure -----------------------------------------------------

FAILURES = ["500", "429", "503-down", "refused", "token-500"]


async def break_upstream(fake: FakeRegistry, kind: str) -> None:
    if kind in ("500", "429"):
        fake.fail(int(kind))  # every request, the token realm included
    elif kind == "503-down":
        fake.down = True
    elif kind == "refused":
        await fake.stop()
    elif kind == "token-500":
        fake.revoke_tokens()  # the next request is challenged for a new token...
        fake.fail(500, path_contains="/token")  # ...which the token service cannot give
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", FAILURES)
async def test_cached_tag_is_served_stale_when_the_upstream_fails(
        fake: FakeRegistry, make_edge: MakeEdge, kind: str) -> None:
    img = make_image([make_layer(3000, 102), make_layer(2000, 103)])
    fake.add_image(REPO, img)
    if kind == "token-500":
        fake.require_bearer()
    edge = await make_edge(top=settings(failure_threshold=3))
    await pull(edge, img)
    if kind == "token-500":
        assert fake.token_requests, "the warm-up went through the token flow"

    # Content addressed by digest never needs the upstream once cached, even while it is up.
    before = seen_by_upstream(fake)
    await pull_by_digest(edge, img)
    assert seen_by_upstream(fake) == before

    await break_upstream(fake, kind)
    before = len(fake.requests)
    assert await tag(edge, "GET") == (img.digest, img.manifest)
    assert (await tag(edge, "HEAD"))[0] == img.digest
    assert stale_serves(edge) == 2

    # The upstream really was asked each time, and really failed.
    asked = fake.requests[before:]
    if kind == "refused":
        assert asked == []  # nothing can reach a closed port
    elif kind == "token-500":
        assert [(r.method, r.path, r.status) for r in asked] == [
            ("HEAD", TAG_URL, 401), ("HEAD", TAG_URL, 401)]
        assert [r.status for r in fake.token_requests[-2:]] == [500, 500]
    else:
        status = 503 if kind == "503-down" else int(kind)
        assert [(r.method, r.path, r.status) for r in asked] == [
            ("HEAD", TAG_URL, status), ("HEAD", TAG_URL, status)]
    assert upstream_up(edge) == 1  # two failures stay below the threshold of three

    # Manifests by digest and blobs are still served without asking the failing upstream.
    before = seen_by_upstream(fake)
    await pull_by_digest(edge, img)
    assert seen_by_upstream(fake) == before

    # Each of these failures counts towards marking the upstream down: the third does it,
    # and from then on the tag is answered without even trying.
    assert await tag(edge) == (img.digest, img.manifest)
    assert upstream_up(edge) == 0
    before = seen_by_upstream(fake)
    assert await tag(edge) == (img.digest, img.manifest)
    assert seen_by_upstream(fake) == before
    assert stale_serves(edge) == 4


# ---- 3. marked down: no upstream request, errors at once, one log line --------------------------


async def test_marked_down_after_threshold_answers_from_cache_without_asking(
        fake: FakeRegistry, make_edge: MakeEdge, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edgecache.upstream.health")
    img = make_image([make_layer(2000, 104)])
    fake.add_image(REPO, img)
    uncached_blob = fake.add_blob(make_layer(1500, 105).data)
    uncached = make_image([make_layer(1000, 106)])
    fake.add_image(REPO, uncached, tags=["other"])
    edge = await make_edge(top=settings(failure_threshold=2))
    await pull(edge, img)
    assert upstream_up(edge) == 1

    fake.fail(500)
    assert await tag(edge) == (img.digest, img.manifest)
    assert upstream_up(edge) == 1
    assert down_warnings(caplog) == []
    assert await tag(edge) == (img.digest, img.manifest)
    assert upstream_up(edge) == 0  # the second consecutive failure marks it down
    assert [r.status for r in fake.requests[-2:]] == [500, 500]
    asked = len(fake.requests)

    for _ in range(5):
        assert await tag(edge, "GET") == (img.digest, img.manifest)
        assert (await tag(edge, "HEAD"))[0] == img.digest
    await pull_by_digest(edge, img)
    async with edge.client.get(f"/v2/{REPO}/tags/list") as resp:
        assert resp.status == 200
        assert await resp.json() == {"name": REPO, "tags": ["latest"]}
    assert stale_serves(edge) == 2 + 10 + 1

    # What is not cached fails at once, saying why, without trying the upstream.
    for method, path in [("GET", f"/v2/{REPO}/blobs/{uncached_blob}"),
                         ("GET", f"/v2/{REPO}/manifests/{uncached.digest}"),
                         ("GET", f"/v2/{REPO}/manifests/other")]:
        async with edge.client.request(method, path) as resp:
            assert resp.status == 503
            code, message = await error_of(resp)
            assert code == "UNAVAILABLE"
            assert "marked down" in message
            assert UPSTREAM in message
    for path in (f"/v2/{REPO}/blobs/{uncached_blob}", f"/v2/{REPO}/manifests/{uncached.digest}"):
        async with edge.client.head(path) as resp:
            assert resp.status == 503

    assert len(fake.requests) == asked  # not one request while marked down
    assert edge.blob_files() == [edge.blob_path(d) for d in sorted(
        [img.digest, *(b.digest for b in img.blobs)], key=lambda d: d.split(":")[1])]
    assert edge.tmp_files() == []
    assert upstream_up(edge) == 0
    warnings = down_warnings(caplog)
    assert len(warnings) == 1, warnings  # the state change is logged once, not per request
    assert "after 2 failures" in warnings[0]
    assert "500" in warnings[0]


# ---- 4. recovery ------------------------------------------------------------------------------


@pytest.mark.parametrize("outage", [503, 429])
@pytest.mark.parametrize("ttl", ["0s", "1s"])
async def test_probe_marks_the_upstream_up_and_a_moved_tag_is_picked_up(
        fake: FakeRegistry, make_edge: MakeEdge, caplog: pytest.LogCaptureFixture,
        ttl: str, outage: int) -> None:
    caplog.set_level(logging.WARNING, logger="edgecache.upstream.health")
    old = make_image([make_layer(2000, 107)])
    new = make_image([make_layer(2000, 108)])
    fake.add_image(REPO, old)
    uncached_blob = fake.add_blob(make_layer(1000, 109).data)
    edge = await make_edge(top={
        "cache": {"tag_ttl": ttl},
        "health": {"failure_threshold": 1, "probe_min_interval": "50ms",
                   "probe_max_interval": "200ms"},
    })
    await pull(edge, old)

    fake.fail(outage)
    async with edge.client.get(f"/v2/{REPO}/blobs/{uncached_blob}") as resp:
        assert resp.status == 503
    assert upstream_up(edge) == 0
    fake.add_image(REPO, new)  # the tag moves while edgecache cannot see the upstream
    assert await tag(edge) == (old.digest, old.manifest)  # the cached one, stale or fresh

    # A probe answered with the outage's status does not count as the upstream being back.
    await poll(lambda: len(fake.api_requests("GET", "/v2/")) >= 2)
    assert [r.status for r in fake.api_requests("GET", "/v2/")][:2] == [outage, outage]
    assert upstream_up(edge) == 0

    fake.clear_failures()
    assert await wait_for_gauge(edge, 1), "the probe never marked the upstream up"
    probes = fake.api_requests("GET", "/v2/")
    assert probes[-1].status == 200
    assert len(down_warnings(caplog)) == 1
    assert len(up_warnings(caplog)) == 1

    if ttl == "0s":
        assert await tag(edge) == (new.digest, new.manifest)  # revalidated at once
    else:
        # Until the TTL runs out the old digest comes from cache without asking anyone; once
        # it has, a HEAD finds the tag moved. Never the old digest after asking.
        # (Which answers come from cache depends on the clock; the pairing never does.)
        answer = (old.digest, old.manifest)
        for _ in range(POLL_ROUNDS):
            before = len(fake.requests)
            answer = await tag(edge)
            asked = len(fake.requests) > before
            assert answer == ((new.digest, new.manifest) if asked else (old.digest, old.manifest))
            if asked:
                break
            await asyncio.sleep(POLL_DELAY)
        assert answer[0] == new.digest, "the moved tag was never picked up after the TTL"
        assert await tag(edge) == (new.digest, new.manifest)  # and it sticks

    # Both images stay available by digest; the blob that failed during the outage now fills.
    await pull_by_digest(edge, old)
    async with edge.client.get(f"/v2/{REPO}/manifests/{new.digest}") as resp:
        assert resp.status == 200
        assert await resp.read() == new.manifest
    async with edge.client.get(f"/v2/{REPO}/blobs/{uncached_blob}") as resp:
        assert resp.status == 200
        assert sha256(await resp.read()) == uncached_blob
    assert upstream_up(edge) == 1


# ---- 5. a black hole: accepts connections, never answers ----------------------------------------


class BlackHoleRelay:
    """A TCP relay on 127.0.0.1 to the fake. With `black_hole` set it keeps accepting
    connections and reading requests (kept in `swallowed`) but never forwards or answers, on
    new and already open connections alike: the upstream is a black hole."""

    def __init__(self, target: str) -> None:
        host, _, port = target.removeprefix("http://").rpartition(":")
        assert host == "127.0.0.1"
        self._target_port = int(port)
        self.black_hole = False
        self.hang_up = False
        self.swallowed = bytearray()
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._clients: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> BlackHoleRelay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def swallowed_requests(self, line: str) -> int:
        return bytes(self.swallowed).count(line.encode())

    def drop(self) -> None:
        """Hang up every connection edgecache opened to the relay, and every later one at once
        (aiohttp retries an idempotent request once on a new connection)."""
        self.hang_up = True
        for writer in self._clients:
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track(writer)
        self._clients.add(writer)
        if self.hang_up:
            writer.close()
            return
        upstream: asyncio.StreamWriter | None = None
        if not self.black_hole:
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self._target_port)
            self._track(upstream)
            back = asyncio.ensure_future(self._pipe(up_reader, writer))
            self._tasks.add(back)
            back.add_done_callback(self._tasks.discard)
        try:
            while data := await reader.read(65536):
                if self.black_hole or upstream is None:
                    self.swallowed += data  # read, and never answered
                else:
                    upstream.write(data)
                    await upstream.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass

    def _track(self, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        for writer in self._writers:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()


@pytest.fixture
async def relay(fake: FakeRegistry) -> AsyncIterator[BlackHoleRelay]:
    relay = await BlackHoleRelay(fake.url).start()
    try:
        yield relay
    finally:
        await relay.close()


async def test_black_hole_serves_stale_and_is_marked_down(
        fake: FakeRegistry, make_edge: MakeEdge, relay: BlackHoleRelay,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edgecache.upstream.health")
    img = make_image([make_layer(4000, 110)])
    fake.add_image(REPO, img)
    uncached_blob = fake.add_blob(make_layer(1000, 111).data)
    edge = await make_edge(url=relay.url, response_timeout="200ms", top={
        "cache": {"tag_ttl": "0s", "revalidate_timeout": "100ms"},
        "health": {"failure_threshold": 2, **NO_PROBE},
    })
    await pull(edge, img)  # warmed through the relay while it still forwards
    assert fake.requests and relay.swallowed == b""

    relay.black_hole = True
    answered = fake.requests[:]
    head_line = f"HEAD {TAG_URL} HTTP/1.1"
    rounds = 0
    while upstream_up(edge) == 1 and rounds < POLL_ROUNDS:
        rounds += 1
        # Each answer is the cached digest, although the revalidation never gets an answer.
        assert await tag(edge) == (img.digest, img.manifest)
        await asyncio.sleep(POLL_DELAY)
    assert upstream_up(edge) == 0, "black-holed requests never marked the upstream down"
    assert stale_serves(edge) == rounds
    # Exactly `failure_threshold` HEADs went into the hole: concurrent waiters share one
    # revalidation, and once marked down nothing more is sent.
    assert relay.swallowed_requests(head_line) == 2
    assert fake.requests == answered  # nothing got through to the real upstream

    assert await tag(edge) == (img.digest, img.manifest)
    assert (await tag(edge, "HEAD"))[0] == img.digest
    await pull_by_digest(edge, img)
    async with edge.client.get(f"/v2/{REPO}/blobs/{uncached_blob}") as resp:
        assert resp.status == 503
        code, message = await error_of(resp)
        assert code == "UNAVAILABLE"
        assert "marked down" in message
    assert relay.swallowed_requests(head_line) == 2
    assert relay.swallowed_requests("GET ") == 0
    warnings = down_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "TimeoutError" in warnings[0]


async def test_black_hole_for_an_uncached_tag_fails_without_hanging(
        fake: FakeRegistry, make_edge: MakeEdge, relay: BlackHoleRelay) -> None:
    """Nothing cached to fall back on: the client gets 503 UNAVAILABLE (after
    response_timeout) rather than waiting on the hole, and nothing is stored."""
    fake.add_image(REPO, make_image([make_layer(1000, 112)]))
    relay.black_hole = True
    edge = await make_edge(url=relay.url, response_timeout="200ms", top={
        "cache": {"tag_ttl": "0s", "revalidate_timeout": "100ms"},
        "health": {"failure_threshold": 5, **NO_PROBE},
    })
    async with edge.client.get(TAG_URL) as resp:
        assert resp.status == 503
        code, message = await error_of(resp)
        assert code == "UNAVAILABLE"
        assert "TimeoutError" in message
    assert relay.swallowed_requests(f"HEAD {TAG_URL} HTTP/1.1") == 1
    assert fake.requests == []
    assert edge.blob_files() == []
    assert upstream_up(edge) == 1
    assert stale_serves(edge) == 0


async def test_revalidation_stops_waiting_on_a_black_hole_after_revalidate_timeout(
        fake: FakeRegistry, make_edge: MakeEdge, relay: BlackHoleRelay) -> None:
    """With a response_timeout far beyond the test's patience, only cache.revalidate_timeout
    can bring the stale answer back; concurrent and later requests share the one HEAD still
    hanging in the hole instead of piling up more."""
    img = make_image([make_layer(1000, 113)])
    fake.add_image(REPO, img)
    edge = await make_edge(url=relay.url, response_timeout="60s", top={
        "cache": {"tag_ttl": "0s", "revalidate_timeout": "100ms"},
        "health": {"failure_threshold": 1, **NO_PROBE},
    })
    await pull(edge, img)
    relay.black_hole = True

    # A guard against hanging the suite, not a measurement: the answer needs no upstream.
    answers = await asyncio.wait_for(asyncio.gather(*(tag(edge) for _ in range(3))), 10)
    assert answers == [(img.digest, img.manifest)] * 3
    assert await asyncio.wait_for(tag(edge, "HEAD"), 10) == (img.digest, b"")
    assert stale_serves(edge) == 4
    assert relay.swallowed_requests(f"HEAD {TAG_URL} HTTP/1.1") == 1
    assert upstream_up(edge) == 1  # the one HEAD has not failed yet: it is still waiting


async def test_failures_in_flight_when_marked_down_log_the_change_once(
        fake: FakeRegistry, make_edge: MakeEdge, relay: BlackHoleRelay,
        caplog: pytest.LogCaptureFixture) -> None:
    """Five requests hang in the hole together, then all break at once: the threshold (2) is
    passed mid-way, the later failures land on an upstream already marked down, and the state
    change is still logged exactly once."""
    caplog.set_level(logging.WARNING, logger="edgecache.upstream.health")
    digests = [fake.add_blob(make_layer(500, 120 + i).data) for i in range(5)]
    edge = await make_edge(url=relay.url, top=settings(failure_threshold=2))
    relay.black_hole = True

    async def head(digest: str) -> tuple[int, str]:
        async with edge.client.head(f"/v2/{REPO}/blobs/{digest}") as resp:
            return resp.status, resp.headers.get("Docker-Content-Digest", "")

    pending = asyncio.gather(*(head(d) for d in digests))
    await poll(lambda: relay.swallowed_requests("HEAD ") == len(digests))
    assert relay.swallowed_requests("HEAD ") == len(digests)
    assert upstream_up(edge) == 1  # nothing has failed yet: all five are waiting
    relay.drop()
    assert [status for status, _ in await asyncio.wait_for(pending, 10)] == [503] * 5
    assert upstream_up(edge) == 0
    assert len(down_warnings(caplog)) == 1, down_warnings(caplog)

    async with edge.client.head(f"/v2/{REPO}/blobs/{digests[0]}") as resp:
        assert resp.status == 503
    async with edge.client.get(f"/v2/{REPO}/blobs/{digests[0]}") as resp:
        code, message = await error_of(resp)
        assert (resp.status, code) == (503, "UNAVAILABLE")
        assert "marked down" in message
    assert relay.swallowed_requests("HEAD ") == len(digests)
    assert relay.swallowed_requests("GET ") == 0
    assert fake.requests == []
    assert len(down_warnings(caplog)) == 1


# ---- 6. suspect: once a revalidation went unanswered, cached tags stop waiting --------------

OTHER_URL = f"/v2/{REPO}/manifests/other"


def answered_again(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "edgecache.upstream.health" and " answered again" in r.getMessage()]


def checked_at(edge: Edge, name: str) -> float:
    return indexfile.tag_checked_at(edge.storage, UPSTREAM, REPO, name)


async def poll(condition: Callable[[], bool]) -> bool:
    return await eventually(condition, timeout=POLL_ROUNDS * POLL_DELAY, interval=POLL_DELAY)


def head_statuses(fake: FakeRegistry, url: str) -> list[int | None]:
    return [r.status for r in fake.api_requests("HEAD", url)]


@pytest.mark.parametrize("expires", ["revalidate_timeout", "response_timeout"])
async def test_after_an_unanswered_revalidation_cached_tags_answer_at_once(
        fake: FakeRegistry, make_edge: MakeEdge, caplog: pytest.LogCaptureFixture,
        expires: str) -> None:
    """The upstream hangs on one tag. Whichever timer gives up on it (edgecache's wait, or the
    request's own response timeout), the upstream is suspect from then on: another expired
    cached tag is answered from cache without waiting for the upstream's answer, even one the
    upstream gives at once (the tag moved: the answer shows whether it was waited for). That
    HEAD still goes out; its answer ends the suspicion, and the moved tag is picked up."""
    caplog.set_level(logging.INFO, logger="edgecache.upstream.health")
    latest = make_image([make_layer(1000, 130)])
    old, new = make_image([make_layer(1000, 131)]), make_image([make_layer(1000, 132)])
    fake.add_image(REPO, latest)
    fake.add_image(REPO, old, tags=["other"])
    # The timer that should not expire is far beyond the test's patience.
    timers = ({"revalidate_timeout": "500ms", "response_timeout": "60s"}
              if expires == "revalidate_timeout"
              else {"revalidate_timeout": "60s", "response_timeout": "300ms"})
    edge = await make_edge(response_timeout=timers["response_timeout"], top={
        "cache": {"tag_ttl": "0s", "revalidate_timeout": timers["revalidate_timeout"]},
        "health": {"failure_threshold": 3, **NO_PROBE},
    })
    assert await tag(edge) == (latest.digest, latest.manifest)
    assert await tag(edge, url=OTHER_URL) == (old.digest, old.manifest)
    confirmed = checked_at(edge, "latest")

    gate = fake.hold(TAG_URL, method="HEAD")
    # A guard against hanging the suite, not a measurement.
    assert await asyncio.wait_for(tag(edge), 30) == (latest.digest, latest.manifest)
    assert stale_serves(edge) == 1
    assert head_statuses(fake, OTHER_URL) == [200]

    fake.add_image(REPO, new, tags=["other"])  # the upstream would answer this one at once
    assert await tag(edge, url=OTHER_URL) == (old.digest, old.manifest)
    assert stale_serves(edge) == 2
    if expires == "revalidate_timeout":
        assert head_statuses(fake, TAG_URL)[-1] is None  # the upstream still hangs on latest
    assert answered_again(caplog) == []

    # The HEAD went out all the same, in the background, and was answered: not suspect now.
    assert await poll(lambda: len(answered_again(caplog)) == 1), "the suspicion never ended"
    assert head_statuses(fake, OTHER_URL) == [200, 200]
    # Asking waits for the upstream again, which says the tag moved.
    assert await tag(edge, url=OTHER_URL) == (new.digest, new.manifest)
    assert await tag(edge, "HEAD", url=OTHER_URL) == (new.digest, b"")
    assert stale_serves(edge) == 2

    gate.set()
    if expires == "revalidate_timeout":
        # The first HEAD's late answer still confirms the tag in the index.
        assert await poll(lambda: checked_at(edge, "latest") > confirmed)
        assert head_statuses(fake, TAG_URL)[-1] == 200
    else:
        # It timed out: one failure, counted towards marking the upstream down.
        assert edge.sample("edgecache_upstream_errors_total", upstream=UPSTREAM,
                           kind="timeout") == 1
    assert upstream_up(edge) == 1
    assert await tag(edge) == (latest.digest, latest.manifest)
    assert stale_serves(edge) == 2


async def test_a_suspect_upstream_still_makes_uncached_tags_wait(
        fake: FakeRegistry, make_edge: MakeEdge) -> None:
    """Nothing cached to give: an uncached tag waits for the suspect upstream's answer."""
    latest = make_image([make_layer(1000, 133)])
    fresh = make_image([make_layer(1000, 134)])
    fake.add_image(REPO, latest)
    fake.add_image(REPO, fresh, tags=["other"])
    edge = await make_edge(response_timeout="60s", top={
        "cache": {"tag_ttl": "0s", "revalidate_timeout": "200ms"},
        "health": {"failure_threshold": 3, **NO_PROBE},
    })
    assert await tag(edge) == (latest.digest, latest.manifest)
    hanging = fake.hold(TAG_URL, method="HEAD")
    assert await asyncio.wait_for(tag(edge), 30) == (latest.digest, latest.manifest)
    assert stale_serves(edge) == 1  # suspect from here on

    released = fake.hold(OTHER_URL, method="HEAD")
    pending = asyncio.ensure_future(tag(edge, url=OTHER_URL))
    try:
        assert await poll(lambda: head_statuses(fake, OTHER_URL) == [None])
        assert not pending.done()  # waiting on the upstream, not answered by anyone else
        released.set()
        assert await asyncio.wait_for(pending, 30) == (fresh.digest, fresh.manifest)
    finally:
        pending.cancel()
        hanging.set()
    assert stale_serves(edge) == 1
    assert checked_at(edge, "other") > 0  # the tag now comes from the cache


async def test_background_revalidations_into_a_black_hole_mark_the_upstream_down(
        fake: FakeRegistry, make_edge: MakeEdge, relay: BlackHoleRelay) -> None:
    """While suspect nobody waits for the HEADs, but each one that fails still counts: the
    upstream is marked down by the revalidation of a tag that was answered from cache."""
    latest = make_image([make_layer(1000, 135)])
    other = make_image([make_layer(1000, 136)])
    fake.add_image(REPO, latest)
    fake.add_image(REPO, other, tags=["other"])
    edge = await make_edge(url=relay.url, response_timeout="300ms", top={
        "cache": {"tag_ttl": "0s", "revalidate_timeout": "100ms"},
        "health": {"failure_threshold": 2, **NO_PROBE},
    })
    assert await tag(edge) == (latest.digest, latest.manifest)
    assert await tag(edge, url=OTHER_URL) == (other.digest, other.manifest)
    relay.black_hole = True

    assert await asyncio.wait_for(tag(edge), 30) == (latest.digest, latest.manifest)
    assert await tag(edge, url=OTHER_URL) == (other.digest, other.manifest)
    assert stale_serves(edge) == 2
    assert await poll(lambda: upstream_up(edge) == 0), "never marked down"
    assert relay.swallowed_requests(f"HEAD {TAG_URL} HTTP/1.1") == 1
    assert relay.swallowed_requests(f"HEAD {OTHER_URL} HTTP/1.1") == 1
    assert edge.sample("edgecache_upstream_errors_total", upstream=UPSTREAM,
                       kind="timeout") == 2
    # Marked down: answered from cache, and nothing more goes into the hole.
    assert await tag(edge, url=OTHER_URL) == (other.digest, other.manifest)
    assert relay.swallowed_requests("HEAD ") == 2
