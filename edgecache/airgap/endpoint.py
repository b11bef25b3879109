"""Where `edgecache warm` pulls through: the running service, or the same app in this process.

A connection refused means "no service"; a server that answers but cannot be trusted, or does
not answer, is an error: starting a second edgecache on the same storage would be worse.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from edgecache.config import Config, parse_hostport
from edgecache.errors import EdgecacheError
from edgecache.web.auth import first_token

PROBE_TIMEOUT = 5.0
WILDCARDS = ("", "0.0.0.0", "::", "[::]")


@dataclass(frozen=True)
class Endpoint:
    url: str
    ssl: ssl.SSLContext | None = None
    local: bool = False

    def describe(self) -> str:
        return "an in-process edgecache" if self.local else f"the running service at {self.url}"


def _url(scheme: str, address: str, key: str) -> str:
    host, port = parse_hostport(address, key)
    if host in WILDCARDS:
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _trust(config: Config) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca = config.storage.path / "tls" / "ca.crt"
    if ca.is_file():
        context.load_verify_locations(cafile=str(ca))
    if config.tls.cert_file:  # an operator certificate may be self-signed
        with contextlib.suppress(OSError, ssl.SSLError):
            context.load_verify_locations(cafile=config.tls.cert_file)
    return context


async def find_service(config: Config) -> Endpoint | None:
    """The running service, if one answers on a configured listener; None if nothing listens."""
    candidates: list[Endpoint] = []
    if config.listen.http:
        candidates.append(Endpoint(_url("http", config.listen.http, "listen.http")))
    if config.listen.https:
        candidates.append(Endpoint(_url("https", config.listen.https, "listen.https"),
                                   _trust(config)))
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for endpoint in candidates:
            if await _answers(session, endpoint):
                return endpoint
    return None


async def _answers(session: aiohttp.ClientSession, endpoint: Endpoint) -> bool:
    url = endpoint.url + "/v2/"
    try:
        async with session.get(url, ssl=endpoint.ssl if endpoint.ssl is not None else True) \
                as response:
            if response.status in (200, 401):  # 401: some upstreams need client credentials
                return True
            raise EdgecacheError(f"{url} answers with HTTP {response.status}: is it edgecache?")
    except (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError) as exc:
        raise EdgecacheError(f"a server answers on {endpoint.url} but TLS failed ({exc}); not "
                             "starting a second edgecache on the same storage") from None
    except aiohttp.ClientConnectorError:
        return False  # refused or unreachable: nothing listens there
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise EdgecacheError(f"{endpoint.url} accepts connections but does not answer "
                             f"({exc or 'timeout'}); not starting a second edgecache") from None


@contextlib.asynccontextmanager
async def local_service(config: Config) -> AsyncIterator[Endpoint]:
    """The app `serve` runs, in this process, on a loopback port only this process knows."""
    from edgecache.app import build_app  # the composition root; imported only when needed

    runner = web.AppRunner(build_app(config), access_log=None, shutdown_timeout=5.0)
    await runner.setup()  # opens the storage as serve does (sweep, reconcile if unclean)
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield Endpoint(f"http://127.0.0.1:{port}", local=True)
    finally:
        await runner.cleanup()  # closes the index and marks the stop clean


@contextlib.asynccontextmanager
async def endpoint_for(config: Config) -> AsyncIterator[Endpoint]:
    found = await find_service(config)
    if found is not None:
        yield found
        return
    async with local_service(config) as endpoint:
        yield endpoint


def credentials(config: Config, endpoint: Endpoint) -> dict[str, str]:
    """A running service may lock upstreams to authenticated clients: warm presents the first
    token of the config's `auth.tokens_file` (it runs with the service's config, so it can read
    it). An in-process edgecache has no client auth to pass."""
    if endpoint.local:
        return {}
    token = first_token(config.auth)
    return {"Authorization": f"Bearer {token}"} if token else {}
