"""One upstream's aiohttp session: its connection pool, where it may connect, its deadlines.

It sends single requests and knows nothing of auth, redirects or health: that lets the health
probe (which must not count as an exchange, nor wait on a token) use the same pool as the
requests it stands in for, and lets `Transport` and `Exchange` be built on it without either
owning the other. The address guard lives here because the resolver it filters is the pool's.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from yarl import URL

from edgecache import __version__
from edgecache.config import UpstreamConfig
from edgecache.metrics import Metrics
from edgecache.upstream.exchange import NETWORK_ERRORS
from edgecache.upstream.guard import AddressGuard, GuardedResolver, literal_class

PROBE_TIMEOUT = 5.0


class Session:
    """Requests to one upstream's origin (and where it redirects), one at a time."""

    def __init__(self, config: UpstreamConfig, metrics: Metrics) -> None:
        self.name = config.name
        self.base = URL(config.url)
        self._response_timeout = config.response_timeout
        self._metrics = metrics
        self._addresses = AddressGuard(self.base.host or "")
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
        await self._session.close()

    def url(self, path: str) -> URL:
        """`path` (from `/v2/` on) under the upstream's URL, which may carry a path prefix."""
        return self.base.with_path(self.base.path.rstrip("/") + path)

    async def send(self, method: str, url: URL, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """One request, with a deadline on the response headers: an upstream that accepts the
        connection and then says nothing (a black hole) fails in `response_timeout`, while a
        slow body may still take `read_timeout` between reads."""
        self._metrics.upstream_requests.labels(self.name).inc()
        started = time.monotonic()
        try:
            return await asyncio.wait_for(
                self._session.request(method, url, headers=headers, allow_redirects=False),
                self._response_timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"no answer within {self._response_timeout:g}s") from exc
        finally:
            self._metrics.upstream_duration.labels(self.name).observe(time.monotonic() - started)

    async def probe(self) -> bool:
        """Any HTTP answer below 500 from the API root means the upstream is back. A probe
        waits at most PROBE_TIMEOUT, so a black hole does not hold recovery back."""
        try:
            timeout = min(PROBE_TIMEOUT, self._response_timeout)
            async with await asyncio.wait_for(self.send("GET", self.url("/v2/"), {}),
                                              timeout) as resp:
                return resp.status < 500 and resp.status != 429
        except NETWORK_ERRORS:
            return False

    def refusal(self, url: URL) -> str | None:
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
