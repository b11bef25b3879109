"""`edgecache warm`: fill the cache ahead of need, through the same code path as a client pull.

Why over HTTP rather than writing the store directly: the pull path is where digests are
verified, a blob is downloaded once however many ask, quota is reserved, tags and access times
are recorded. Warming through it means content enters the cache one way only, and a running
service never finds a second writer behind its back. So:
- when a service runs (`GET /v2/` answers on `listen.http`, or on `listen.https` trusting
  `storage.path/tls/ca.crt`), warm is one more client of it, with `?ns=<registry>` as containerd
  would send;
- when none runs, the same app (`build_app`) is started in this process on a loopback port for
  the duration, and stopped cleanly (index closed, clean-stop marker written) at the end.

A connection refused means "no service"; a server that answers but cannot be trusted, or does
not answer, is an error: starting a second edgecache on the same storage would be worse.

Per image: the manifest by tag or digest; for an index, the platform manifests `--platform`
selects; then each config and layer: `HEAD` first (skipped when `X-Edgecache-Cache: hit`), else
`GET`, read to the end and discarded (edgecache keeps it), then `HEAD` again to confirm it was
cached (a blob larger than the cache budget is served but not kept: that is a failure here).
Blobs shared by images are fetched once; at most `concurrency` blob transfers run at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from edgecache.airgap.manifest import Manifest
from edgecache.airgap.platform import Platform, wanted
from edgecache.airgap.progress import Progress, plural, short_digest, table
from edgecache.config import Config, parse_hostport
from edgecache.errors import EdgecacheError, ManifestInvalid
from edgecache.oci import MANIFEST_ACCEPT, MANIFEST_LIMIT, Digest, ImageReference
from edgecache.usage import human
from edgecache.web.auth import first_token
from edgecache.web.handlers import CACHE_HEADER

CONCURRENCY = 4
PROBE_TIMEOUT = 5.0
READ_TIMEOUT = 300.0
CHUNK = 1 << 20
MAX_DEPTH = 4
WILDCARDS = ("", "0.0.0.0", "::", "[::]")


class WarmError(EdgecacheError):
    """One image could not be warmed; the message goes in its row of the table."""


@dataclass(frozen=True)
class Endpoint:
    url: str
    ssl: ssl.SSLContext | None = None
    local: bool = False

    def describe(self) -> str:
        return "an in-process edgecache" if self.local else f"the running service at {self.url}"


def read_image_list(path: str) -> list[str]:
    """One reference per line; `#` starts a comment; blank lines are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise EdgecacheError(f"--file {path}: {exc.strerror or exc}") from exc
    return [line.split("#", 1)[0].strip() for line in text.splitlines()
            if line.split("#", 1)[0].strip()]


# ---- where to pull through ----------------------------------------------------------------------

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


# ---- pulling ------------------------------------------------------------------------------------

@dataclass
class ImageResult:
    reference: str
    digest: str | None = None
    size: int = 0  # manifests, configs and layers of the platforms warmed
    fetched: int = 0  # blob bytes this run downloaded
    cached: int = 0  # blob bytes that were already cached
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error:
            return f"failed: {self.error}"
        return "fetched" if self.fetched else "cached"


@dataclass
class WarmReport:
    results: list[ImageResult]
    endpoint: str
    seconds: float = 0.0
    fetched: int = 0  # unique blob bytes downloaded

    @property
    def failed(self) -> bool:
        return any(r.error for r in self.results)

    def lines(self) -> list[str]:
        rows = [[r.reference, short_digest(r.digest), human(r.size), human(r.fetched),
                 human(r.cached), r.status] for r in self.results]
        out = table(["IMAGE", "DIGEST", "SIZE", "FETCHED", "CACHED", "STATUS"], rows,
                    right=[2, 3, 4])
        ok = sum(1 for r in self.results if not r.error)
        rate = self.fetched / self.seconds if self.seconds > 0 else 0.0
        out.append(f"warmed {ok} of {plural(len(self.results), 'image')} through "
                   f"{self.endpoint}: "
                   f"{human(self.fetched)} fetched in {self.seconds:.1f}s ({human(rate)}/s)")
        return out


@dataclass
class _Blob:
    fetched: int = 0
    cached: int = 0


