"""Registry authentication: `WWW-Authenticate` challenges and a token cache per scope.

The flow is the distribution token spec: a 401 names a realm, a service and a scope; we GET the
realm (with Basic credentials when configured) and reuse the token until shortly before it
expires. One fetch per scope at a time, so 20 cold requests do not ask the token service 20 times.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

_PARAM_RE = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
DEFAULT_TOKEN_TTL = 60.0
# Tokens are dropped this long before they expire, to absorb clock skew and request latency.
EXPIRY_MARGIN = 5.0
# Tokens kept (one per repository pulled): enough for every image a node runs, not for a client
# that names a million repositories.
TOKEN_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "bearer" or "basic", lower case
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """Parse one `WWW-Authenticate` value; None when it is not a challenge we understand."""
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "basic"):
        return None
    params = {}
    for m in _PARAM_RE.finditer(rest):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = value.replace('\\"', '"')
    return Challenge(scheme, params)


def basic_header(username: str, password: str) -> str:
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float


TokenFetcher = Callable[[Challenge, str], Awaitable[tuple[str, float]]]


class _Fetching:
    """One scope's fetch lock and how many requests hold or wait on it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class TokenCache:
    """Bearer tokens by scope, with one fetch in flight per scope.

    A scope is a repository, and clients name any repository they like: both maps are bounded.
    A scope's lock lives only while a request holds or waits on it; tokens are at most
    `limit`, the expired ones dropped first, then the least recently used."""

    def __init__(self, fetch: TokenFetcher, limit: int = TOKEN_LIMIT) -> None:
        self._fetch = fetch
        self._limit = max(1, limit)
        self._tokens: OrderedDict[str, _Token] = OrderedDict()
        self._locks: dict[str, _Fetching] = {}

    def __len__(self) -> int:
        """Tokens held."""
        return len(self._tokens)

    @property
    def fetching(self) -> int:
        """Scopes with a request holding or waiting on their fetch lock."""
        return len(self._locks)

    def get(self, scope: str) -> str | None:
        token = self._tokens.get(scope)
        if token is None:
            return None
        if token.expires_at <= time.monotonic():
            del self._tokens[scope]
            return None
        self._tokens.move_to_end(scope)
        return token.value

    def invalidate(self, scope: str, value: str | None) -> None:
        token = self._tokens.get(scope)
        if token is not None and token.value == value:
            del self._tokens[scope]

    async def obtain(self, challenge: Challenge, scope: str, stale: str | None) -> str:
        """A token for `scope`, fetched unless another request refreshed it meanwhile."""
        fetching = self._locks.get(scope)
        if fetching is None:
            fetching = self._locks[scope] = _Fetching()
        fetching.users += 1
        try:
            async with fetching.lock:
                current = self.get(scope)
                if current is not None and current != stale:
                    return current
                value, ttl = await self._fetch(challenge, scope)
                lifetime = max(ttl - EXPIRY_MARGIN, ttl / 2)
                self._store(scope, _Token(value, time.monotonic() + lifetime))
                return value
        finally:
            fetching.users -= 1
            if fetching.users == 0 and self._locks.get(scope) is fetching:
                del self._locks[scope]

    def _store(self, scope: str, token: _Token) -> None:
        self._tokens[scope] = token
        self._tokens.move_to_end(scope)
        if len(self._tokens) <= self._limit:
            return
        now = time.monotonic()
        for expired in [s for s, t in self._tokens.items() if t.expires_at <= now]:
            del self._tokens[expired]
        while len(self._tokens) > self._limit:
            self._tokens.popitem(last=False)
