"""Who may pull: client credentials for upstreams whose `access` is `authenticated`.

A NodePort is reachable by every host on the edge network; a mirror holding credentials for a
private upstream would otherwise hand its images to anyone. Clients authenticate with HTTP Basic
(checked against a bcrypt htpasswd file), a static bearer token (a tokens file) or a token from
this server's own token endpoint (web/tokens.py, web/token_service.py), fetched with either.
`/v2/` and private routes answer 401 with a Bearer challenge naming that endpoint
(web/challenge.py); public upstreams need nothing, and `/v2/` opens to an anonymous token, so
dockerd, which holds no credentials for a mirror, still pulls public images through it.

bcrypt is slow on purpose (a quarter of a second a check at cost 12) and one thread serves
everyone, so a check never runs on the event loop: it runs on this object's own threads
(`MAX_CHECKS`, so password guessing takes at most that many cores, never the loop's). Checks
queue behind those up to `MAX_WAITING`; beyond that a request is answered 429 TOOMANYREQUESTS
at once rather than 401, because its password may well be right: a 401 would tell a real client
its credentials are wrong (docker reports a failed login, some clients stop retrying), a 429
says "retry shortly" (Retry-After: 1), which every registry client does, and costs the server
nothing. Concurrent checks of the same (user, password) share one computation.

A pull is dozens of requests, so a verified (user, password) pair is remembered, keyed by a hash
of both, until the file changes; a wrong one is remembered for `FAILED_TTL` (a client retrying
with a stale password costs one check a minute, not one per request). An unknown user name is
checked against a dummy hash of the file's cost, so its answer takes as long as a known user's:
timing does not tell which names exist. Files are re-read when their modification time changes;
comparisons are constant-time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from edgecache.config import AuthConfig
from edgecache.errors import TooManyRequests, Unauthorized
from edgecache.proxy.singleflight import SingleFlight
from edgecache.web import challenge
from edgecache.web.challenge import Refusal
from edgecache.web.tokens import TokenSigner

log = logging.getLogger(__name__)

VERIFIED_CACHE_LIMIT = 4096
FAILED_CACHE_LIMIT = 4096
FAILED_TTL = 60.0  # seconds a wrong (user, password) is refused without hashing it again
MAX_CHECKS = 1  # bcrypt computations at once, each on its own thread
MAX_WAITING = 8  # checks queued behind them before new ones get 429
BCRYPT_MAX_PASSWORD = 72  # bcrypt reads no further (htpasswd -B truncates there too)
_BCRYPT_RE = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
DEFAULT_COST = 12


class _Watched:
    """A small text file, re-read when its modification time or size changes."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self._stamp: tuple[int, int] | None = None
        self.lines: list[str] = []

    def refresh(self) -> bool:
        """True when the content changed."""
        if self.path is None:
            return False
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            log.error("cannot read %s: %s", self.path, exc.strerror)
            return False
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        text = self.path.read_text(encoding="utf-8", errors="replace")
        self.lines = [line.strip() for line in text.splitlines()
                      if line.strip() and not line.lstrip().startswith("#")]
        return True


def token_of(line: str) -> str:
    """A tokens file line is `token` or `name:token` (the name is for the operator)."""
    return line.rpartition(":")[2]


def first_token(config: AuthConfig) -> str | None:
    """The first static token of the tokens file: what `edgecache warm`, run with the service's
    own config, presents to the running service. None without a tokens file or token."""
    watched = _Watched(config.tokens_file)
    watched.refresh()
    return token_of(watched.lines[0]) if watched.lines else None


