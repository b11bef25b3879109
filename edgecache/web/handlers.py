"""Thin handlers: parse the request, ask the service, shape the answer. No cache logic here.

Each request's route, upstream and cache result are counted and left on the request for the
access log line; the time to answer is observed per route.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edgecache.cluster.proof import CHECKED_HEADER, NODE_HEADER, PeerProof, refuse_unclustered
from edgecache.cluster.proof import HEADER as PEER_HEADER
from edgecache.errors import BlobUploadUnknown, RangeNotSatisfiable, Unsupported
from edgecache.metrics import Metrics
from edgecache.oci import OCI_INDEX
from edgecache.proxy.routing import Router, Target
from edgecache.proxy.service import BlobAnswer, ManifestAnswer, RegistryService
from edgecache.proxy.tags import TagQuery
from edgecache.web.auth import ClientAuth
from edgecache.web.observability import ACCESS
from edgecache.web.responses import BlobFileResponse, parse_range, stream_fill

if TYPE_CHECKING:
    from edgecache.web.sitelocal import LocalRoute  # cluster/ is imported when configured

READ_METHODS = frozenset({"GET", "HEAD"})
ROUTES = {"manifests": "manifest", "blobs": "blob", "tags": "tags", "referrers": "referrers",
          "uploads": "upload"}
RESULTS = {"cache": "hit", "upstream": "miss", "stale": "stale", "local": "local"}
CACHE_HEADER = "X-Edgecache-Cache"
STALE_WARNING = '110 edgecache "Response is Stale: the upstream could not be asked"'
# A Range checked against an unbounded size before anything is fetched: a malformed one is
# refused without starting an upstream download; bounds are checked once the size is known.
_ANY_SIZE = 1 << 62


class RegistryHandlers:
    def __init__(self, router: Router, service: RegistryService, metrics: Metrics,
                 auth: ClientAuth, local: LocalRoute | None = None,
                 proof: PeerProof | None = None) -> None:
        self._local = local  # the local registry's route (web/pushes.py), if configured
        self._proof = proof  # cluster mode: peers prove the site secret instead of logging in
        self._router = router
        self._service = service
        self._metrics = metrics
        self._auth = auth
        # labelled children, looked up once: `labels()` takes a lock and builds a tuple per call
        self._children: dict[tuple[str, ...], Any] = {}

    async def base(self, request: web.Request) -> web.StreamResponse:
        if request.method not in READ_METHODS:
            raise Unsupported(f"{request.method} is not supported by a pull-through cache")
        if PEER_HEADER in request.headers:  # a peer's health probe: who answers
            self._peer_mode(request)
            return web.json_response({}, headers={NODE_HEADER: self._proof.node if self._proof
                                                  else ""})
        await self._auth.check(request, None)
        return web.json_response({})

    def _peer_mode(self, request: web.Request) -> str:
        """A peer request's mode, once its proof checks out; 401 for any other claim."""
        if self._proof is None:
            raise refuse_unclustered()
        return self._proof.verify(request.method, request.raw_path, request.headers[PEER_HEADER])

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.method not in READ_METHODS and self._local is None:
            raise Unsupported(f"{request.method} is not supported by a pull-through cache")
        path = request.rel_url.raw_path.removeprefix("/v2/")
        ns = request.query.get("ns") if request.query_string else None  # no MultiDict if none
        target = self._router.resolve(path, ns)
        local = self._local if self._local and target.upstream == self._local.name else None
        if local is None:
            if request.method not in READ_METHODS:
                raise Unsupported(f"{request.method} is not supported by a pull-through cache")
            if target.kind == "uploads":
                raise BlobUploadUnknown("no uploads: only the local registry takes pushes")
            if PEER_HEADER in request.headers:  # never forwarded again (`cluster/site.py`)
                target = replace(target, peer=self._peer_mode(request))
            else:
                await self._auth.check(request, target.upstream)
        elif PEER_HEADER in request.headers:  # a peer's read: never forwarded again either
            target = replace(target, peer=self._peer_mode(request))
        route = ROUTES[target.kind]
        request[ACCESS] = {"route": route, "upstream": target.upstream, "result": "error"}
        started = time.monotonic()
        try:
            if local is not None:
                response = await local.handle(request, target)
                request[ACCESS]["result"] = "local"
                return response
            if target.kind == "manifests":
                return await self._manifest(request, target)
            if target.kind == "blobs":
                return await self._blob(request, target)
            if target.kind == "referrers":
                return await self._referrers(request, target)
            return await self._tags(request, target)
        finally:
            result = request[ACCESS]["result"]
            self._child("requests", route, result).inc()
            self._child("request_duration", route).observe(time.monotonic() - started)

    def _child(self, metric: str, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = getattr(self._metrics, metric).labels(*labels)
        return child

    @staticmethod
    def _result(request: web.Request, source: str) -> str:
        """Record the cache result; also sent as `X-Edgecache-Cache` (hit, miss, stale), which
        `edgecache warm` uses to skip what is cached and operators use to debug."""
        request[ACCESS]["result"] = RESULTS[source]
        return RESULTS[source]

    async def _manifest(self, request: web.Request, target: Target) -> web.StreamResponse:
        head = request.method == "HEAD"
        answer: ManifestAnswer = await self._service.manifest(target, head)
        digest = str(answer.digest)  # leaves here: a header
        headers = {
            CACHE_HEADER: self._result(request, answer.source),
            "Content-Type": answer.media_type,
            "Docker-Content-Digest": digest,
            "ETag": f'"{digest}"',
            "Content-Length": str(answer.size),
        }
        if target.peer and answer.checked_at is not None:  # its asker keeps it (not "now")
            headers[CHECKED_HEADER] = repr(answer.checked_at)
        if head:
            return web.Response(headers=headers)
        return web.Response(body=answer.body, headers=headers)

    async def _blob(self, request: web.Request, target: Target) -> web.StreamResponse:
        head = request.method == "HEAD"
        if not head:
            try:
                parse_range(request.headers.get("Range"), _ANY_SIZE)
            except RangeNotSatisfiable as exc:
                exc.size = self._service.known_size(target)
                raise
        answer: BlobAnswer = await self._service.blob(target, head)
        # the reader (a download in progress) is closed on every path from here: a bad Range,
        # headers that cannot be sent, a client gone before them
        with answer.reader if answer.reader is not None else contextlib.nullcontext():
            return await self._blob_answer(request, answer, head)

    async def _blob_answer(self, request: web.Request, answer: BlobAnswer,
                           head: bool) -> web.StreamResponse:
        digest = str(answer.digest)  # leaves here: a header
        headers = {
            CACHE_HEADER: RESULTS[answer.source],
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": digest,
            "ETag": f'"{digest}"',
            "Accept-Ranges": "bytes",
        }
        span = (parse_range(request.headers.get("Range"), answer.size)
                if answer.size is not None else None)
        self._result(request, answer.source)
        if head:
            if answer.size is not None:
                headers["Content-Length"] = str(answer.size)
            return web.Response(headers=headers)
        length = None if answer.size is None else (
            answer.size if span is None else span[1] - span[0])
        if answer.stored is not None and length is not None:
            return BlobFileResponse(answer.stored.open, answer.stored.size, span, headers,
                                    self._counter("cache", saved=True))
        assert answer.reader is not None
        self._metrics.fill_readers.inc()
        try:
            return await stream_fill(request, answer.reader, answer.size, span, headers,
                                     self._counter("upstream", saved=answer.joined))
        finally:
            self._metrics.fill_readers.dec()

    def _counter(self, source: str, saved: bool) -> Callable[[int], None]:
        """Counts a blob body's bytes once it has gone out: what was sent, not what was
        promised (a client that leaves half-way got half)."""
        served = self._child("served_bytes", source)
        saved_bytes = self._metrics.saved_bytes

        def count(sent: int) -> None:
            served.inc(sent)
            if saved:
                saved_bytes.inc(sent)
        return count

    async def _tags(self, request: web.Request, target: Target) -> web.StreamResponse:
        """Sorted and paged by edgecache (`proxy/tags.py`); the Link is ours, never the
        upstream's: it names the next page as this client asked for it, `ns` kept. A list from
        the tags we know of (the upstream could not answer) says so: `X-Edgecache-Cache: stale`
        and a Warning."""
        query = TagQuery.parse(request.query)
        page, source = await self._service.tags(target, query)
        response = web.json_response({"name": target.repository, "tags": page.tags})
        response.headers[CACHE_HEADER] = self._result(request, source)
        if source == "stale":  # the tags we know of: the upstream could not be asked
            response.headers["Warning"] = STALE_WARNING
        if page.more:
            following = {"n": str(query.n)} if query.n is not None else {}
            following["last"] = page.tags[-1]
            response.headers["Link"] = self._link(request, following)
        return response

    async def _referrers(self, request: web.Request, target: Target) -> web.StreamResponse:
        """One answer, every upstream page merged (`proxy/referrers.py`): no Link."""
        answer = await self._service.referrers(target, request.query)
        response = web.Response(body=answer.body, headers={
            CACHE_HEADER: self._result(request, answer.source), "Content-Type": OCI_INDEX})
        if answer.filters:
            response.headers["OCI-Filters-Applied"] = answer.filters
        return response

    @staticmethod
    def _link(request: web.Request, query: dict[str, str]) -> str:
        if "ns" in request.query:
            query["ns"] = request.query["ns"]
        return f'<{request.rel_url.with_query(query)}>; rel="next"'


def next_link(request: web.Request, n: int | None, last: str) -> str:
    """A tags list's Link to the page after `last`, as this client asked for it (`ns` kept)."""
    return RegistryHandlers._link(request, {**({"n": str(n)} if n is not None else {}),
                                            "last": last})
