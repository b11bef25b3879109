"""Fuzzing the request surface with hypothesis.

1. The pure parsers, with many examples: `Router.resolve` (the URL path after /v2/ and `ns`)
   either raises one of edgecache's request errors or returns a target whose upstream is
   configured and whose repository and reference are valid; `parse_range` either raises
   RangeNotSatisfiable or returns a span inside the blob, and agrees with a model on
   well-formed headers.
2. The in-process app (build_app in front of the fake upstream), driven over a raw socket so
   nothing normalises the request: random paths mixing valid components, junk, percent-escapes,
   unicode and long segments; random methods, Range, Accept, Authorization and `ns`. Never a
   500, never an error logged as unexpected (edgecache's middleware or aiohttp's server), and
   the upstream only ever sees well-formed registry paths, while a second registry on loopback
   that edgecache is not configured for sees nothing at all.

Bounded for CI: derandomized (the same examples every run), 300 app examples and a time budget
of 20 s (the budget stops early, never fails). Run longer locally:

    EDGECACHE_FUZZ_EXAMPLES=5000 EDGECACHE_FUZZ_BUDGET=600 EDGECACHE_FUZZ_RANDOM=1 \\
        .venv/bin/pytest tests/unit/test_fuzz.py

(EDGECACHE_FUZZ_RANDOM=1 draws new examples each run instead of the fixed sequence; the pure
parser tests run ten times the app's example count.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgecache import config as config_mod
from edgecache.app import build_app
from edgecache.errors import (
    BlobUploadUnknown,
    DigestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    NotOffered,
    RangeNotSatisfiable,
)
from edgecache.metrics import Metrics
from edgecache.oci import DIGEST_RE, NAME_RE, TAG_RE
from edgecache.proxy.routing import Router
from edgecache.web.responses import parse_range
from tests.fakes.registry import FakeRegistry
from tests.support.images import make_image, make_index, make_layer

EXAMPLES = int(os.environ.get("EDGECACHE_FUZZ_EXAMPLES", "300"))
BUDGET = float(os.environ.get("EDGECACHE_FUZZ_BUDGET", "20"))
DERANDOMIZE = os.environ.get("EDGECACHE_FUZZ_RANDOM", "") != "1"

PURE = settings(max_examples=EXAMPLES * 10, deadline=None, derandomize=DERANDOMIZE,
                database=None)
APP = settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.large_base_example])

UPSTREAMS = ("fake.test", "docker.io", "registry-b.test:5000")
REQUEST_ERRORS = (NameInvalid, NameUnknown, ManifestUnknown, DigestInvalid, NotOffered,
                  BlobUploadUnknown)

# ---- building blocks ---------------------------------------------------------------------------

LAYERS = [make_layer(3000, seed=71), make_layer(40_000, seed=72)]
IMAGE = make_image(LAYERS)
INDEX = make_index([make_image([make_layer(2000, seed=73)], "amd64"),
                    make_image([make_layer(2000, seed=74)], "arm64")])
DIGESTS = [IMAGE.digest, INDEX.digest, *(b.digest for b in IMAGE.blobs),
           "sha256:" + "0" * 64, "sha512:" + "ab" * 64]

valid_words = st.sampled_from(["team", "app", "library", "alpine", "a", "x-y", "v1.2", "a__b",
                               "latest", "1.0", "fake.test", "docker.io", "FAKE.TEST",
                               "registry-b.test:5000", "localhost", "index.docker.io"])
api_words = st.sampled_from(["manifests", "blobs", "tags", "list", "uploads", "v2", "_catalog",
                             "referrers"])
escapes = st.sampled_from(["%2f", "%2F", "%2e", "%2e%2e", "%00", "%5c", "%25", "%252F", "%c0%ae",
                           "%ff", "%", "%zz", "%0d%0a", "%20", "%u002e", "%3f", "%23"])
dots = st.sampled_from(["..", ".", "...", "./", "../", "..;", ".%2e", "~", "*"])
junk = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20)
long_segment = st.builds(lambda c, n: c * n, st.sampled_from(["a", "9", ".", "%2f", "é", "-"]),
                         st.integers(100, 3000))
segment = st.one_of(valid_words, valid_words, api_words, api_words, st.sampled_from(DIGESTS),
                    escapes, dots, junk, long_segment,
                    st.builds("".join, st.lists(st.one_of(valid_words, escapes, dots, junk),
                                                min_size=2, max_size=4)))
paths = st.builds(lambda parts, sep: sep.join(parts),
                  st.lists(segment, min_size=0, max_size=8),
                  st.sampled_from(["/", "/", "/", "//", "\\", "/./"]))
# the registry API's shape, so most examples reach the router's deeper checks and the upstream
prefixes = st.sampled_from(["", "", "", "fake.test/", "docker.io/", "FAKE.TEST/",
                            "index.docker.io/", "registry-b.test:5000/", "unknown.example/",
                            "localhost/", "127.0.0.1:1/"])
repositories = st.one_of(st.sampled_from(["team/app", "library/app", "app", "team/multi",
                                          "nothere/x", "a/b/c/d", "team/app/"]),
                         st.builds("/".join, st.lists(segment, min_size=1, max_size=3)))
kinds_refs = st.one_of(
    st.tuples(st.just("manifests"), st.one_of(st.sampled_from(["latest", "1.0", "2", "nope",
                                                               *DIGESTS]), segment)),
    st.tuples(st.just("blobs"), st.one_of(st.sampled_from(DIGESTS), segment)),
    st.tuples(st.just("referrers"), st.one_of(st.sampled_from(DIGESTS), segment)),
    st.tuples(st.just("tags"), st.sampled_from(["list", "list/", "all", "list?n=1"])),
    st.tuples(api_words, segment))


def _mutate(path: str, where: int, insert: str, cut: int) -> str:
    """Insert a hostile piece somewhere, or cut a few characters out."""
    where %= len(path) + 1
    return path[:where] + insert + path[where + cut:]


structured = st.builds(lambda p, r, kr: f"{p}{r}/{kr[0]}/{kr[1]}", prefixes, repositories,
                       kinds_refs)
mutated = st.builds(_mutate, structured, st.integers(0, 400),
                    st.one_of(escapes, dots, st.just("/"), junk, st.just("")),
                    st.integers(0, 3))
api_paths = st.one_of(structured, structured, mutated, mutated, paths)
# digits to str.isdigit are not all digits to int(), nor ASCII (RFC 9110's DIGIT)
digitish = st.text(st.sampled_from("0123456789") | st.characters(categories=["Nd", "No", "Nl"]),
                   min_size=1, max_size=4)
tricky_ranges = st.builds(lambda a, b: f"bytes={a}-{b}", st.one_of(st.just(""), digitish),
                          st.one_of(st.just(""), digitish))
ns_values = st.one_of(st.none(), st.sampled_from([*UPSTREAMS, "FAKE.TEST", "", "..", "../..",
                                                  "169.254.169.254", "127.0.0.1", "[::1]",
                                                  "fake.test/..", "unknown.example"]), junk)


# ---- 1. the pure parsers -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def router() -> Router:
    return Router(UPSTREAMS, "docker.io")


@PURE
@given(path=api_paths, ns=st.one_of(st.none(), ns_values))
def test_router_resolves_only_to_valid_targets(router: Router, path: str, ns: str | None) -> None:
    try:
        target = router.resolve(path, ns)
    except REQUEST_ERRORS:
        return
    assert target.upstream in UPSTREAMS
    assert NAME_RE.fullmatch(target.repository) and len(target.repository) <= 255
    assert ".." not in target.repository.split("/") and "%" not in target.repository
    if target.kind == "tags":
        assert target.reference == "list"
    elif target.kind in ("blobs", "referrers") or ":" in target.reference:
        assert DIGEST_RE.fullmatch(target.reference)
        assert re.fullmatch(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}", target.reference)
    else:
        assert TAG_RE.fullmatch(target.reference)
    # what the upstream will be asked for is a plain path: nothing left to decode or normalise
    upstream_path = f"/v2/{target.repository}/{target.kind}/{target.reference}"
    assert "//" not in upstream_path and "/./" not in upstream_path
    assert not set(upstream_path) & set("%\\?#\x00 \r\n")


@PURE
@given(header=st.one_of(st.none(), st.text(max_size=40), tricky_ranges,
                        st.builds(lambda a, b: f"bytes={a}-{b}",
                                  st.one_of(st.just(""), st.integers(0, 10**6).map(str), junk),
                                  st.one_of(st.just(""), st.integers(0, 10**6).map(str), junk))),
       size=st.integers(0, 10**6))
def test_parse_range_raises_only_range_errors_and_stays_inside(header: str | None,
                                                               size: int) -> None:
    try:
        span = parse_range(header, size)
    except RangeNotSatisfiable:
        assert header is not None
        return
    if header is None:
        assert span is None
        return
    assert span is not None
    start, end = span
    assert 0 <= start < end <= size


@PURE
@given(first=st.one_of(st.none(), st.integers(0, 2**70)),
       last=st.one_of(st.none(), st.integers(0, 2**70)), size=st.integers(0, 10**7),
       spaces=st.sampled_from(["", " ", "  "]), unit=st.sampled_from(["bytes", "BYTES", "Bytes"]))
def test_parse_range_agrees_with_the_rfc_on_well_formed_headers(
        first: int | None, last: int | None, size: int, spaces: str, unit: str) -> None:
    header = (f"{unit}={spaces}{'' if first is None else first}{spaces}-"
              f"{spaces}{'' if last is None else last}{spaces}")
    expected: tuple[int, int] | None
    if first is None and last is None:
        expected = None
    elif first is None:
        assert last is not None
        expected = (max(0, size - last), size) if last > 0 and size > 0 else None
    else:
        end = size if last is None else min(last + 1, size)
        expected = (first, end) if first < size and first < end else None
    try:
        got = parse_range(header, size)
    except RangeNotSatisfiable:
        got = None
    assert got == expected, header


# ---- 2. the app ----------------------------------------------------------------------------------

@dataclass
class Rig:
    loop: asyncio.AbstractEventLoop
    host: str
    port: int
    fake: FakeRegistry
    bystander: FakeRegistry
    errors: list[logging.LogRecord]
    storage: Path
    examples: int = 0
    started: float = 0.0
    upstream_requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


class _Collect(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


async def _serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """One event loop, one fake, one edgecache for every example (built once: fast)."""
    fake, bystander = FakeRegistry(), FakeRegistry()
    fake.add_image("team/app", IMAGE, tags=("latest", "1.0"))
    fake.add_image("library/app", IMAGE, tags=("latest",))
    fake.add_index("team/multi", INDEX, tags=("2",))
    bystander.add_image("team/app", IMAGE, tags=("latest",))

    async def start(servers: list[TestServer]) -> tuple[str, int]:
        for registry in (fake, bystander):
            server = await _serve(registry.app)
            servers.append(server)
            registry.url = str(server.make_url("")).rstrip("/")
        config = config_mod.from_mapping({
            "listen": {"http": None},
            "storage": {"path": str(tmp_path / "cache")},
            "upstreams": {name: {"url": fake.url, "connect_timeout": "2s",
                                 "response_timeout": "5s"} for name in UPSTREAMS},
            "default_upstream": "docker.io",
            "cache": {"tag_ttl": "0s"},
        })
        server = await _serve(build_app(config, Metrics()))
        servers.append(server)
        assert server.port is not None
        return "127.0.0.1", server.port

    with serving(start) as (loop, host, port, errors):
        yield Rig(loop, host, port, fake, bystander, errors, tmp_path / "cache")


Start = Callable[[list[TestServer]], Coroutine[Any, Any, tuple[str, int]]]


@contextlib.contextmanager
def serving(start: Start) -> Iterator[
        tuple[asyncio.AbstractEventLoop, str, int, list[logging.LogRecord]]]:
    """A fresh loop running what `start` serves (it adds every server it starts to the list
    it is given), every ERROR of edgecache and aiohttp collected; at the end the servers close
    in reverse order, then the loop."""
    loop = asyncio.new_event_loop()
    servers: list[TestServer] = []
    errors: list[logging.LogRecord] = []
    handler = _Collect(errors)
    watched = [logging.getLogger(name) for name in ("edgecache", "aiohttp")]
    for logger in watched:
        logger.addHandler(handler)
    try:
        host, port = loop.run_until_complete(start(servers))
        yield loop, host, port, errors
    finally:
        for logger in watched:
            logger.removeHandler(handler)
        for server in reversed(servers):
            loop.run_until_complete(server.close())
        loop.close()


async def exchange(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    """Send raw bytes; the status (0 when the server closed without answering) and body."""
    status, _, body = await exchange_with_headers(host, port, request)
    return status, body


async def exchange_with_headers(host: str, port: int, request: bytes
                                ) -> tuple[int, dict[str, str], bytes]:
    """Raw bytes in; the status (0 if the server closed without answering), headers, body."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 15)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return (int(match.group(1)) if match else 0), headers, body


