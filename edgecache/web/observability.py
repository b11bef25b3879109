"""What operators see: health endpoints, the metrics app, and one log line per request.

`/healthz` answers while the event loop turns (liveness). `/readyz` checks that storage is
writable and the index answers; an unreachable upstream does not make edgecache unready, since
it is useful offline. Both are served on the metrics port and on every client listener.

The access log line carries a request id (the client's `X-Request-Id` when it is sane, else a
new one, echoed back), the route, upstream, cache result, status, bytes and duration; as plain
`key=value` text or JSON. Headers are never logged, so no credential can be.

Every other line logged while a request is handled carries its id too (`id=` at the end of a
plain line, `"id"` in JSON), so an error line leads to its access line and to the client's
report: the id is assigned when the request arrives (`RequestIds.middleware`) and held in a
context variable that a logging filter reads. Tasks a request starts (a download) copy the
context, so their lines name the request that started them. Timestamps are ISO 8601, UTC.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgecache.metrics import Metrics

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id")
# route, upstream and result, set by the handlers for the access log line
ACCESS: web.RequestKey[dict[str, str]] = web.RequestKey("edgecache_access")
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_NO_ACCESS: Mapping[str, str] = MappingProxyType({})

Readiness = Callable[[], list[str]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# the id of the request being handled, for every log line made while handling it
CURRENT_REQUEST: ContextVar[str | None] = ContextVar("edgecache_request_id", default=None)


def readiness(tmp_dir: Path, index_ok: Callable[[], bool]) -> Readiness:
    """Problems that make edgecache unready, if any."""
    def check() -> list[str]:
        problems = []
        probe = tmp_dir / f".ready-{os.getpid()}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            problems.append(f"storage not writable: {exc.strerror or exc}")
        if not index_ok():
            problems.append("index not answering")
        return problems
    return check


def add_health_routes(app: web.Application, ready: Callable[[], Readiness | None]) -> None:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        check = ready()
        problems = check() if check is not None else ["starting"]
        if problems:
            return web.json_response({"status": "unready", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def metrics_app(metrics: Metrics, ready: Callable[[], Readiness | None]) -> web.Application:
    async def scrape(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    add_health_routes(app, ready)
    return app


class RequestIds:
    """Request ids: the client's `X-Request-Id` when sane, else a process prefix and a
    counter: unique for the life of the process without a random draw (a syscall) per
    request. Assigned when the request arrives, so the lines logged while it is handled can
    name it; a request that never reached the middleware gets one as its answer goes out."""

    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count()

    def assign(self, request: web.Request) -> str:
        request_id = request.get(REQUEST_ID)
        if request_id is None:
            given = request.headers.get("X-Request-Id", "")
            request_id = given if given and _SANE_ID.fullmatch(given) else \
                f"{self._prefix}{next(self._counter) & 0xFFFFFFFF:08x}"
            request[REQUEST_ID] = request_id
        return request_id

    def middleware(self) -> Middleware:
        @web.middleware
        async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
            token = CURRENT_REQUEST.set(self.assign(request))
            try:
                return await handler(request)
            finally:
                CURRENT_REQUEST.reset(token)
        return request_id


def response_headers(
    api_version: tuple[str, str], ids: RequestIds | None = None, metrics: Metrics | None = None,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """The on_response_prepare hook: every answer, streamed or not, carries the API version and
    the request id, and is counted by status class. One hook, not one per header: it runs on
    every response."""
    assign = (ids if ids is not None else RequestIds()).assign
    counted = {n: metrics.responses.labels(f"{n}xx") for n in range(1, 6)} if metrics else {}

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        if counted:
            counted.get(response.status // 100, counted[5]).inc()
        headers = response.headers
        headers[api_version[0]] = api_version[1]
        headers["X-Request-Id"] = assign(request)
    return hook


def body_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """The body bytes a response really sent: what the log line's `bytes` reports. aiohttp's
    `body_length` counts the headers with the body, and misses what `os.sendfile` sends past
    its writer: streamed blob bodies (`web.responses.CountedResponse`) report their own count
    there instead. An in-memory body went out whole once aiohttp finished the response (it
    sets `body_length` then); a HEAD's never did."""
    if not isinstance(response, web.Response):
        return response.body_length
    if request.method == "HEAD" or not response.body_length:
        return 0
    body = response.body
    return len(body) if isinstance(body, bytes | bytearray) else response.body_length


