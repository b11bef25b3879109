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
(`airgap/endpoint.py` finds which.)

Per image: the manifest by tag or digest; for an index, the platform manifests `--platform`
selects; then each config and layer: `HEAD` first (skipped when `X-Edgecache-Cache: hit`), else
`GET`, read to the end and discarded (edgecache keeps it), then `HEAD` again to confirm it was
cached (a blob larger than the cache budget is served but not kept: that is a failure here).
Blobs shared by images are fetched once; at most `concurrency` blob transfers run at a time.
Then the image's referrers (`GET /v2/<name>/referrers/<digest>`, which edgecache keeps) and
each referrer manifest with its blobs, the same way: signatures and SBOMs travel with the image
(`export` carries them as the referrers tag schema, `airgap/referrers.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from edgecache.airgap.endpoint import Endpoint, credentials, endpoint_for
from edgecache.airgap.manifest import Manifest
from edgecache.airgap.platform import Platform, wanted
from edgecache.airgap.progress import Progress
from edgecache.airgap.warmreport import ImageResult, WarmReport
from edgecache.config import Config
from edgecache.errors import EdgecacheError, ManifestInvalid
from edgecache.oci import MANIFEST_ACCEPT, MANIFEST_LIMIT, Digest, ImageReference
from edgecache.proxy.referrers import descriptors_of
from edgecache.web.handlers import CACHE_HEADER

CONCURRENCY = 4
READ_TIMEOUT = 300.0
CHUNK = 1 << 20
MAX_DEPTH = 4


class WarmError(EdgecacheError):
    """One image could not be warmed; the message goes in its row of the table."""


def read_image_list(path: str) -> list[str]:
    """One reference per line; `#` starts a comment; blank lines are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise EdgecacheError(f"--file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise EdgecacheError(f"--file {path}: not UTF-8 (byte {exc.start})") from None
    return [line.split("#", 1)[0].strip() for line in text.splitlines()
            if line.split("#", 1)[0].strip()]


# ---- pulling ------------------------------------------------------------------------------------

@dataclass
class _Blob:
    fetched: int = 0
    cached: int = 0


@dataclass
class _Walk:
    blobs: dict[Digest, int] = field(default_factory=dict)
    manifest_bytes: int = 0


class Warmer:
    def __init__(self, session: aiohttp.ClientSession, endpoint: Endpoint, progress: Progress,
                 platforms: Sequence[Platform] = (), concurrency: int = CONCURRENCY,
                 pace: Callable[[int], Awaitable[None]] | None = None) -> None:
        self._session = session
        self._pace = pace  # awaited with a blob's size before it is fetched (prefetch's bound)
        self._endpoint = endpoint
        self._progress = progress
        self._platforms = tuple(platforms)
        self._blob_slots = asyncio.Semaphore(max(1, concurrency))
        self._manifest_slots = asyncio.Semaphore(max(1, concurrency))
        self._blobs: dict[Digest, asyncio.Task[_Blob]] = {}

    @property
    def fetched(self) -> int:
        return sum(t.result().fetched for t in self._blobs.values()
                   if t.done() and not t.cancelled() and t.exception() is None)

    async def warm(self, references: Sequence[str]) -> list[ImageResult]:
        self._progress.add_total(items=len(references))
        try:
            return list(await asyncio.gather(*(self._image(text) for text in references)))
        finally:
            await self._stop_blobs()

    async def _stop_blobs(self) -> None:
        """The blob fetches are shielded so one image giving up does not cancel a fetch other
        images wait on; the Warmer owns them, so none outlives `warm`, however it ends."""
        for task in self._blobs.values():
            task.cancel()
        await asyncio.gather(*self._blobs.values(), return_exceptions=True)

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
        if ref.digest and str(digest) != ref.digest:
            raise WarmError(f"asked for {ref.digest}, got {digest}")
        result.digest = digest
        walk = _Walk(manifest_bytes=len(body))
        await self._walk(ref, body, media_type, digest, 0, walk)
        await self._referrers(ref, digest, walk)
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
                    digest: Digest, depth: int, walk: _Walk) -> None:
        try:
            manifest = Manifest.parse(body, media_type, str(digest))
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

        async def child(digest: Digest) -> None:
            child_body, child_digest, child_type = await self._manifest(ref, str(digest))
            walk.manifest_bytes += len(child_body)
            await self._walk(ref, child_body, child_type, child_digest, depth + 1, walk)

        await asyncio.gather(*(child(c.digest) for c in chosen))

    async def _referrers(self, ref: ImageReference, subject: Digest, walk: _Walk) -> None:
        """The subject's referrers (one level: a signature's own referrers stay behind)."""
        async with self._manifest_slots, self._session.get(
                self._api(ref, "referrers", str(subject)), params=self._params(ref)) as response:
            if response.status != 200:
                raise WarmError(f"referrers of {subject}: {await _error_text(response)}")
            body = await _read_body(response, MANIFEST_LIMIT, f"referrers of {subject}")

        async def referrer(digest: str) -> None:  # as the answer spells it: a URL's part
            child_body, child_digest, child_type = await self._manifest(ref, digest)
            if str(child_digest) != digest:
                raise WarmError(f"referrer {digest}: got {child_digest}")
            walk.manifest_bytes += len(child_body)
            await self._walk(ref, child_body, child_type, child_digest, 1, walk)

        await asyncio.gather(*(referrer(d["digest"]) for d in descriptors_of(body)))

    def _api(self, ref: ImageReference, kind: str, reference: str) -> str:
        return f"{self._endpoint.url}/v2/{ref.repository}/{kind}/{reference}"

    def _params(self, ref: ImageReference) -> dict[str, str]:
        return {"ns": ref.registry}

    async def _manifest(self, ref: ImageReference,
                        reference: str) -> tuple[bytes, Digest, str | None]:
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
            actual = Digest.of(body, Digest.parse(named).algorithm if named else "sha256")
            if named and named != str(actual):
                raise WarmError(f"manifest {reference}: the body does not match {named}")
            return body, actual, response.headers.get("Content-Type")

    async def _blob(self, ref: ImageReference, digest: Digest, size: int) -> _Blob:
        """Shared by every image that has this blob: one fetch, many waiters."""
        task = self._blobs.get(digest)
        if task is None:
            self._progress.add_total(size)
            task = asyncio.ensure_future(self._fetch_blob(ref, digest, size))
            self._blobs[digest] = task
        return await asyncio.shield(task)

    async def _fetch_blob(self, ref: ImageReference, digest: Digest, size: int) -> _Blob:
        url, params = self._api(ref, "blobs", str(digest)), self._params(ref)
        async with self._blob_slots:
            if await self._cached(url, params):
                self._progress.advance(size)
                self._progress.blob_done(str(digest), size, fetched=False)
                return _Blob(cached=size)
            if self._pace is not None:
                await self._pace(size)
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
            self._progress.blob_done(str(digest), got, fetched=True)
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


async def warm(config: Config, references: Sequence[str], progress: Progress,
               platforms: Sequence[Platform] = (),
               concurrency: int = CONCURRENCY) -> WarmReport:
    started = time.monotonic()
    async with endpoint_for(config) as endpoint:
        connector = aiohttp.TCPConnector(limit=2 * concurrency + 2,
                                         ssl=endpoint.ssl if endpoint.ssl is not None else True)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=READ_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         headers=credentials(config, endpoint),
                                         auto_decompress=False) as session:
            warmer = Warmer(session, endpoint, progress, platforms, concurrency)
            results = await warmer.warm(references)
            fetched = warmer.fetched
    progress.finish()
    return WarmReport(results, endpoint.describe(), time.monotonic() - started, fetched)
