"""One upstream registry: requests with auth, redirects and timeouts, answers as domain values.

This is the only module that touches aiohttp's client; every failure leaves it as an
`UpstreamError` (or a `NotFound` when the upstream says the content does not exist), so the
proxy decides on meaning, never on exception types of a library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from edgecache import __version__, jsondoc
from edgecache.config import HealthConfig, UpstreamConfig
from edgecache.errors import (
    BlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    NotFound,
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamUnavailable,
)
from edgecache.metrics import Metrics
from edgecache.oci import MANIFEST_ACCEPT, OCI_INDEX
from edgecache.upstream.auth import (
    DEFAULT_TOKEN_TTL,
    Challenge,
    TokenCache,
    basic_header,
    parse_challenge,
)
from edgecache.upstream.guard import AddressGuard, GuardedResolver, literal_class
from edgecache.upstream.headers import content_range, leading_count, number
from edgecache.upstream.health import UpstreamHealth

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
PROBE_TIMEOUT = 5.0
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ERROR_BODY_LIMIT = 64 * 1024
TOKEN_BODY_LIMIT = 1 << 20
MAX_TOKEN_TTL = 86400.0  # an upstream's `expires_in` beyond a day is not believed
NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    """What a manifest HEAD (or GET) told us: any field may be missing from a lax upstream."""

    digest: str | None
    media_type: str | None
    size: int | None


class BlobStream:
    """An open upstream blob response; `start` is the offset of its first byte."""

    def __init__(self, client: UpstreamClient, response: aiohttp.ClientResponse, start: int,
                 total: int | None) -> None:
        self._client = client
        self._response = response
        self.start = start
        self.total = total

    async def chunks(self) -> AsyncIterator[bytes]:
        with self._client.exchange("body"):
            async for data in self._response.content.iter_any():
                yield data

    def close(self) -> None:
        self._response.close()


def _origin(url: URL) -> tuple[str, str | None, int | None]:
    return (url.scheme, url.host, url.port)


class UpstreamClient:
    """A client for one configured upstream, with its own connection pool and token cache."""

    def __init__(self, config: UpstreamConfig, manifest_limit: int,
                 health: HealthConfig, metrics: Metrics) -> None:
        self.name = config.name
        self.config = config
        self.base = URL(config.url)
        self.manifest_limit = manifest_limit
        self._addresses = AddressGuard(self.base.host or "")
        self._basic: str | None = None
        if config.username:
            self._basic = basic_header(config.username, config.password())
        self._use_basic = False
        self._tokens = TokenCache(self._fetch_token)
        self._metrics = metrics
        metrics.upstream_up.labels(self.name).set(1)
        self.health = UpstreamHealth(
            config.name, self._probe, threshold=health.failure_threshold,
            backoff_initial=health.probe_min_interval, backoff_max=health.probe_max_interval,
            on_change=lambda name, up: metrics.upstream_up.labels(name).set(1 if up else 0))
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
            ),
            connector=aiohttp.TCPConnector(limit=64, ttl_dns_cache=300,
                                           resolver=GuardedResolver(self._addresses)),
            auto_decompress=False,
            headers={"User-Agent": f"edgecache/{__version__}", "Accept-Encoding": "identity"},
        )

    async def close(self) -> None:
        await self.health.close()
        await self._session.close()

    def unavailable(self, exc: BaseException) -> UpstreamUnavailable:
        kind = type(exc).__name__
        detail = str(exc) or kind
        return UpstreamUnavailable(self.name, f"{kind}: {detail}"[:300])

    def failure(self, kind: str, reason: str, *, unanswered: bool = False) -> None:
        """One failed exchange: counted by kind, and towards marking the upstream down;
        `unanswered` when it failed by timing out (nothing came back)."""
        self._metrics.upstream_errors.labels(self.name, kind).inc()
        self.health.failure(reason, unanswered=unanswered)

    @contextlib.contextmanager
    def exchange(self, stage: str) -> Iterator[None]:
        """The one rule for upstream I/O. A network error anywhere (sending a request, reading
        a manifest, tag list, token or blob body) leaves as `UpstreamUnavailable` and counts as
        a failure towards marking the upstream down; a timeout also makes it suspect. A
        registry body read to its end is the exchange's success (the headers alone were not: an
        upstream that answers and then breaks every body is failing). `stage` labels the error
        metric; "request" (the headers) uses the error's own kind (dns, tls, timeout...), and
        its success depends on the status (`_follow`); a token service that answers proves
        nothing about the registry, so "token" counts only failures."""
        try:
            yield
        except NETWORK_ERRORS as exc:
            error = self.unavailable(exc)
            kind = _error_kind(exc)
            self.failure(kind if stage == "request" else stage, str(error),
                         unanswered=kind == "timeout")
            raise error from exc
        if stage == "body":
            self._succeeded()

    def _answered(self, resp: aiohttp.ClientResponse) -> None:
        """A status below 500 came back: the upstream answers (it is no longer suspect). The
        exchange has succeeded if there is no body for us to read, else once it is read."""
        remaining = leading_count(resp.headers.get("ratelimit-remaining"))
        if remaining is not None:
            self._metrics.ratelimit_remaining.labels(self.name).set(remaining)
        if resp.method == "HEAD" or resp.status not in (200, 206):
            self._succeeded()
        else:
            self.health.answered()

    def _succeeded(self) -> None:
        self.health.success()
        self._metrics.upstream_last_success.labels(self.name).set(time.time())

    def _guard(self) -> None:
        """Fail at once while the upstream is marked down: nobody waits on a dead link."""
        if not self.health.up:
            raise UpstreamUnavailable(
                self.name, f"unreachable (marked down: {self.health.last_error}); "
                "serving cached content only until it answers again")

    async def _probe(self) -> bool:
        """Any HTTP answer below 500 from the API root means the upstream is back. A probe
        waits at most PROBE_TIMEOUT, so a black hole does not hold recovery back."""
        try:
            root = self.base.with_path(self.base.path.rstrip("/") + "/v2/")
            timeout = min(PROBE_TIMEOUT, self.config.response_timeout)
            async with await asyncio.wait_for(self._send("GET", root, {}), timeout) as resp:
                return resp.status < 500 and resp.status != 429
        except NETWORK_ERRORS:
            return False

    # ---- the registry API -------------------------------------------------------------------

    async def head_manifest(self, repository: str, reference: str) -> ManifestInfo:
        path = f"/v2/{repository}/manifests/{reference}"
        async with await self._request("HEAD", path, repository, accept=MANIFEST_ACCEPT) as resp:
            await self._check(resp, ManifestUnknown)
            return ManifestInfo(
                digest=resp.headers.get("Docker-Content-Digest"),
                media_type=resp.headers.get("Content-Type"),
                size=number(resp.headers.get("Content-Length")),
            )

    async def get_manifest(self, repository: str, reference: str) -> tuple[bytes, ManifestInfo]:
        path = f"/v2/{repository}/manifests/{reference}"
        async with await self._request("GET", path, repository, accept=MANIFEST_ACCEPT) as resp:
            await self._check(resp, ManifestUnknown)
            declared = number(resp.headers.get("Content-Length"))
            if declared is not None and declared > self.manifest_limit:
                raise ManifestInvalid(f"manifest of {declared} bytes exceeds the size limit")
            with self.exchange("body"):
                body = await _read_upto(resp, self.manifest_limit + 1)
            if len(body) > self.manifest_limit:
                raise ManifestInvalid("manifest exceeds the size limit")
            if declared is not None and len(body) != declared:
                raise UpstreamUnavailable(self.name, "manifest response was cut short")
            info = ManifestInfo(
                digest=resp.headers.get("Docker-Content-Digest"),
                media_type=resp.headers.get("Content-Type"),
                size=len(body),
            )
            return body, info

    async def head_blob(self, repository: str, digest: str) -> int | None:
        async with await self._request("HEAD", f"/v2/{repository}/blobs/{digest}",
                                       repository) as resp:
            await self._check(resp, BlobUnknown)
            return number(resp.headers.get("Content-Length"))

    async def open_blob(self, repository: str, digest: str, offset: int = 0) -> BlobStream:
        """Open the blob from `offset`; `start` says where the body really starts (0 when the
        upstream ignored our Range)."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = await self._request("GET", f"/v2/{repository}/blobs/{digest}", repository,
                                   extra=headers)
        try:
            await self._check(resp, BlobUnknown)
            start, total = 0, number(resp.headers.get("Content-Length"))
            if resp.status == 206:
                first, total = content_range(resp.headers.get("Content-Range"))
                if first is None:
                    raise UpstreamBadResponse(self.name, "206 without a usable Content-Range")
                start = first
        except BaseException:
            resp.close()
            raise
        return BlobStream(self, resp, start, total)

    async def list_tags(self, repository: str,
                        query: Mapping[str, str]) -> tuple[list[object], str | None]:
        """The tags as the upstream sent them (`proxy/tags.py` sorts and pages) and its Link."""
        async with await self._request("GET", f"/v2/{repository}/tags/list", repository,
                                       params=query, accept="application/json") as resp:
            await self._check(resp, NameUnknown)
            _, doc = await self._json(resp, "tag list")
            tags = doc.get("tags")
            if not isinstance(tags, list | None):
                raise UpstreamBadResponse(self.name, "tag list has no list of tags")
            return tags or [], resp.headers.get("Link")

    async def get_referrers(self, repository: str, digest: str,
                            query: Mapping[str, str]) -> tuple[bytes, str | None, str | None]:
        """An OCI 1.1 upstream's referrers index: its bytes (checked to be an image index), its
        Link and OCI-Filters-Applied. A 404 is a NotFound: no referrers API there."""
        async with await self._request("GET", f"/v2/{repository}/referrers/{digest}", repository,
                                       params=query, accept=OCI_INDEX) as resp:
            await self._check(resp, ManifestUnknown)
            declared = (resp.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if declared != OCI_INDEX:
                raise UpstreamBadResponse(self.name, f"referrers as {declared[:100]!r}: no index")
            body, doc = await self._json(resp, "referrers answer")
            if not isinstance(doc.get("manifests"), list):
                raise UpstreamBadResponse(self.name, "referrers answer is not an image index")
            return body, resp.headers.get("Link"), resp.headers.get("OCI-Filters-Applied")

    async def _json(self, resp: aiohttp.ClientResponse, what: str) -> tuple[bytes, dict[str, Any]]:
        """A JSON object body of at most `manifest_limit` bytes, and its bytes."""
        with self.exchange("body"):
            body = await _read_upto(resp, self.manifest_limit + 1)
        if len(body) > self.manifest_limit:
            raise UpstreamBadResponse(self.name, f"{what} over {self.manifest_limit} bytes")
        try:
            doc = jsondoc.parse(body, self.manifest_limit)
        except jsondoc.JsonUnreadable as exc:
            raise UpstreamBadResponse(self.name, f"{what} is not JSON") from exc
        if not isinstance(doc, dict):
            raise UpstreamBadResponse(self.name, f"{what} is not a JSON object")
        return body, doc

    # ---- transport: auth, redirects, errors ---------------------------------------------------

    async def _request(self, method: str, path: str, repository: str, *, accept: str | None = None,
                       extra: Mapping[str, str] | None = None,
                       params: Mapping[str, str] | None = None) -> aiohttp.ClientResponse:
        scope = f"repository:{repository}:pull"
        headers = dict(extra or {})
        if accept:
            headers["Accept"] = accept
        url = self.base.with_path(self.base.path.rstrip("/") + path)
        if params:
            url = url.with_query(params)
        for attempt in (1, 2):
            token = self._tokens.get(scope)
            auth = f"Bearer {token}" if token else (self._basic if self._use_basic else None)
            self._guard()
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
        origin = _origin(self.base)
        for _ in range(MAX_REDIRECTS + 1):
            sent = dict(headers)
            if auth and _origin(url) == origin:
                sent["Authorization"] = auth
            with self.exchange("request"):
                resp = await self._send(method, url, sent)
            if resp.status >= 500 or resp.status == 429:
                self.failure("status_429" if resp.status == 429 else "status_5xx",
                             f"answered {resp.status}")
            elif resp.status != 401:  # a challenge proves nothing until the token service answers
                self._answered(resp)
            location = resp.headers.get("Location")
            if resp.status not in REDIRECT_STATUSES or not location:
                return resp
            resp.release()
            try:
                target = _parsed(resp.url.join(URL(location, encoded=True)))
            except ValueError as exc:
                raise UpstreamBadResponse(
                    self.name, f"redirect to an invalid URL {location[:100]!r}") from exc
            refusal = self._refusal(target)
            if refusal:
                raise UpstreamBadResponse(self.name, f"redirect {refusal}")
            if resp.status == 303 and method != "HEAD":
                method = "GET"
            url = target
        raise UpstreamBadResponse(self.name, f"more than {MAX_REDIRECTS} redirects")

    async def _send(self, method: str, url: URL, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """One request, with a deadline on the response headers: an upstream that accepts the
        connection and then says nothing (a black hole) fails in `response_timeout`, while a
        slow body may still take `read_timeout` between reads."""
        self._metrics.upstream_requests.labels(self.name).inc()
        started = time.monotonic()
        try:
            return await asyncio.wait_for(
                self._session.request(method, url, headers=headers, allow_redirects=False),
                self.config.response_timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"no answer within {self.config.response_timeout:g}s") from exc
        finally:
            self._metrics.upstream_duration.labels(self.name).observe(time.monotonic() - started)

    def _refusal(self, url: URL) -> str | None:
        """Why an upstream-chosen URL (a redirect target, a token realm) must not be fetched,
        or None: other schemes, a downgrade from https, a literal address of a class this
        upstream may not reach (names are checked by the resolver at connect time)."""
        if url.scheme not in ("http", "https") or not url.host:
            return f"to unsupported URL scheme {url.scheme!r}"
        if url.scheme == "http" and self.base.scheme == "https":
            return "from https to plain http refused"
        klass = literal_class(url.host)
        if klass is not None and not self._addresses.permits(url.host, url.host.strip("[]")):
            return f"to a {klass} address refused ({url.host})"
        return None

    async def _check(self, resp: aiohttp.ClientResponse, missing: type[NotFound]) -> None:
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
            body = await resp.content.read(ERROR_BODY_LIMIT)
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
        refusal = self._refusal(realm_url)  # upstream-chosen, and our credentials go there
        if refusal:
            raise UpstreamAuthError(self.name, f"token realm {refusal}")
        query = {"scope": challenge.params.get("scope") or scope}
        if "service" in challenge.params:
            query["service"] = challenge.params["service"]
        headers = {"Authorization": self._basic} if self._basic else {}
        self._guard()
        with self.exchange("token"):
            async with await self._send("GET", realm_url.with_query(query), headers) as resp:
                if resp.status in (401, 403):
                    raise UpstreamAuthError(self.name, f"token service refused ({resp.status})")
                if resp.status != 200:
                    self.failure("token", f"token service answered {resp.status}")
                    raise UpstreamUnavailable(self.name, f"token service answered {resp.status}")
                body = await _read_upto(resp, TOKEN_BODY_LIMIT)
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


async def _read_upto(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body up to `limit` bytes; `content.read(n)` alone returns only what has arrived."""
    body = bytearray()
    while len(body) < limit:
        data = await resp.content.read(limit - len(body))
        if not data:
            break
        body += data
    return bytes(body)


def _parsed(url: URL) -> URL:
    """`url`, its authority checked now: yarl parses it lazily, and a bad IPv6 literal or a
    port over 65535 (an upstream's Location or token realm) raises ValueError where it is
    first read."""
    _ = url.host, url.port
    return url


def _error_kind(exc: BaseException) -> str:
    """A bounded label for what went wrong on the wire."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns"
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return "tls"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError):
        return "connect"
    return "network"

