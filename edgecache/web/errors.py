"""The one table from domain errors to HTTP status and OCI error code.

Handlers raise domain errors; only the middleware here turns them into responses, so every error
a client sees has the same JSON shape: `{"errors": [{"code", "message", "detail"}]}`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from edgecache import errors

log = logging.getLogger(__name__)

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")

# Most specific first: the first row whose class matches wins.
ERROR_TABLE: tuple[tuple[type[errors.EdgecacheError], int, str], ...] = (
    (errors.Unauthorized, 401, "UNAUTHORIZED"),
    (errors.NameInvalid, 400, "NAME_INVALID"),
    (errors.TagInvalid, 400, "TAG_INVALID"),
    (errors.DigestInvalid, 400, "DIGEST_INVALID"),
    (errors.RangeNotSatisfiable, 416, "RANGE_INVALID"),
    (errors.Unsupported, 405, "UNSUPPORTED"),
    (errors.InvalidRequest, 400, "UNSUPPORTED"),
    (errors.TooManyRequests, 429, "TOOMANYREQUESTS"),
    (errors.BlobUnknown, 404, "BLOB_UNKNOWN"),
    (errors.ManifestUnknown, 404, "MANIFEST_UNKNOWN"),
    (errors.NameUnknown, 404, "NAME_UNKNOWN"),
    (errors.NotFound, 404, "NAME_UNKNOWN"),
    (errors.UpstreamUnavailable, 503, "UNAVAILABLE"),
    (errors.UpstreamAuthError, 403, "DENIED"),
    (errors.UpstreamError, 502, "UNKNOWN"),
    (errors.DigestMismatch, 502, "DIGEST_INVALID"),
    (errors.ManifestInvalid, 502, "MANIFEST_INVALID"),
    (errors.EdgecacheError, 500, "UNKNOWN"),
)

HTTP_CODES = {404: "NOT_FOUND", 405: "UNSUPPORTED", 413: "SIZE_INVALID"}


def error_response(status: int, code: str, message: str) -> web.Response:
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]})
    return web.Response(status=status, text=body, content_type="application/json")


def status_of(exc: errors.EdgecacheError) -> tuple[int, str]:
    for cls, status, code in ERROR_TABLE:
        if isinstance(exc, cls):
            return status, code
    return 500, "UNKNOWN"


def from_domain(exc: errors.EdgecacheError) -> web.Response:
    status, code = status_of(exc)
    response = error_response(status, code, str(exc))
    if isinstance(exc, errors.RangeNotSatisfiable) and exc.size is not None:
        response.headers["Content-Range"] = f"bytes */{exc.size}"
    if isinstance(exc, errors.Unsupported):
        response.headers["Allow"] = "GET, HEAD"
    if isinstance(exc, errors.TooManyRequests):
        response.headers["Retry-After"] = "1"
    if isinstance(exc, errors.Unauthorized):
        response.headers["WWW-Authenticate"] = exc.challenge
    return response


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.EdgecacheError as exc:
        status, _ = status_of(exc)
        (log.warning if status >= 500 else log.debug)(
            "%s %s -> %d: %s", request.method, request.path[:200], status, exc)
        return from_domain(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "UNKNOWN")
        return error_response(exc.status, code, exc.reason)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path[:200])
        return error_response(500, "UNKNOWN", "internal error")