UPSTREAM_PATH = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<ref>[^/]+)")
# what the HTTP parser lets through to the app: visible ASCII, spaces, tabs, some non-ASCII
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E)
                      | st.sampled_from(["\t", "é", "²", "١", "０"]), max_size=60)
header_junk = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=60)
good_ranges = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(0, 50_000).map(str),
              st.one_of(st.just(""), st.integers(0, 50_000).map(str))),
    st.builds(lambda n: f"bytes=-{n}", st.integers(0, 50_000)))
hostile_ranges = st.one_of(
    tricky_ranges, tricky_ranges,
    st.builds(lambda n: "bytes=" + ",".join(["0-"] * n), st.integers(2, 500)),
    st.sampled_from(["bytes=²-", "bytes=0-1,1-2", "bytes=100000-", "bytes=-0", "bytes=--1",
                     "bytes=0-0x10", "bytes=١-", "items=0-1", "bytes=18446744073709551616-"]),
    header_text)
good_accepts = st.sampled_from([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json", "*/*"])
clean_prefixes = st.sampled_from(["", "", "fake.test/", "docker.io/", "FAKE.TEST/",
                                  "index.docker.io/", "registry-b.test:5000/"])
clean_repositories = st.sampled_from(["team/app", "library/app", "app", "team/multi",
                                      "nothere/x"])
clean_kinds_refs = st.one_of(
    st.tuples(st.just("manifests"), st.sampled_from(["latest", "1.0", "2", "nope", *DIGESTS])),
    st.tuples(st.just("blobs"), st.sampled_from(DIGESTS)),
    st.tuples(st.just("tags"), st.just("list")))
clean_paths = st.builds(lambda p, r, kr: f"{p}{r}/{kr[0]}/{kr[1]}", clean_prefixes,
                        clean_repositories, clean_kinds_refs)


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]

    def wire(self, host: str, port: int) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1", f"Host: {host}:{port}",
                 "Connection: close", *(f"{k}: {v}" for k, v in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """Two in three are well-formed pulls (some with one hostile piece), the rest hostile
    throughout."""
    hostile = draw(st.integers(0, 2)) == 0
    if hostile:
        method = draw(st.sampled_from(["GET"] * 4 + ["HEAD"] * 2 + [
            "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "get", "FOO"]))
        path = draw(api_paths)
        prefix = draw(st.sampled_from(["/v2/"] * 4 + ["/v2", "/", "", "/V2/", "//v2/"]))
        ns = draw(st.one_of(st.none(), ns_values))
    else:
        method = draw(st.sampled_from(["GET", "GET", "HEAD"]))
        path = draw(st.one_of(clean_paths, clean_paths, clean_paths,
                              st.builds(_mutate, clean_paths, st.integers(0, 200),
                                        st.one_of(escapes, dots, st.just("/")),
                                        st.integers(0, 2))))
        prefix = "/v2/"
        ns = draw(st.sampled_from([None] * 6 + [*UPSTREAMS, "FAKE.TEST", "unknown.example"]))
    raw = hostile and draw(st.integers(0, 3)) == 0  # as is (UTF-8 bytes), or percent-encoded
    target = prefix + (path if raw else quote(path, safe="/%:@+,;=~"))
    if ns is not None:
        target += "?ns=" + (ns if raw else quote(ns, safe=""))
    target = target.replace(" ", "%20") or "/"
    headers = []
    for name, good, bad in (("Range", good_ranges, hostile_ranges),
                            ("Accept", good_accepts, header_text),
                            ("Authorization", st.sampled_from(["Basic Og==", "Bearer x"]),
                             header_text)):
        choice = draw(st.integers(0, 9))
        if choice < 4:
            continue
        value = draw(good if choice < 6 else bad if choice < 9 or not hostile else header_junk)
        headers.append((name, value))
    return Request(method, target, tuple(headers))


def _parser_refusal(record: logging.LogRecord, status: int) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return (record.name == "aiohttp.server" and isinstance(exc, HttpProcessingError)
            and status in (0, 400, 414, 431))


# Regressions found by fuzzing, always run first: digits that str.isdigit accepts and int()
# refuses (a 500 once), in a Range and in a tag list's page size.
REGRESSIONS = [
    Request("GET", f"/v2/team/app/blobs/{LAYERS[0].digest}", (("Range", "bytes=²-"),)),
    Request("GET", f"/v2/team/app/blobs/{LAYERS[1].digest}", (("Range", "bytes=0-①"),)),
    Request("GET", "/v2/team/app/tags/list?n=%C2%B2", ()),
]


@APP
@given(req=requests())
@example(req=REGRESSIONS[0])
@example(req=REGRESSIONS[1])
@example(req=REGRESSIONS[2])
def _fuzz_app(rig: Rig, req: Request) -> None:
    if not rig.started:
        rig.started = time.monotonic()
    if time.monotonic() - rig.started > BUDGET:
        return  # the time budget is spent: the remaining examples pass without running
    rig.examples += 1
    request = req.wire(rig.host, rig.port)
    seen_before = len(rig.fake.requests)
    errors_before = len(rig.errors)

    status, body = rig.loop.run_until_complete(exchange(rig.host, rig.port, request))

    rig.statuses[status] = rig.statuses.get(status, 0) + 1
    assert status != 500, (request[:300], body[:300])
    assert status == 0 or 100 <= status < 500 or status in (502, 503), (request[:300], status)
    if status >= 400 and body[:12] == b'{"errors": [':
        assert json.loads(body)["errors"][0]["code"]
    # aiohttp's parser refusing malformed HTTP (answered 400 above) is the client's fault and
    # is logged by aiohttp.server, not edgecache; anything else at ERROR is a failure
    new_errors = [r for r in rig.errors[errors_before:] if not _parser_refusal(r, status)]
    assert not new_errors, [(r.name, r.getMessage(), r.exc_info) for r in new_errors]
    for recorded in rig.fake.requests[seen_before:]:
        rig.upstream_requests += 1
        match = UPSTREAM_PATH.fullmatch(recorded.path)
        assert match and recorded.raw_path.split("?")[0] == recorded.path, recorded.raw_path
        assert NAME_RE.fullmatch(match.group("name")), recorded.path
        assert ".." not in recorded.path and "\\" not in recorded.path
        assert recorded.method in ("GET", "HEAD")
    assert rig.bystander.requests == []


def test_the_app_never_fails_unexpectedly_and_never_strays(rig: Rig) -> None:
    _fuzz_app(rig)
    print(f"fuzz: {rig.examples} app examples in {time.monotonic() - rig.started:.1f}s, "
          f"statuses {sorted(rig.statuses.items())}, {rig.upstream_requests} upstream requests")
    # the budget stops early, never silently: a real number of examples must have run
    assert rig.examples >= min(EXAMPLES, 50)
    # and reached past the parsers: content served, the upstream asked
    assert rig.statuses.get(200, 0) + rig.statuses.get(206, 0) >= min(EXAMPLES // 20, 10)
    assert rig.upstream_requests >= min(EXAMPLES // 20, 10)