@dataclass
class _Walk:
    blobs: dict[str, int] = field(default_factory=dict)
    manifest_bytes: int = 0


class Warmer:
    def __init__(self, session: aiohttp.ClientSession, endpoint: Endpoint, progress: Progress,
                 platforms: Sequence[Platform] = (), concurrency: int = CONCURRENCY) -> None:
        self._session = session
        self._endpoint = endpoint
        self._progress = progress
        self._platforms = tuple(platforms)
        self._blob_slots = asyncio.Semaphore(max(1, concurrency))
        self._manifest_slots = asyncio.Semaphore(max(1, concurrency))
        self._blobs: dict[str, asyncio.Task[_Blob]] = {}

    @property
    def fetched(self) -> int:
        return sum(t.result().fetched for t in self._blobs.values()
                   if t.done() and not t.cancelled() and t.exception() is None)

    async def warm(self, references: Sequence[str]) -> list[ImageResult]:
        self._progress.add_total(items=len(references))
        return list(await asyncio.gather(*(self._image(text) for text in references)))

    async def _image(self, text: str) -> ImageResult:
        result = ImageResult(text)
        try:
            await self._warm_image(ImageReference.parse(text), result)
        except (EdgecacheError, aiohttp.ClientError, TimeoutError) as exc:
            result.error = str(exc) or type(exc).__name__
        finally:
            self._progress.item_done()
        return result

    async def _warm_image(self, ref: ImageReference, result: ImageResult) -> None:
        reference = ref.digest or ref.tag
        assert reference is not None
        body, digest, media_type = await self._manifest(ref, reference)
        if ref.digest and digest != ref.digest:
            raise WarmError(f"asked for {ref.digest}, got {digest}")
        result.digest = digest
        walk = _Walk(manifest_bytes=len(body))
        await self._walk(ref, body, media_type, digest, 0, walk)
        outcomes = await asyncio.gather(*(self._blob(ref, d, s) for d, s in walk.blobs.items()),
                                        return_exceptions=True)
        result.size = walk.manifest_bytes + sum(walk.blobs.values())
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, EdgecacheError | aiohttp.ClientError | TimeoutError):
                    raise outcome
                result.error = result.error or str(outcome) or type(outcome).__name__
            else:
                result.fetched += outcome.fetched
                result.cached += outcome.cached

    async def _walk(self, ref: ImageReference, body: bytes, media_type: str | None,
                    digest: str, depth: int, walk: _Walk) -> None:
        try:
            manifest = Manifest.parse(body, media_type, digest)
        except ManifestInvalid as exc:
            raise WarmError(str(exc)) from None
        if not manifest.is_index:
            for blob in manifest.blobs():
                walk.blobs[blob.digest] = blob.size or 0
            return
        if depth >= MAX_DEPTH:
            raise WarmError(f"{digest}: indexes nested deeper than {MAX_DEPTH} levels")
        chosen = [c for c in manifest.children if wanted(self._platforms, c.platform)]
        if not chosen:
            shown = ",".join(str(p) for p in self._platforms)
            raise WarmError(f"the index has no manifest for {shown}")

        async def child(digest: str) -> None:
            child_body, child_digest, child_type = await self._manifest(ref, digest)
            walk.manifest_bytes += len(child_body)
            await self._walk(ref, child_body, child_type, child_digest, depth + 1, walk)

        await asyncio.gather(*(child(c.digest) for c in chosen))

    def _api(self, ref: ImageReference, kind: str, reference: str) -> str:
        return f"{self._endpoint.url}/v2/{ref.repository}/{kind}/{reference}"

    def _params(self, ref: ImageReference) -> dict[str, str]:
        return {"ns": ref.registry}

    async def _manifest(self, ref: ImageReference,
                        reference: str) -> tuple[bytes, str, str | None]:
        async with self._manifest_slots, self._session.get(
                self._api(ref, "manifests", reference), params=self._params(ref),
                headers={"Accept": MANIFEST_ACCEPT}) as response:
            if response.status != 200:
                raise WarmError(f"manifest {ref.repository}:{reference}: "
                                f"{await _error_text(response)}")
            if CACHE_HEADER not in response.headers:
                raise WarmError(f"{self._endpoint.url} is not edgecache (no {CACHE_HEADER})")
            if (response.content_length or 0) > MANIFEST_LIMIT:
                raise WarmError(f"manifest {reference} is over {MANIFEST_LIMIT} bytes")
            body = await _read_body(response, MANIFEST_LIMIT, f"manifest {reference}")
            named = response.headers.get("Docker-Content-Digest")
            actual = str(Digest.of(body, Digest.parse(named).algorithm if named else "sha256"))
            if named and named != actual:
                raise WarmError(f"manifest {reference}: the body does not match {named}")
            return body, actual, response.headers.get("Content-Type")

    async def _blob(self, ref: ImageReference, digest: str, size: int) -> _Blob:
        """Shared by every image that has this blob: one fetch, many waiters."""
        task = self._blobs.get(digest)
        if task is None:
            self._progress.add_total(size)
            task = asyncio.ensure_future(self._fetch_blob(ref, digest, size))
            self._blobs[digest] = task
        return await asyncio.shield(task)

    async def _fetch_blob(self, ref: ImageReference, digest: str, size: int) -> _Blob:
        url, params = self._api(ref, "blobs", digest), self._params(ref)
        async with self._blob_slots:
            if await self._cached(url, params):
                self._progress.advance(size)
                return _Blob(cached=size)
            got = 0
            try:
                async with self._session.get(url, params=params) as response:
                    if response.status != 200:
                        raise WarmError(f"blob {digest}: {await _error_text(response)}")
                    async for chunk in response.content.iter_chunked(CHUNK):
                        got += len(chunk)
                        self._progress.advance(len(chunk))
                if size and got != size:
                    raise WarmError(f"blob {digest}: {got} of {size} bytes arrived")
            except BaseException:
                self._progress.advance(-got)
                raise
            if not await self._cached(url, params):
                raise WarmError(f"blob {digest} was served but not kept (no room in the cache "
                                "budget, or the disk failed: see the edgecache log)")
            return _Blob(fetched=got)

    async def _cached(self, url: str, params: dict[str, str]) -> bool:
        async with self._session.head(url, params=params) as response:
            return response.status == 200 and response.headers.get(CACHE_HEADER) == "hit"


