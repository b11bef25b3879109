"""Requests to one upstream: auth (basic, or bearer tokens from its token service), redirects
followed by us so credentials never leave its origin, and its error statuses as domain errors.

It sends through a `Session` and reports every exchange to an `Exchange` (the one I/O rule),
and owns neither: the registry API (`client.py`) reads bodies through the same `Exchange`, and
the health probe uses the same `Session` without auth. What is here is what a request needs
that a single send does not: credentials, the challenge-token-retry dance, and following
redirects ourselves.
"""


from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from yarl import URL

from edgecache import jsondoc
from edgecache.errors import (
    NameUnknown,
    NotFound,
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamUnavailable,
)
from edgecache.upstream.auth import (
    DEFAULT_TOKEN_TTL,
    Challenge,
    TokenCache,
    parse_challenge,
)
from edgecache.upstream.exchange import NETWORK_ERRORS, Exchange, read_upto
from edgecache.upstream.session import Session

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ERROR_BODY_LIMIT = 64 * 1024
TOKEN_BODY_LIMIT = 1 << 20
MAX_TOKEN_TTL = 86400.0  # an upstream's `expires_in` beyond a day is not believed


class Transport:
    """Auth, redirects and error statuses for one upstream's requests."""

    def __init__(self, session: Session, exchange: Exchange, basic: str | None) -> None:
        """`basic`: the configured credentials as a Basic header, sent only when challenged."""
        self.name = session.name
        self._basic = basic
        self._use_basic = False
        self._tokens = TokenCache(self._fetch_token)
        self._session = session
        self._exchange = exchange

    async def request(self, method: str, path: str, repository: str, *, accept: str | None = None,
                      extra: Mapping[str, str] | None = None,
                      params: Mapping[str, str] | None = None) -> aiohttp.ClientResponse:
        """`path` at the upstream with pull rights on `repository`: a 401 is answered once
        (a token for the challenge's scope, or the Basic credentials) and the request sent
        again; the response is the caller's to `check` and close."""
        scope = f"repository:{repository}:pull"
        headers = dict(extra or {})
        if accept:
            headers["Accept"] = accept
        url = self._session.url(path)
        if params:
            url = url.with_query(params)
        for attempt in (1, 2):
            token = self._tokens.get(scope)
            auth = f"Bearer {token}" if token else (self._basic if self._use_basic else None)
            self._exchange.guard()
            resp = await self._follow(method, url, headers, auth)
            if resp.status != 401 or attempt == 2:
                return resp
            challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            resp.release()
            if challenge is None:
                raise UpstreamAuthError(self.name, "401 without a usable WWW-Authenticate")
            if challenge.scheme == "basic":
                if self._basic is None:
                    raise UpstreamAuthError(self.name, "requires credentials; none configured")
                if self._use_basic:
                    raise UpstreamAuthError(self.name, "rejected the configured credentials")
                self._use_basic = True
            else:
                self._tokens.invalidate(scope, token)
                await self._tokens.obtain(challenge, scope, stale=token)
        raise AssertionError("unreachable")

    async def _follow(self, method: str, url: URL, headers: dict[str, str],
                      auth: str | None) -> aiohttp.ClientResponse:
        """Send, following redirects ourselves so Authorization never leaves the upstream's
        origin (Docker Hub sends blobs to a CDN with a signed URL of its own)."""
        origin = _origin(self._session.base)
        for _ in range(MAX_REDIRECTS + 1):
            sent = dict(headers)
            if auth and _origin(url) == origin:
                sent["Authorization"] = auth
            with self._exchange.stage("request"):
                resp = await self._session.send(method, url, sent)
            if resp.status >= 500 or resp.status == 429:
                self._exchange.failure("status_429" if resp.status == 429 else "status_5xx",
                             f"answered {resp.status}")
            elif resp.status != 401:  # a challenge proves nothing until the token service answers
                self._exchange.answered(resp)
            location = resp.headers.get("Location")
            if resp.status not in REDIRECT_STATUSES or not location:
                return resp
            resp.release()
            try:
                target = _parsed(resp.url.join(URL(location, encoded=True)))
            except ValueError as exc:
                raise UpstreamBadResponse(
                    self.name, f"redirect to an invalid URL {location[:100]!r}") from exc
            refusal = self._session.refusal(target)
            if refusal:
                raise UpstreamBadResponse(self.name, f"redirect {refusal}")
            if resp.status == 303 and method != "HEAD":
                method = "GET"
            url = target
        raise UpstreamBadResponse(self.name, f"more than {MAX_REDIRECTS} redirects")

    async def check(self, resp: aiohttp.ClientResponse, missing: type[NotFound]) -> None:
        """Nothing for a 200 or 206; else the status as the domain error the proxy decides on
        (`missing`: which NotFound a 404 is, by what was asked for)."""
        if resp.status in (200, 206):
            return
        code, message = await self._error_of(resp)
        status = resp.status
        if status == 404:
            detail = f": {message}" if message else ""  # a HEAD's 404 has no body
            if code == "NAME_UNKNOWN":
                raise NameUnknown(f"repository not known to upstream {self.name}{detail}")
            raise missing(f"not found at upstream {self.name}{detail}")
        if status in (401, 403):
            raise UpstreamAuthError(self.name, f"{status} {code or ''} {message}".strip())
        if status == 429 or status >= 500:
            raise UpstreamUnavailable(self.name, f"answered {status} {message}".strip())
        raise UpstreamBadResponse(self.name, f"unexpected status {status} {message}".strip())

    async def _error_of(self, resp: aiohttp.ClientResponse) -> tuple[str | None, str]:
        """The first OCI error code and message of an error body, tolerating any garbage."""
        if resp.method == "HEAD":
            return None, ""
        try:
            body = await read_upto(resp, ERROR_BODY_LIMIT)
            errors = jsondoc.parse_object(body, ERROR_BODY_LIMIT).get("errors") or []
            first = errors[0]
            return str(first.get("code", "")) or None, str(first.get("message", ""))[:200]
        except (*NETWORK_ERRORS, ValueError, RecursionError, AttributeError, IndexError, TypeError,
                KeyError):
            return None, ""

    async def _fetch_token(self, challenge: Challenge, scope: str) -> tuple[str, float]:
        realm = challenge.params.get("realm", "")
        try:
            realm_url = _parsed(URL(realm))
        except ValueError as exc:
            raise UpstreamAuthError(self.name, f"token realm {realm[:100]!r} is not a URL") from exc
        refusal = self._session.refusal(realm_url)  # upstream-chosen, and our credentials go there
        if refusal:
            raise UpstreamAuthError(self.name, f"token realm {refusal}")
        query = {"scope": challenge.params.get("scope") or scope}
        if "service" in challenge.params:
            query["service"] = challenge.params["service"]
        headers = {"Authorization": self._basic} if self._basic else {}
        self._exchange.guard()
        with self._exchange.stage("token"):
            url = realm_url.with_query(query)
            async with await self._session.send("GET", url, headers) as resp:
                if resp.status in (401, 403):
                    raise UpstreamAuthError(self.name, f"token service refused ({resp.status})")
                if resp.status != 200:
                    self._exchange.failure("token", f"token service answered {resp.status}")
                    raise UpstreamUnavailable(self.name, f"token service answered {resp.status}")
                body = await read_upto(resp, TOKEN_BODY_LIMIT)
        try:
            doc = jsondoc.parse(body, TOKEN_BODY_LIMIT)
        except jsondoc.JsonUnreadable as exc:
            raise UpstreamAuthError(self.name, "token service answered no JSON") from exc
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise UpstreamAuthError(self.name, "token service answered no token")
        ttl = doc.get("expires_in", DEFAULT_TOKEN_TTL) if isinstance(doc, dict) else None
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not ttl > 0:
            return token, DEFAULT_TOKEN_TTL
        return token, min(ttl, MAX_TOKEN_TTL)  # a huge int or Infinity: float() would overflow


def _origin(url: URL) -> tuple[str, str | None, int | None]:
    return (url.scheme, url.host, url.port)


def _parsed(url: URL) -> URL:
    """`url`, its authority checked now: yarl parses it lazily, and a bad IPv6 literal or a
    port over 65535 (an upstream's Location or token realm) raises ValueError where it is
    first read."""
    _ = url.host, url.port
    return url
