"""One upstream registry: requests with auth, redirects and timeouts, answers as domain values.

This package (the registry API here, auth and redirects in `transport.py`, connections and
health in `exchange.py`) is the only code that talks to an upstream with aiohttp's client (its
other users, `airgap/warm.py` and `airgap/endpoint.py`, are clients of edgecache itself and
handle aiohttp's errors there); every failure leaves it as an `UpstreamError` (or a `NotFound`
when the upstream says the content does not exist), so the proxy decides on meaning, never on
exception types of a library.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from edgecache import jsondoc
from edgecache.errors import (
    BlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    UpstreamBadResponse,
    UpstreamUnavailable,
)
from edgecache.oci import MANIFEST_ACCEPT, OCI_INDEX
from edgecache.upstream.exchange import read_upto
from edgecache.upstream.headers import content_range, number
from edgecache.upstream.transport import Transport


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    """What a manifest HEAD (or GET) told us: any field may be missing from a lax upstream."""

    digest: str | None
    media_type: str | None
    size: int | None


class BlobStream:
    """An open upstream blob response; `start` is the offset of its first byte."""

    source = "upstream"  # a cluster's peer stream says "peer" (counted apart: not the WAN)

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


class UpstreamClient(Transport):
    """A client for one configured upstream, with its own connection pool and token cache."""


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