async def _read_body(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The whole body, refused past `limit`: one `content.read(n)` returns only what has
    arrived so far, so a manifest delivered in pieces would be cut and fail its digest."""
    body = bytearray()
    while chunk := await response.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise WarmError(f"{what} is over {limit} bytes")
    return bytes(body)


async def _error_text(response: aiohttp.ClientResponse) -> str:
    """edgecache's error body is `{"errors": [{"code", "message"}]}`: show the first."""
    if response.status == 401:
        return ("HTTP 401: the service wants client credentials; warm presents the first token "
                "of the config's auth.tokens_file")
    try:
        doc = await response.json(content_type=None)
        first = doc["errors"][0]
        return f"HTTP {response.status} {first['code']}: {str(first['message']).rstrip(': ')}"
    except (ValueError, KeyError, IndexError, TypeError, aiohttp.ClientError):
        return f"HTTP {response.status}"


def _credentials(config: Config, endpoint: Endpoint) -> dict[str, str]:
    """A running service may lock upstreams to authenticated clients: warm presents the first
    token of the config's `auth.tokens_file` (it runs with the service's config, so it can read
    it). An in-process edgecache has no client auth to pass."""
    if endpoint.local:
        return {}
    token = first_token(config.auth)
    return {"Authorization": f"Bearer {token}"} if token else {}


async def warm(config: Config, references: Sequence[str], progress: Progress,
               platforms: Sequence[Platform] = (),
               concurrency: int = CONCURRENCY) -> WarmReport:
    started = time.monotonic()
    async with endpoint_for(config) as endpoint:
        connector = aiohttp.TCPConnector(limit=2 * concurrency + 2,
                                         ssl=endpoint.ssl if endpoint.ssl is not None else True)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=READ_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         headers=_credentials(config, endpoint),
                                         auto_decompress=False) as session:
            warmer = Warmer(session, endpoint, progress, platforms, concurrency)
            results = await warmer.warm(references)
            fetched = warmer.fetched
    progress.finish()
    return WarmReport(results, endpoint.describe(), time.monotonic() - started, fetched)
