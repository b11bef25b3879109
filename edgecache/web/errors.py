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

# Most specific first: the first row whose class matches wins. Every 4XX code is one of the
# distribution spec's (v1.1.1, code-1..14): a JSON error body there MUST use them. 5XX answers
# keep Distribution's own UNAVAILABLE / UNKNOWN: the spec's table governs 4XX bodies, and none
# of its codes means "the upstream failed".
ERROR_TABLE: tuple[tuple[type[errors.EdgecacheError], int, str], ...] = (
    (errors.Unauthorized, 401, "UNAUTHORIZED"),
    (errors.NameInvalid, 400, "NAME_INVALID"),
    # a reference that is neither a digest nor a tag names no manifest: the spec's 404
    (errors.TagInvalid, 404, "MANIFEST_UNKNOWN"),
    (errors.DigestInvalid, 400, "DIGEST_INVALID"),
    (errors.UploadRangeInvalid, 416, "BLOB_UPLOAD_INVALID"),
    # no range code in the spec: the range does not fit the blob's length (Content-Range says it)
    (errors.RangeNotSatisfiable, 416, "SIZE_INVALID"),
    (errors.Unsupported, 405, "UNSUPPORTED"),
    (errors.BlobUploadInvalid, 400, "BLOB_UPLOAD_INVALID"),
    (errors.ManifestBlobUnknown, 400, "MANIFEST_BLOB_UNKNOWN"),
    (errors.ManifestRejected, 400, "MANIFEST_INVALID"),
    (errors.PushTooLarge, 413, "SIZE_INVALID"),
    (errors.InvalidRequest, 400, "UNSUPPORTED"),
    (errors.TooManyRequests, 429, "TOOMANYREQUESTS"),
    (errors.BlobUnknown, 404, "BLOB_UNKNOWN"),
    (errors.ManifestUnknown, 404, "MANIFEST_UNKNOWN"),
    (errors.NameUnknown, 404, "NAME_UNKNOWN"),
    (errors.BlobUploadUnknown, 404, "BLOB_UPLOAD_UNKNOWN"),
    # never NAME_UNKNOWN: ORAS (and the clients built on it) read a referrers 404 with that code
    # as "no such repository" and skip the tag-schema fallback
    (errors.NotOffered, 404, "UNSUPPORTED"),
    (errors.NotFound, 404, "NAME_UNKNOWN"),
    (errors.UpstreamUnavailable, 503, "UNAVAILABLE"),
    (errors.UpstreamAuthError, 403, "DENIED"),
    (errors.UpstreamError, 502, "UNKNOWN"),
    (errors.DigestMismatch, 502, "DIGEST_INVALID"),
    (errors.ManifestInvalid, 502, "MANIFEST_INVALID"),
    (errors.EdgecacheError, 500, "UNKNOWN"),
)

# aiohttp's own refusals (a path outside the API, a body over the limit), in the spec's codes.
HTTP_CODES = {404: "UNSUPPORTED", 405: "UNSUPPORTED", 413: "SIZE_INVALID"}


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
        response.headers["Allow"] = exc.allow
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
        code = HTTP_CODES.get(exc.status, "UNSUPPORTED" if exc.status < 500 else "UNKNOWN")
        return error_response(exc.status, code, exc.reason)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path[:200])
        return error_response(500, "UNKNOWN", "internal error")
