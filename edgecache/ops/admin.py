"""The admin API, under `/admin/` on the metrics listener: runtime pins for `edgecache pin`.

Who may call it: only a peer on loopback (127.0.0.0/8, ::1, or either mapped into IPv6). The
metrics listener binds 0.0.0.0:9630 by default so Prometheus can scrape it from elsewhere; a
write from the network must not be open, and a loopback peer is the node's own operator (the
CLI runs there, with the config). A token was the alternative: it would put a secret on every
CLI call for what is a node-local act. Writes also need `Content-Type: application/json`, so a
web page open in a browser on the node cannot post a form here (that header on a cross-origin
request needs a CORS preflight, which nothing here answers). Everything else gets 403 DENIED.
(A reverse proxy on the node in front of this port would make every client loopback: do not put
one in front of the metrics listener.)

    GET    /admin/pins                        {"pins": [{reference, source, state, ...}]}
           state: held | fetching (blobs, total, failures) | not held | failed (error,
           failures, next_retry: Unix time; the service tries again then, or at a new POST)
    POST   /admin/pins {"references": [...], "platforms": "linux/amd64", "wait": true}
           wait: NDJSON, one event per blob as it lands, then {"event": "done"} per image;
           else 202 {"pinned": [...]}. Any bad reference: 400 NAME_INVALID, nothing pinned.
    DELETE /admin/pins?reference=...&reference=...   {"removed": [...], "refused": {ref: why}}
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from edgecache import jsondoc
from edgecache.airgap.platform import parse_platforms
from edgecache.errors import ConfigError
from edgecache.ops.pinfetch import PinJob
from edgecache.ops.pins import Pinning
from edgecache.web.errors import error_response

BODY_LIMIT = 64 * 1024
MAX_REFERENCES = 256
KEEPALIVE = 15.0  # a waiting stream says it is alive this often (no proxy or client times out)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def loopback(remote: str | None) -> bool:
    """Whether a peer address is this host's loopback (IPv4-mapped IPv6 included)."""
    try:
        address = ipaddress.ip_address((remote or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not loopback(request.remote):
        return error_response(403, "DENIED", "the admin API answers loopback peers only")
    if request.method == "POST" and request.content_type != "application/json":
        return error_response(403, "DENIED", "admin writes need Content-Type: application/json")
    return await handler(request)


def mount_admin(metrics: web.Application, pinning: Pinning) -> None:
    """The one line `server.py` calls on the metrics app."""
    metrics.add_subapp("/admin/", admin_app(pinning))


def admin_app(pinning: Pinning) -> web.Application:
    app = web.Application(middlewares=[_guard], client_max_size=BODY_LIMIT)
    api = _Api(pinning)
    app.router.add_get("/pins", api.listing)
    app.router.add_post("/pins", api.pin)
    app.router.add_delete("/pins", api.unpin)
    return app


class _Api:
    def __init__(self, pinning: Pinning) -> None:
        self._pinning = pinning

    async def listing(self, request: web.Request) -> web.Response:
        return web.json_response({"pins": self._pinning.listing()})

    async def pin(self, request: web.Request) -> web.StreamResponse:
        try:
            doc = jsondoc.parse_object(await request.read(), BODY_LIMIT)
        except jsondoc.JsonUnreadable as exc:
            return error_response(400, "UNSUPPORTED", f"the request body: {exc}")
        references, wait = doc.get("references"), doc.get("wait", False)
        if not isinstance(references, list) or not references or not isinstance(wait, bool):
            return error_response(400, "UNSUPPORTED", 'expected {"references": [...], '
                                                      '"wait": true|false}')
        if len(references) > MAX_REFERENCES:
            return error_response(400, "UNSUPPORTED",
                                  f"at most {MAX_REFERENCES} references at a time")
        problems = self._pinning.problems(references)
        if problems:
            return error_response(400, "NAME_INVALID", "; ".join(problems))
        platforms = doc.get("platforms")
        try:
            chosen = parse_platforms(platforms if isinstance(platforms, str) else None)
        except ConfigError as exc:
            return error_response(400, "UNSUPPORTED", str(exc).removeprefix("--"))
        jobs = self._pinning.pin([str(r) for r in references], chosen)
        if not wait:
            return web.json_response({"pinned": [job.reference for job in jobs]}, status=202)
        return await _stream(request, jobs)

    async def unpin(self, request: web.Request) -> web.Response:
        references = request.query.getall("reference", [])
        if not references or len(references) > MAX_REFERENCES:
            return error_response(400, "UNSUPPORTED",
                                  f"name 1 to {MAX_REFERENCES} ?reference= to unpin")
        removed, refused = self._pinning.unpin(references)
        return web.json_response({"removed": removed, "refused": refused})


async def _stream(request: web.Request, jobs: list[PinJob]) -> web.StreamResponse:
    """Every job's events as they happen (those before this request too), one JSON a line,
    until each has ended. The client leaving ends only this stream, never a job."""
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    for job in jobs:
        sent = 0
        while True:  # ends when the job does: its attempt is bounded by warm's own timeouts
            changed = job.changed
            for event in job.events[sent:]:
                await response.write(json.dumps(event).encode() + b"\n")
            sent = len(job.events)
            if job.done:
                break
            try:
                await asyncio.wait_for(changed.wait(), KEEPALIVE)
            except TimeoutError:
                await response.write(b'{"event": "waiting"}\n')
    await response.write_eof()
    return response
