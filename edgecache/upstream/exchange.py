"""One upstream's connections: its session, its health, and the rule every exchange follows.

A network error anywhere leaves as `UpstreamUnavailable` and counts towards marking the upstream
down (`exchange`); while it is down, requests fail at once (`_guard`). `Transport` adds auth and
redirects on top, `UpstreamClient` the registry API.
"""


from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Iterator

import aiohttp
from yarl import URL

from edgecache import __version__
from edgecache.config import HealthConfig, UpstreamConfig
from edgecache.errors import (
    UpstreamUnavailable,
)
from edgecache.metrics import Metrics
from edgecache.upstream.guard import AddressGuard, GuardedResolver, literal_class
from edgecache.upstream.headers import leading_count
from edgecache.upstream.health import UpstreamHealth

PROBE_TIMEOUT = 5.0
NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class Exchange:
    """One upstream's connection pool, health and the one rule for upstream I/O (`exchange`)."""

    def __init__(self, config: UpstreamConfig, manifest_limit: int,
                 health: HealthConfig, metrics: Metrics) -> None:
        self.name = config.name
        self.config = config
        self.base = URL(config.url)
        self.manifest_limit = manifest_limit
        self._addresses = AddressGuard(self.base.host or "")
        self.ratelimit: tuple[int | None, int | None] = (None, None)
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
            # (remaining, limit) as last seen, for the status page
            self.ratelimit = (remaining, leading_count(resp.headers.get("ratelimit-limit")))
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


async def read_upto(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body up to `limit` bytes; `content.read(n)` alone returns only what has arrived."""
    body = bytearray()
    while len(body) < limit:
        data = await resp.content.read(limit - len(body))
        if not data:
            break
        body += data
    return bytes(body)


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
