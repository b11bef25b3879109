"""One upstream registry: requests with auth, redirects and timeouts, answers as domain values.

`UpstreamClient` is the registry API, composed of three parts it builds and owns: a `Session`
(`session.py`: the aiohttp pool, deadlines, where it may connect), an `Exchange`
(`exchange.py`: the one I/O rule and the health it feeds) and a `Transport` (`transport.py`:
auth, redirects, error statuses). This package is the only code that talks to an upstream
with aiohttp's client (its other users, `airgap/warm.py` and `airgap/endpoint.py`, are clients
of edgecache itself and handle aiohttp's errors there); every failure leaves it as an
`UpstreamError` (or a `NotFound` when the upstream says the content does not exist), so the
proxy decides on meaning, never on exception types of a library. The client's surface is the
registry API, `name`, `health`, `ratelimit` and `close`: callers never reach the parts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from edgecache import jsondoc
from edgecache.config import HealthConfig, UpstreamConfig
from edgecache.errors import (
    BlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    UpstreamBadResponse,
    UpstreamUnavailable,
)
from edgecache.metrics import Metrics
from edgecache.oci import MANIFEST_ACCEPT, OCI_INDEX
from edgecache.upstream.auth import basic_header
from edgecache.upstream.exchange import Exchange, read_upto
from edgecache.upstream.headers import content_range, number
from edgecache.upstream.health import UpstreamHealth
from edgecache.upstream.session import Session
from edgecache.upstream.transport import Transport


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    """What a manifest HEAD (or GET) told us: any field may be missing from a lax upstream."""

    digest: str | None
    media_type: str | None
    size: int | None
    checked_at: float | None = None  # a peer's tag: when the site last confirmed it (else now)


class BlobStream:
    """An open upstream blob response; `start` is the offset of its first byte."""

    source = "upstream"  # a cluster's peer stream says "peer" (counted apart: not the WAN)

    def __init__(self, exchange: Exchange, response: aiohttp.ClientResponse, start: int,
                 total: int | None) -> None:
        self._exchange = exchange
        self._response = response
        self.start = start
        self.total = total

    async def chunks(self) -> AsyncIterator[bytes]:
        with self._exchange.stage("body"):
            async for data in self._response.content.iter_any():
                yield data

    def close(self) -> None:
        self._response.close()


class UpstreamClient:
    """A client for one configured upstream, with its own connection pool and token cache."""

    def __init__(self, config: UpstreamConfig, manifest_limit: int,
                 health: HealthConfig, metrics: Metrics) -> None:
        # the credentials first: a password file that cannot be read leaves no session open
        basic = basic_header(config.username, config.password()) if config.username else None
        self.name = config.name
        self.manifest_limit = manifest_limit
        self._session = Session(config, metrics)
        self._exchange = Exchange(config.name, health, metrics, self._session.probe)
        self._transport = Transport(self._session, self._exchange, basic)

    @property
    def health(self) -> UpstreamHealth:
        """Up, suspect, last error: what the proxy and the status page ask."""
        return self._exchange.health

    @property
    def ratelimit(self) -> tuple[int | None, int | None]:
        """(remaining, limit) as the upstream last announced them, for the status page."""
        return self._exchange.ratelimit

    async def close(self) -> None:
        await self._exchange.close()
        await self._session.close()

    async def head_manifest(self, repository: str, reference: str) -> ManifestInfo:
        path = f"/v2/{repository}/manifests/{reference}"
        async with await self._transport.request("HEAD", path, repository,
                                                 accept=MANIFEST_ACCEPT) as resp:
            await self._transport.check(resp, ManifestUnknown)
            return ManifestInfo(
                digest=resp.headers.get("Docker-Content-Digest"),
                media_type=resp.headers.get("Content-Type"),
                size=number(resp.headers.get("Content-Length")),
            )

    async def get_manifest(self, repository: str, reference: str) -> tuple[bytes, ManifestInfo]:
        path = f"/v2/{repository}/manifests/{reference}"
        async with await self._transport.request("GET", path, repository,
                                                 accept=MANIFEST_ACCEPT) as resp:
            await self._transport.check(resp, ManifestUnknown)
            declared = number(resp.headers.get("Content-Length"))
            if declared is not None and declared > self.manifest_limit:
                raise ManifestInvalid(f"manifest of {declared} bytes exceeds the size limit")
            with self._exchange.stage("body"):
                body = await read_upto(resp, self.manifest_limit + 1)
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
        path = f"/v2/{repository}/blobs/{digest}"
        async with await self._transport.request("HEAD", path, repository) as resp:
            await self._transport.check(resp, BlobUnknown)
            return number(resp.headers.get("Content-Length"))

    async def open_blob(self, repository: str, digest: str, offset: int = 0) -> BlobStream:
        """Open the blob from `offset`; `start` says where the body really starts (0 when the
        upstream ignored our Range)."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = await self._transport.request("GET", f"/v2/{repository}/blobs/{digest}",
                                             repository, extra=headers)
        try:
            await self._transport.check(resp, BlobUnknown)
            start, total = 0, number(resp.headers.get("Content-Length"))
            if resp.status == 206:
                first, total = content_range(resp.headers.get("Content-Range"))
                if first is None:
                    raise UpstreamBadResponse(self.name, "206 without a usable Content-Range")
                start = first
        except BaseException:
            resp.close()
            raise
        return BlobStream(self._exchange, resp, start, total)

    async def list_tags(self, repository: str,
                        query: Mapping[str, str]) -> tuple[list[object], str | None]:
        """The tags as the upstream sent them (`proxy/tags.py` sorts and pages) and its Link."""
        path = f"/v2/{repository}/tags/list"
        async with await self._transport.request("GET", path, repository, params=query,
                                                 accept="application/json") as resp:
            await self._transport.check(resp, NameUnknown)
            _, doc = await self._json(resp, "tag list")
            tags = doc.get("tags")
            if not isinstance(tags, list | None):
                raise UpstreamBadResponse(self.name, "tag list has no list of tags")
            return tags or [], resp.headers.get("Link")

    async def get_referrers(self, repository: str, digest: str,
                            query: Mapping[str, str]) -> tuple[bytes, str | None, str | None]:
        """An OCI 1.1 upstream's referrers index: its bytes (checked to be an image index), its
        Link and OCI-Filters-Applied. A 404 is a NotFound: no referrers API there."""
        path = f"/v2/{repository}/referrers/{digest}"
        async with await self._transport.request("GET", path, repository, params=query,
                                                 accept=OCI_INDEX) as resp:
            await self._transport.check(resp, ManifestUnknown)
            declared = (resp.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if declared != OCI_INDEX:
                raise UpstreamBadResponse(self.name, f"referrers as {declared[:100]!r}: no index")
            body, doc = await self._json(resp, "referrers answer")
            if not isinstance(doc.get("manifests"), list):
                raise UpstreamBadResponse(self.name, "referrers answer is not an image index")
            return body, resp.headers.get("Link"), resp.headers.get("OCI-Filters-Applied")

    async def _json(self, resp: aiohttp.ClientResponse, what: str) -> tuple[bytes, dict[str, Any]]:
        """A JSON object body of at most `manifest_limit` bytes, and its bytes."""
        with self._exchange.stage("body"):
            body = await read_upto(resp, self.manifest_limit + 1)
        if len(body) > self.manifest_limit:
            raise UpstreamBadResponse(self.name, f"{what} over {self.manifest_limit} bytes")
        try:
            doc = jsondoc.parse(body, self.manifest_limit)
        except jsondoc.JsonUnreadable as exc:
            raise UpstreamBadResponse(self.name, f"{what} is not JSON") from exc
        if not isinstance(doc, dict):
            raise UpstreamBadResponse(self.name, f"{what} is not a JSON object")
        return body, doc
