"""Fuzzing headers and query strings with hypothesis (issue 13's acceptance).

The in-process app (build_app in front of two fakes: a public upstream and an `authenticated`
one behind htpasswd and a tokens file), driven over a raw socket as tests/unit/test_fuzz.py
drives it: well-formed pulls of blobs (cold and cached), manifests and tag lists, each with
hostile `Range` headers (digits of every script, thousands of digits, many ranges, junk),
hostile `Authorization` headers (every scheme spelling, base64 of anything, invalid base64,
bytes that are not UTF-8, huge values) and hostile query strings (`n`, `last`, `ns` repeated,
thousands of digits, escapes, junk keys). Never a 500, nothing logged as unexpected (by
edgecache or aiohttp), no hang (every exchange has a deadline); a private route without valid
credentials is always 401; a 206 carries exactly the bytes its Content-Range names.

Bounded for CI as test_fuzz.py is (same knobs): derandomized, four times
EDGECACHE_FUZZ_EXAMPLES (300) examples within EDGECACHE_FUZZ_BUDGET (20 s; the budget stops
early, never fails); EDGECACHE_FUZZ_RANDOM=1 draws new examples each run.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgecache import config as config_mod
from edgecache.app import build_app
from edgecache.metrics import Metrics
from tests.fakes.registry import FakeRegistry
from tests.support.htpasswd import write_htpasswd
from tests.unit.test_fuzz import (
    APP,
    BUDGET,
    DIGESTS,
    EXAMPLES,
    IMAGE,
    INDEX,
    Request,
    Rig,
    _parser_refusal,
    _serve,
    digitish,
    exchange_with_headers,
    header_junk,
    header_text,
    serving,
    tricky_ranges,
)

PUBLIC, PRIVATE = "public.test", "private.test"
USER, PASSWORD, TOKEN = "alice", "pw", "tok-3f9c"
VALID_AUTH = (f"Basic {base64.b64encode(f'{USER}:{PASSWORD}'.encode()).decode()}",
              f"Bearer {TOKEN}")
HUGE = "9" * 5000  # past Python's 4,300-digit int() limit

def accepted(header: str | None) -> bool:
    """Whether these are the rig's credentials, as RFC 7235 lets a client spell them: the
    scheme in any case, then one space, the credentials with surrounding blanks ignored."""
    if header is None:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() == TOKEN
    if scheme.lower() != "basic":
        return False
    try:
        return base64.b64decode(value.strip(), validate=True) == f"{USER}:{PASSWORD}".encode()
    except ValueError:
        return False


# ---- strategies ---------------------------------------------------------------------------------

long_digits = st.builds(lambda c, n: c * n, st.sampled_from(["9", "0", "1", "٩", "²"]),
                        st.integers(19, 6000))
position = st.one_of(st.just(""), digitish, long_digits, st.integers(0, 60_000).map(str),
                     st.builds(lambda z, d: "0" * z + d, st.integers(1, 5000),
                               st.integers(0, 60_000).map(str)))
ranges = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", position, position),
    st.builds(lambda u, sp, a, b: f"{u}={sp}{a}{sp}-{sp}{b}{sp}",
              st.sampled_from(["bytes", "BYTES", "Bytes", "bytes ", "byte", ""]),
              st.sampled_from(["", " ", "\t"]), position, position),
    st.builds(lambda n: "bytes=" + ",".join(["0-1"] * n), st.integers(2, 300)),
    st.sampled_from([f"bytes={HUGE}-", f"bytes=0-{HUGE}", f"bytes=-{HUGE}", "bytes=--1",
                     "bytes=1-2-3", "bytes=-", "bytes==0-1", "bytes=0-1,", "bytes= , 0-1"]),
    tricky_ranges, header_text)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


schemes = st.sampled_from(["Basic", "basic", "BASIC", "Bearer", "bearer", "Digest", "Negotiate",
                           "", "Basic\t", "Basic  ", "Bearer  "])
credentials = st.one_of(
    st.builds(lambda u, p: _b64(f"{u}:{p}".encode("utf-8", "surrogatepass")),
              st.one_of(st.just(USER), st.text(max_size=20)),
              st.one_of(st.just(PASSWORD), st.text(max_size=20))),
    st.builds(_b64, st.binary(max_size=64)),  # not UTF-8, no colon, NULs
    st.sampled_from([TOKEN, TOKEN + " ", " " + TOKEN, TOKEN.upper(), "", "=", "====", "Og==",
                     _b64(b"alice"), _b64(b":"), _b64(b"alice:pw\x00"), "*", "%41"]),
    st.builds(lambda c, n: c * n, st.sampled_from(["A", "=", "é", "/"]),
              st.integers(100, 4000)),
    header_text)
authorizations = st.one_of(
    st.sampled_from(VALID_AUTH),
    st.builds(lambda s, c: f"{s} {c}".strip(), schemes, credentials),
    header_text, header_junk)
query_keys = st.sampled_from(["n", "n", "last", "last", "ns", "N", "", "n[]", "%6e", "n ", "x"])
query_values = st.one_of(
    st.integers(0, 1000).map(str), digitish, long_digits, st.just(HUGE),
    st.sampled_from(["", "-1", "0x10", "1e3", "latest", "zzz", PUBLIC, PRIVATE, "PRIVATE.TEST",
                     "..", "%00", "%ff", "%", "a&b", "a=b", "\u00e9"]),
    header_text)
queries = st.builds(
    lambda pairs, sep: sep.join(k if v is None else f"{k}={v}" for k, v in pairs),
    st.lists(st.tuples(query_keys, st.one_of(st.none(), query_values)), max_size=5),
    st.sampled_from(["&", "&", ";", "&&"]))


@st.composite
def requests(draw: st.DrawFn) -> tuple[Request, bool]:
    """A pull with hostile headers and query; and whether it is routed to the private
    upstream (by `ns`: the last `ns` that aiohttp's query parsing keeps is not guessed here,
    so only requests with exactly one `ns` are judged)."""
    kind = draw(st.sampled_from(["blob", "blob", "blob", "manifest", "tags"]))
    repo = draw(st.sampled_from(["team/app", "team/multi", "nothere/x"]))
    if kind == "blob":
        path = f"/v2/{repo}/blobs/{draw(st.sampled_from(DIGESTS))}"
    elif kind == "manifest":
        ref = draw(st.sampled_from(["latest", "2", "nope", IMAGE.digest, INDEX.digest]))
        path = f"/v2/{repo}/manifests/{ref}"
    else:
        path = f"/v2/{repo}/tags/list"
    query = draw(queries)
    private = draw(st.booleans())
    if draw(st.integers(0, 3)) > 0:  # most requests name their route
        query = f"ns={PRIVATE if private else PUBLIC}" + (f"&{query}" if query else "")
    else:
        private = False
    if "ns" in query.replace(f"ns={PRIVATE if private else PUBLIC}", "", 1):
        private = False  # a second ns: not judged
    encoded = draw(st.booleans())
    target = path + ("?" + (quote(query, safe="&;=") if encoded else query) if query else "")
    target = target.replace(" ", "%20")
    headers = [("Range", draw(ranges))] if draw(st.integers(0, 4)) else []
    if draw(st.integers(0, 4)):
        headers.append(("Authorization", draw(authorizations)))
    method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD"]))
    return Request(method, target, tuple(headers)), private


# ---- the rig ------------------------------------------------------------------------------------

@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """One loop, a public and a private fake, one edgecache with client auth for the private
    one (bcrypt cost 4: the fuzz is about parsing, not hashing)."""
    public, private = FakeRegistry(), FakeRegistry()
    for fake in (public, private):
        fake.add_image("team/app", IMAGE, tags=("latest", "1.0"))
        fake.add_index("team/multi", INDEX, tags=("2",))
    htpasswd, tokens = tmp_path / "htpasswd", tmp_path / "tokens"
    write_htpasswd(htpasswd, USER, PASSWORD)
    tokens.write_text(f"ci:{TOKEN}\n")

    async def start(servers: list[TestServer]) -> tuple[str, int]:
        for fake in (public, private):
            server = await _serve(fake.app)
            servers.append(server)
            fake.url = str(server.make_url("")).rstrip("/")
        config = config_mod.from_mapping({
            "listen": {"http": None},
            "storage": {"path": str(tmp_path / "cache")},
            "upstreams": {
                PUBLIC: {"url": public.url, "response_timeout": "5s"},
                PRIVATE: {"url": private.url, "response_timeout": "5s",
                          "access": "authenticated"}},
            "default_upstream": PUBLIC,
            "auth": {"htpasswd_file": str(htpasswd), "tokens_file": str(tokens)},
            "cache": {"tag_ttl": "0s"},
        })
        server = await _serve(build_app(config, Metrics()))
        servers.append(server)
        assert server.port is not None
        return "127.0.0.1", server.port

    with serving(start) as (loop, host, port, errors):
        yield Rig(loop, host, port, public, private, errors, tmp_path / "cache")


BLOB = f"/v2/team/app/blobs/{IMAGE.blobs[1].digest}"
REGRESSIONS = [  # each a 500 or a hang once
    Request("GET", BLOB, (("Range", f"bytes={HUGE}-"),)),
    Request("GET", BLOB, (("Range", f"bytes=0-{HUGE}"),)),
    Request("GET", BLOB + f"?ns={PUBLIC}", (("Range", f"bytes=-{HUGE}"),)),
    # base64 of a str that is not ASCII raises ValueError, not binascii.Error
    Request("HEAD", f"/v2/team/app/manifests/latest?ns={PRIVATE}",
            (("Authorization", "Basic é"),)),
    Request("GET", f"/v2/team/app/tags/list?ns={PUBLIC}&n={HUGE}", ()),
]


@settings(APP, max_examples=EXAMPLES * 4)  # ~5 ms an example: four times test_fuzz's count
@given(drawn=requests())
@example(drawn=(REGRESSIONS[0], False))
@example(drawn=(REGRESSIONS[1], False))
@example(drawn=(REGRESSIONS[2], False))
@example(drawn=(REGRESSIONS[3], True))
@example(drawn=(REGRESSIONS[4], False))
def _fuzz_headers(rig: Rig, drawn: tuple[Request, bool]) -> None:
    req, private = drawn
    if not rig.started:
        rig.started = time.monotonic()
    if time.monotonic() - rig.started > BUDGET:
        return  # the time budget is spent: the remaining examples pass without running
    rig.examples += 1
    wire = req.wire(rig.host, rig.port)
    errors_before = len(rig.errors)

    status, headers, body = rig.loop.run_until_complete(
        exchange_with_headers(rig.host, rig.port, wire))

    rig.statuses[status] = rig.statuses.get(status, 0) + 1
    assert status != 500, (wire[:300], body[:300])
    assert status == 0 or 100 <= status < 500 or status in (502, 503), (wire[:300], status)
    new_errors = [r for r in rig.errors[errors_before:] if not _parser_refusal(r, status)]
    assert not new_errors, [(r.name, r.getMessage(), r.exc_info) for r in new_errors]
    if private and status and not accepted(dict(req.headers).get("Authorization")):
        assert status in (400, 401), (wire[:300], status)
    if status == 206 and req.method == "GET":
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", headers.get("content-range", ""))
        assert match, headers
        first, last, size = (int(g) for g in match.groups())
        assert 0 <= first <= last < size and len(body) == last - first + 1, headers
    if status == 200 and private:
        rig.upstream_requests += 1  # private content served: valid credentials got through


def test_headers_and_queries_never_fail_unexpectedly(rig: Rig) -> None:
    _fuzz_headers(rig)
    print(f"fuzz headers: {rig.examples} examples in {time.monotonic() - rig.started:.1f}s, "
          f"statuses {sorted(rig.statuses.items())}, {rig.upstream_requests} private 200s")
    assert rig.examples >= min(EXAMPLES, 50)
    assert rig.statuses.get(200, 0) + rig.statuses.get(206, 0) >= min(EXAMPLES // 20, 10)
    assert rig.statuses.get(206, 0) >= 1 and rig.statuses.get(416, 0) >= 1
    assert rig.statuses.get(401, 0) >= 1 and rig.upstream_requests >= 1
