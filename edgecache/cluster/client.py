"""Requests to the site's other nodes: the OCI pull API they already serve, signed as a peer's.

A peer is asked for content on the same route a client used (`/v2/<repository>/...?ns=<the
upstream>`), so the peer applies the same routing and the same claim check as for its own
clients; only client authentication is replaced by the site secret (`proof.py`). This module
owns its aiohttp session, so it is where aiohttp's exceptions become ours: `PeerFailed` for
anything that says "ask someone else" (refused, reset, timeout, 5xx, 429, 401) and the domain's
NotFound for a peer's 404.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from yarl import URL

from edgecache.errors import BlobUnknown, ManifestUnknown, NotFound, UpstreamUnavailable
from edgecache.metrics import Metrics
from edgecache.oci import MANIFEST_ACCEPT, MANIFEST_LIMIT
from edgecache.proxy.routing import Target
from edgecache.upstream.client import BlobStream, ManifestInfo
from edgecache.upstream.exchange import read_upto
from edgecache.upstream.headers import content_range, number

from .proof import CHECKED_HEADER, DELETED_HEADER, HEADER, NODE_HEADER, PeerProof, TagDeleted

CONNECT_TIMEOUT = 2.0  # the site network: a peer that takes longer is as good as down
READ_TIMEOUT = 15.0  # no byte for this long from a peer streaming a blob: try the next source


class PeerFailed(Exception):
    """This peer cannot answer now; `broken` when it did not answer at all (down, reset)."""

    def __init__(self, peer: str, message: str, broken: bool) -> None:
        super().__init__(f"peer {peer}: {message}")
        self.peer = peer
        self.broken = broken


@dataclass(frozen=True, slots=True)
class Asked:
    """A peer's answer to a HEAD or a manifest GET."""

    info: ManifestInfo
    body: bytes | None


def route_path(target: Target, kind: str, reference: str) -> str:
    """The peer's path for `target`'s content: always the `ns` form, which every node routes
    the same way (a path prefix or a default upstream depends on the asking client)."""
    return f"/v2/{target.repository}/{kind}/{reference}?ns={target.upstream}"


class PeerStream(BlobStream):
    """A peer's blob body, read as an upstream's is (`proxy/download.py` resumes it)."""

    source = "peer"

    def __init__(self, peer: str, response: aiohttp.ClientResponse, start: int,
                 total: int | None, metrics: Metrics) -> None:  # no super(): not an upstream
        self.peer = peer
        self._counted = metrics.peer_bytes
        self._peer_response = response
        self.start = start
        self.total = total

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._peer_response.content.iter_any():
                self._counted.inc(len(data))
                yield data
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamUnavailable(self.peer, f"peer stream broke: {_reason(exc)}") from None

    def close(self) -> None:
        self._peer_response.close()


class PeerClient:
    """`ca_file`: the site CA (`tls.ca_cert_file`), which verifies an https peer; without it
    the system's CAs do (an operator's certificate), never nothing."""

    def __init__(self, proof: PeerProof, metrics: Metrics, ca_file: str = "") -> None:
        self._proof = proof
        self._metrics = metrics
        self._ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made inside the running loop, at first use
            tls = ssl.create_default_context(cafile=self._ca_file or None)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls),
                timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT,
                                              sock_read=READ_TIMEOUT),
                auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _send(self, method: str, peer: str, path: str, mode: str,
                    headers: dict[str, str] | None = None,
                    timeout: float | None = None) -> aiohttp.ClientResponse:
        signed = {HEADER: self._proof.sign(method, path, mode), **(headers or {})}
        try:
            if timeout is not None:
                return await self._client().request(
                    method, URL(peer + path, encoded=True), headers=signed,
                    allow_redirects=False, timeout=aiohttp.ClientTimeout(
                        total=timeout, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT))
            return await self._client().request(
                method, URL(peer + path, encoded=True), headers=signed, allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PeerFailed(peer, _reason(exc), broken=True) from None

    @staticmethod
    def _check(peer: str, response: aiohttp.ClientResponse, missing: type[NotFound]) -> None:
        if response.status in (200, 206):
            return
        response.release()
        if response.status == 404:
            if response.headers.get(DELETED_HEADER):  # a tombstone: when it was deleted
                raise TagDeleted(peer, checked_time(response.headers.get(CHECKED_HEADER)))
            raise missing(f"peer {peer} does not have it")
        raise PeerFailed(peer, f"answered {response.status}", broken=False)

    async def probe(self, peer: str, timeout: float) -> str | None:
        """The answering node's id when the peer answers its API and accepts our proof (a
        wrong secret is down); None otherwise."""
        try:
            response = await self._send("GET", peer, "/v2/", "local", timeout=timeout)
        except PeerFailed:
            return None
        response.release()
        return response.headers.get(NODE_HEADER, "") if response.status == 200 else None

    async def ask(self, peer: str, target: Target, kind: str, reference: str, mode: str,
                  body: bool, timeout: float | None = None) -> Asked:
        """A HEAD (or a manifest GET, `body`) for `target`'s content on `peer`."""
        missing = BlobUnknown if kind == "blobs" else ManifestUnknown
        method = "GET" if body else "HEAD"
        response = await self._send(method, peer, route_path(target, kind, reference), mode,
                                    {"Accept": MANIFEST_ACCEPT} if kind == "manifests" else {},
                                    timeout)
        try:
            self._check(peer, response, missing)
            data = None
            if body:
                data = await read_upto(response, MANIFEST_LIMIT + 1)
                if len(data) > MANIFEST_LIMIT or len(data) != number(
                        response.headers.get("Content-Length")):
                    raise PeerFailed(peer, "manifest body cut short or too long", broken=False)
            return Asked(ManifestInfo(response.headers.get("Docker-Content-Digest"),
                                      response.headers.get("Content-Type"),
                                      number(response.headers.get("Content-Length")),
                                      checked_time(response.headers.get(CHECKED_HEADER))), data)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PeerFailed(peer, _reason(exc), broken=True) from None
        finally:
            response.release()

    async def fetch(self, method: str, peer: str, path: str, mode: str, timeout: float,
                    headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Any bounded request and its status and body (up to MANIFEST_LIMIT bytes)."""
        response = await self._send(method, peer, path, mode, headers, timeout)
        try:
            return response.status, await read_upto(response, MANIFEST_LIMIT)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PeerFailed(peer, _reason(exc), broken=True) from None
        finally:
            response.release()

    async def open_blob(self, peer: str, target: Target, offset: int, mode: str) -> PeerStream:
        path = route_path(target, "blobs", target.reference)
        response = await self._send("GET", peer, path, mode,
                                    {"Range": f"bytes={offset}-"} if offset else {})
        try:
            self._check(peer, response, BlobUnknown)
            start, total = 0, number(response.headers.get("Content-Length"))
            if response.status == 206:
                first, total = content_range(response.headers.get("Content-Range"))
                if first is None:
                    raise PeerFailed(peer, "206 without a usable Content-Range", broken=False)
                start = first
        except BaseException:
            response.close()
            raise
        return PeerStream(peer, response, start, total, self._metrics)


def checked_time(value: str | None) -> float | None:
    """A peer's `X-Edgecache-Checked-At`: Unix seconds, never later than now (a peer's clock
    ahead of ours must not make a tag look fresher than it is); None if absent or garbage."""
    try:
        seconds = float(value) if value and len(value) <= 32 else None
    except ValueError:
        return None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, time.time())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__