class AccessFields(dict[str, Any]):
    """A JSON access line, kept as fields until a handler formats it: the JSON formatter puts
    them into its own document (one encoding per request, not encode, decode and encode again);
    any other handler gets the JSON text."""

    def __str__(self) -> str:
        return json.dumps(self, separators=(",", ":"))


class AccessLogger(AbstractAccessLogger):
    """One line per request; `log_format` json or plain (chosen by the composition root).
    `bytes` is the body bytes sent (`body_bytes`), never the headers."""

    json_format = False

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        access: Mapping[str, str] = request.get(ACCESS) or _NO_ACCESS
        sent = body_bytes(request, response)
        if self.json_format:
            self.logger.info(AccessFields({
                "id": request.get(REQUEST_ID, "-"),
                "remote": request.remote,
                "method": request.method,
                "path": request.path_qs[:512],
                "status": response.status,
                "bytes": sent,
                "duration_s": round(time, 6),
                "route": access.get("route", "-"),
                "upstream": access.get("upstream", "-"),
                "result": access.get("result", "-"),
            }))
        else:  # formatted here: one string argument is the cheapest LogRecord to make
            self.logger.info(
                f'{request.get(REQUEST_ID, "-")} {request.remote} "{request.method} '
                f'{request.path_qs[:512]}" {response.status} {sent} {time:.3f}s '
                f'route={access.get("route", "-")} upstream={access.get("upstream", "-")} '
                f'result={access.get("result", "-")}')


class JsonAccessLogger(AccessLogger):
    json_format = True


def access_logger_for(log_format: str) -> type[AccessLogger]:
    return JsonAccessLogger if log_format == "json" else AccessLogger


def configure_logging(level: str, log_format: str) -> None:
    """Root logging: plain lines, or one JSON object per line for log shippers."""
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _PlainFormatter())
    handler.addFilter(_RequestContext())
    # No record needs the caller's file and line, thread, process or multiprocessing names: not
    # gathering them takes a stack walk and syscalls off every line, an access line per request
    # (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _MalformedRequests) for f in server.filters):
        server.addFilter(_MalformedRequests())


class _MalformedRequests(logging.Filter):
    """aiohttp logs every request it cannot parse as an ERROR with a traceback and the
    offending bytes (which may be a client's Authorization header). Garbage from a client is
    not an error of edgecache, and a scanner must not flood the journal: one debug line, no
    traceback, no request bytes. (The client got its 400 and the access log has the line.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        record.msg, record.args = "%s (%s)", (record.getMessage(), type(exc).__name__)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


class _RequestContext(logging.Filter):
    """Gives each record the id of the request being handled, if any (`CURRENT_REQUEST`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = CURRENT_REQUEST.get()
        return True


def iso_time(record: logging.LogRecord) -> str:
    """ISO 8601 in UTC with milliseconds (`2026-12-02T01:50:01.123Z`): what log shippers parse
    without a format string, the same on every node whatever its time zone."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + \
        f".{int(record.msecs):03d}Z"


class _PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = f"{iso_time(record)} {super().formatMessage(record)}"
        request_id = getattr(record, "request_id", None)
        return f"{line} id={request_id}" if request_id else line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, AccessFields):
            doc: dict[str, Any] = {"time": iso_time(record), "level": record.levelname,
                                   "logger": "access", **record.msg}
        else:
            doc = {"time": iso_time(record), "level": record.levelname,
                   "logger": record.name, "message": record.getMessage()}
            request_id = getattr(record, "request_id", None)
            if request_id:
                doc["id"] = request_id
            if record.exc_info:
                doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"))