class ClientAuth:
    def __init__(self, config: AuthConfig, authenticated: Iterable[str],
                 max_checks: int = MAX_CHECKS, max_waiting: int = MAX_WAITING,
                 pushes: bool = False) -> None:
        self.realm = config.realm
        self.service = config.realm  # named in Bearer challenges and carried by the client
        self.tokens = TokenSigner()
        self._locked = frozenset(authenticated)
        self._pushes = pushes  # authenticated pushes (local.push): the root challenges too
        self._htpasswd = _Watched(config.htpasswd_file)
        self._tokens_file = _Watched(config.tokens_file)
        self._users: dict[str, bytes] = {}
        self._dummy = dummy_hash(())
        self._tokens: list[bytes] = []
        self._verified: set[bytes] = set()
        self._failed: OrderedDict[bytes, float] = OrderedDict()  # key -> when to forget it
        self._generation = 0  # bumped when the htpasswd file changes
        self._max_checks = max(1, max_checks)
        self._max_waiting = max(0, max_waiting)
        self._pool: ThreadPoolExecutor | None = None  # made at the first check
        self._checks: SingleFlight[bytes, bool] = SingleFlight()  # running or queued, by key
        self.hashes_checked = 0  # bcrypt computations started: what a guesser costs us
        self._reload()

    def _reload(self) -> None:
        if self._htpasswd.refresh():
            users = {}
            for line in self._htpasswd.lines:
                user, sep, hashed = line.partition(":")
                if sep and _BCRYPT_RE.fullmatch(hashed):
                    users[user] = ("$2b$" + hashed[4:]).encode()
                else:
                    log.warning("htpasswd entry for %r is not bcrypt; ignored", user)
            self._users = users
            self._dummy = dummy_hash(users.values())
            self._verified.clear()
            self._failed.clear()
            self._generation += 1
        if self._tokens_file.refresh():
            self._tokens = [token_of(line).encode() for line in self._tokens_file.lines]

    @property
    def checking(self) -> int:
        """Password checks running or queued."""
        return len(self._checks)

    def required(self, upstream: str | None) -> bool:
        """For an upstream, whether it is locked; for the API root, whether any is."""
        if upstream is None:
            return bool(self._locked) or self._pushes
        return upstream in self._locked

    async def check(self, request: web.Request, upstream: str | None) -> None:
        """Raise Unauthorized unless the route is public or the credentials are valid
        (TooManyRequests when too many password checks are under way). `upstream` None is the
        API root, which an anonymous token opens. A public route ignores Authorization: a
        client may send one header to every registry."""
        if not self.required(upstream):
            return
        _, refusal = await self.identify(request.headers.get("Authorization", ""))
        if refusal is None or (refusal is Refusal.ANONYMOUS and upstream is None):
            return
        raise Unauthorized(challenge.message(request, refusal),
                           challenge.bearer(request, self.service, refusal))

    async def identify(self, header: str) -> tuple[str, Refusal | None]:
        """Who an Authorization header value names (a user, a token's name, a token's subject)
        and, when it does not open private routes, why not."""
        scheme, _, value = header.partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if not header or (scheme == "basic" and value in ("", "Og==")):  # ":" base64: nothing
            return "", Refusal.MISSING
        ours = scheme == "bearer" and self.tokens.is_ours(value)
        if ours and (grant := self.tokens.verify(value)) is not None:
            return grant.subject, None if grant.authenticated else Refusal.ANONYMOUS
        subject = await self.subject(header)  # a static token may look like ours
        if subject is not None:
            return subject, None
        return "", Refusal.STALE if ours else Refusal.WRONG

    async def valid(self, header: str) -> bool:
        """Whether an Authorization header value holds a known token or user and password."""
        return await self.subject(header) is not None

    async def subject(self, header: str) -> str | None:
        """The user (Basic) or "token" (a static token) that valid credentials name, else None."""
        self._reload()
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            token = value.strip().encode("utf-8", "surrogateescape")  # a header's raw bytes
            ok = bool(token) and any(hmac.compare_digest(token, t) for t in self._tokens)
            return "token" if ok else None
        if scheme != "basic" or not self._users:
            return None
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode(
                "utf-8").partition(":")
        except (binascii.Error, ValueError):  # not base64, not ASCII, or not UTF-8 inside
            return None
        if not sep:
            return None
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        if key in self._verified:
            return user
        if self._recently_failed(key):
            return None
        generation = self._generation
        known = user in self._users
        matches = await self._bcrypt(key, password.encode(), self._users.get(user, self._dummy))
        ok = known and matches
        if generation == self._generation:  # the answer is about the file as it still is
            self._remember(key, ok)
        return user if ok else None

    def _recently_failed(self, key: bytes) -> bool:
        until = self._failed.get(key)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self._failed[key]
        return False

    def _remember(self, key: bytes, ok: bool) -> None:
        if ok:
            if len(self._verified) >= VERIFIED_CACHE_LIMIT:
                self._verified.clear()
            self._verified.add(key)
            return
        self._failed[key] = time.monotonic() + FAILED_TTL
        self._failed.move_to_end(key)
        while len(self._failed) > FAILED_CACHE_LIMIT:
            self._failed.popitem(last=False)

    async def _bcrypt(self, key: bytes, password: bytes, hashed: bytes) -> bool:
        """bcrypt on this object's threads; a caller that leaves does not free its place
        (the thread cannot be stopped), so the bound counts computations, not waiters."""
        def compute() -> asyncio.Future[bool]:  # only when no check of `key` is in flight
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_checks, thread_name_prefix="bcrypt")
            self.hashes_checked += 1
            return asyncio.wrap_future(self._pool.submit(checkpw, password, hashed))

        if key not in self._checks and len(self._checks) >= self._max_checks + self._max_waiting:
            raise TooManyRequests("too many password checks in progress; retry shortly")
        return await self._checks.run(key, compute)

    async def close(self) -> None:
        """At shutdown: queued checks are dropped, running ones (at most `max_checks`, each a
        fraction of a second; a thread in bcrypt cannot be interrupted) are awaited."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.shutdown(wait=False, cancel_futures=True)
        await self._checks.drain()


def checkpw(password: bytes, hashed: bytes) -> bool:
    """bcrypt's check, for any password: bcrypt 5 refuses passwords over 72 bytes where
    htpasswd (and older bcrypt) use their first 72."""
    import bcrypt  # here, not at start: ~0.4 MiB of RSS for services without an htpasswd

    return bool(bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed))


def dummy_hash(hashes: Iterable[bytes]) -> bytes:
    """A well-formed bcrypt hash that no password matches, at the most common cost among
    `hashes` (the highest of equally common ones): checking it takes as long as checking a
    user's own. Made without hashing anything, so a reload costs no bcrypt."""
    costs = Counter(int(h[4:6]) for h in hashes)
    cost = max(costs, key=lambda c: (costs[c], c)) if costs else DEFAULT_COST
    return b"$2b$%02d$" % cost + b"." * 53
