"""Password checks and the event loop: bcrypt is slow on purpose, and one thread serves everyone.

A wrong password must not stall other clients (the check runs off the loop), a guesser gets a
bounded number of checks at once (429 beyond, at once), a wrong password repeated costs one
check, and an unknown user name costs a check of the same cost as a known one. Costs are chosen
so that the order of events shows what happened (a check takes far longer than a cached answer);
nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edgecache.app import AUTH
from edgecache.config import AuthConfig
from edgecache.errors import TooManyRequests
from edgecache.web.auth import ClientAuth, checkpw, dummy_hash
from tests.fakes.registry import FakeRegistry
from tests.support.htpasswd import entry as htpasswd_entry
from tests.support.waiting import eventually
from tests.unit.conftest import Edge, MakeEdge

USER, PASSWORD = "alice", "correct horse battery staple"
POLL_ROUNDS, POLL_DELAY = 400, 0.01  # a bound on waiting for an event, never an assertion


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def entry(user: str, password: str, cost: int) -> str:
    return htpasswd_entry(user, password, cost)


async def poll(condition: Callable[[], bool]) -> bool:
    return await eventually(condition, timeout=POLL_ROUNDS * POLL_DELAY, interval=POLL_DELAY)


async def locked_edge(make_edge: MakeEdge, tmp_path: Path, *entries: str) -> Edge:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("".join(f"{e}\n" for e in entries))
    return await make_edge(access="authenticated",
                           top={"auth": {"htpasswd_file": str(htpasswd)}})


def auth_of(edge: Edge) -> ClientAuth:
    app = edge.client.app
    assert app is not None
    return app[AUTH]


async def status(edge: Edge, path: str, header: str | None = None) -> int:
    headers = {"Authorization": header} if header is not None else {}
    async with edge.client.get(path, headers=headers) as resp:
        await resp.read()
        return resp.status


async def test_a_password_check_does_not_stall_other_requests(
        make_edge: MakeEdge, tmp_path: Path) -> None:
    """At cost 14 a check takes about a second; /healthz and a remembered login are answered
    while it runs (the check used to run on the loop: nothing else moved until it ended)."""
    edge = await locked_edge(make_edge, tmp_path, entry(USER, PASSWORD, 4),
                             entry("bob", "bobs password", 14))
    auth = auth_of(edge)
    assert await status(edge, "/v2/", basic(USER, PASSWORD)) == 200  # remembered from now on
    wrong = asyncio.create_task(status(edge, "/v2/", basic("bob", "a guess")))
    assert await poll(lambda: auth.checking == 1 or wrong.done())
    assert await status(edge, "/healthz") == 200
    assert await status(edge, "/v2/", basic(USER, PASSWORD)) == 200
    assert not wrong.done(), "the other requests waited for the password check"
    assert await asyncio.wait_for(wrong, 60) == 401


async def test_a_wrong_password_is_remembered_until_the_file_changes(
        make_edge: MakeEdge, tmp_path: Path) -> None:
    edge = await locked_edge(make_edge, tmp_path, entry(USER, PASSWORD, 4))
    auth = auth_of(edge)
    for _ in range(5):
        assert await status(edge, "/v2/", basic(USER, "guess")) == 401
    assert auth.hashes_checked == 1
    results = await asyncio.gather(*(status(edge, "/v2/", basic(USER, "other guess"))
                                     for _ in range(10)))
    assert results == [401] * 10
    assert auth.hashes_checked == 2  # concurrent checks of one password share one computation
    assert await status(edge, "/v2/", basic(USER, PASSWORD)) == 200
    assert auth.hashes_checked == 3
    # the operator sets the password that was just refused: it works at once
    (tmp_path / "htpasswd").write_text(entry(USER, "guess", 4) + "\n")
    assert await status(edge, "/v2/", basic(USER, "guess")) == 200
    assert await status(edge, "/v2/", basic(USER, PASSWORD)) == 401


async def test_an_unknown_user_costs_a_check_like_a_known_one(
        make_edge: MakeEdge, tmp_path: Path) -> None:
    edge = await locked_edge(make_edge, tmp_path, entry(USER, PASSWORD, 5))
    auth = auth_of(edge)
    assert await status(edge, "/v2/", basic("mallory", PASSWORD)) == 401
    assert auth.hashes_checked == 1  # a bcrypt check ran, against the dummy
    assert await status(edge, "/v2/", basic("mallory", PASSWORD)) == 401
    assert auth.hashes_checked == 1  # and its failure is remembered as a known user's is


def test_the_dummy_hash_has_the_files_cost_and_matches_nothing() -> None:
    hashes = [b"$2b$05$" + b"a" * 53, b"$2b$12$" + b"b" * 53, b"$2b$12$" + b"c" * 53]
    assert dummy_hash(hashes).startswith(b"$2b$12$")  # the most common cost
    assert dummy_hash(hashes[:2]).startswith(b"$2b$12$")  # a tie: the higher
    assert dummy_hash([]).startswith(b"$2b$12$")
    dummy = dummy_hash([b"$2b$04$" + b"a" * 53])
    assert not checkpw(b"", dummy) and not checkpw(b"." * 72, dummy)


async def test_checks_beyond_the_bound_are_answered_429_at_once(
        make_edge: MakeEdge, tmp_path: Path) -> None:
    """One check at a time and eight queued (the defaults); the next guess is 429 with
    Retry-After, without waiting and without a check: a client with the right password
    retries, a guesser gets no more cores."""
    edge = await locked_edge(make_edge, tmp_path, entry(USER, PASSWORD, 4),
                             entry("bob", "bobs password", 14))
    auth = auth_of(edge)
    assert await status(edge, "/v2/", basic(USER, PASSWORD)) == 200
    guesses = [asyncio.create_task(status(edge, "/v2/", basic("bob", f"guess {i}")))
               for i in range(9)]
    assert await poll(lambda: auth.checking == 9 or any(g.done() for g in guesses))
    checked = auth.hashes_checked
    async with edge.client.get("/v2/", headers={"Authorization": basic("bob", "one more")}
                               ) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"
        assert json.loads(await resp.read())["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert auth.hashes_checked == checked
    assert await status(edge, "/v2/", basic(USER, PASSWORD)) == 200  # a remembered login
    assert not any(g.done() for g in guesses), "the bound was not full when the 429 came"
    for guess in guesses:  # not needed: the app's shutdown would drop the queued checks
        guess.cancel()
    await asyncio.gather(*guesses, return_exceptions=True)


async def test_a_check_abandoned_by_its_client_keeps_its_place_in_the_bound(
        tmp_path: Path) -> None:
    """A client that disconnects cannot stop its bcrypt thread: its place stays taken until
    the thread ends, or guessers could run any number of checks by hanging up."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(entry("bob", "bobs password", 12) + "\n")
    auth = ClientAuth(AuthConfig(htpasswd_file=str(htpasswd)), ["private"],
                      max_checks=1, max_waiting=1)
    try:
        first = asyncio.create_task(auth.valid(basic("bob", "guess 1")))
        second = asyncio.create_task(auth.valid(basic("bob", "guess 2")))
        await asyncio.sleep(0)  # both have started their checks
        first.cancel()
        second.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
        with pytest.raises(TooManyRequests):
            await auth.valid(basic("bob", "guess 3"))
        assert auth.hashes_checked == 2
    finally:
        await auth.close()
    assert auth.checking == 0


async def test_a_password_over_72_bytes_is_checked_not_a_500(
        fake: FakeRegistry, make_edge: MakeEdge, tmp_path: Path) -> None:
    """bcrypt 5 raises for passwords over 72 bytes; htpasswd -B uses their first 72."""
    long = "p" * 100
    edge = await locked_edge(make_edge, tmp_path, entry(USER, long, 4))
    assert await status(edge, "/v2/", basic(USER, long)) == 200
    assert await status(edge, "/v2/", basic(USER, "q" * 100)) == 401
    assert await status(edge, "/v2/", basic("mallory", "q" * 100)) == 401
