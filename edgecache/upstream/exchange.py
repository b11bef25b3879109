"""The one rule for upstream I/O, and the health it feeds: a success is a body read to the end.

An upstream that answers and then breaks every body is failing, so the headers alone never
count as a success. Every exchange with an upstream, whatever part of it (sending a request,
reading a manifest, tag list, token or blob body), goes through `Exchange.stage`: a network
error leaves as `UpstreamUnavailable` and counts towards marking the upstream down; while it is
down, requests fail at once (`guard`). This class does no I/O itself: the transport
(`transport.py`) and the registry API (`client.py`) report to it, so the rule is kept in one
place whoever reads the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Iterator

import aiohttp

from edgecache.config import HealthConfig
from edgecache.errors import UpstreamUnavailable
from edgecache.metrics import Metrics
from edgecache.upstream.headers import leading_count
from edgecache.upstream.health import Probe, UpstreamHealth

NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class Exchange:
    """One upstream's exchange accounting: its health, its error and success metrics and the
    rate limit it last announced (the status page shows it)."""

    def __init__(self, name: str, health: HealthConfig, metrics: Metrics, probe: Probe) -> None:
        self.name = name
        self.ratelimit: tuple[int | None, int | None] = (None, None)  # (remaining, limit)
        self._metrics = metrics
        metrics.upstream_up.labels(name).set(1)
        self.health = UpstreamHealth(
            name, probe, threshold=health.failure_threshold,
            backoff_initial=health.probe_min_interval, backoff_max=health.probe_max_interval,
            on_change=lambda name, up: metrics.upstream_up.labels(name).set(1 if up else 0))

    async def close(self) -> None:
        """Stop the probe (if the upstream is down) and wait for it."""
        await self.health.close()

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
    def stage(self, stage: str) -> Iterator[None]:
        """The rule. A network error inside leaves as `UpstreamUnavailable` and counts as a
        failure; a timeout also makes the upstream suspect. A registry body read to its end
        ("body") is the exchange's success. `stage` labels the error metric; "request" (the
        headers) uses the error's own kind (dns, tls, timeout...), and its success depends on
        the status (`answered`); a token service that answers proves nothing about the
        registry, so "token" counts only failures."""
        try:
            yield
        except NETWORK_ERRORS as exc:
            error = self.unavailable(exc)
            kind = _error_kind(exc)
            self.failure(kind if stage == "request" else stage, str(error),
                         unanswered=kind == "timeout")
            raise error from exc
        if stage == "body":
            self.succeeded()

    def answered(self, resp: aiohttp.ClientResponse) -> None:
        """A status below 500 came back: the upstream answers (it is no longer suspect). The
        exchange has succeeded if there is no body for us to read, else once it is read."""
        remaining = leading_count(resp.headers.get("ratelimit-remaining"))
        if remaining is not None:
            self._metrics.ratelimit_remaining.labels(self.name).set(remaining)
            self.ratelimit = (remaining, leading_count(resp.headers.get("ratelimit-limit")))
        if resp.method == "HEAD" or resp.status not in (200, 206):
            self.succeeded()
        else:
            self.health.answered()

    def succeeded(self) -> None:
        self.health.success()
        self._metrics.upstream_last_success.labels(self.name).set(time.time())

    def guard(self) -> None:
        """Fail at once while the upstream is marked down: nobody waits on a dead link."""
        if not self.health.up:
            raise UpstreamUnavailable(
                self.name, f"unreachable (marked down: {self.health.last_error}); "
                "serving cached content only until it answers again")


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
