"""A fake OCI registry on loopback: a fault injector for what a real registry cannot do.

`FakeRegistry` serves the pull side of the distribution API (manifests, blobs, tag lists) from
in-memory content and records every request it receives, auth headers included. Each test
configures the faults it needs:

- auth: `require_bearer()` (a `/token` realm on the same server, tokens with `expires_in`,
  `revoke_tokens()` so the next request gets a 401) or `require_basic()`;
- `redirect_blobs_to(cdn)`: blob GETs answer 307 to a `FakeCDN` on another port, which records
  whether an Authorization header reached it;
- `BlobFault` per digest: truncate the body (Content-Length N, connection closed after k bytes,
  on every attempt or the first few), send wrong bytes, drip in small chunks with sleeps, or hold
  the rest of the body until the test opens a gate;
- `hold(...)`: matching requests arrive (and are recorded) but get no answer until the test
  sets the returned gate: an upstream that hangs on some requests and answers others;
  `arrival(...)`: an event set when a matching request arrives (held or not), so a test can
  act while another request is held, or learn that a request reached this upstream;
- `fail(status, ...)`: answer 500/503/429 for matching requests (`clear_failures()` ends it);
  `down = True`: 503 for all;
  `stop()`: close the port so connections are refused;
- `redirect(location, ...)`: answer matching requests with a redirect to any URL (hostile
  redirects: link-local, private, downgrade, loops);
- `cut_documents_at = k`: manifest and tag-list GETs announce their full Content-Length and
  hang up after k body bytes (a network cut mid-document).

Only aiohttp.web and the content builders in `tests.support.images` are used.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpServer

from tests.support.images import Blob, Image, Index, sha256

GATE_TIMEOUT = 30.0  # a gate a test forgot to open must not hang the suite
_API_PATH = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<ref>[^/]+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorded:
    """One request as the fake saw it; `status` is filled in when the answer is known."""

    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    status: int | None = None

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")


@dataclass
class BlobFault:
    """How to misbehave when serving one blob's body (GET only; HEAD stays honest).

    - `truncate_at`: send Content-Length as usual but close the connection after this many body
      bytes; `truncate_times` limits it to the first n GETs (None: every GET).
    - `wrong_bytes`: serve bytes of the right length that do not match the digest.
    - `chunk_size`/`delay`: drip the body in small chunks with a sleep between them.
    - `gate_after` (> 0): after this many bytes, wait until the test calls `gate.set()`.
    """

    truncate_at: int | None = None
    truncate_times: int | None = None
    wrong_bytes: bool = False
    chunk_size: int | None = None
    delay: float = 0.0
    gate_after: int | None = None
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    truncated: int = 0  # how many GETs were cut short so far


@dataclass
class _Failure:
    status: int
    path_contains: str
    method: str | None
    times: int | None

    def matches(self, request: web.Request) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method is not None and request.method != self.method:
            return False
        return self.path_contains in request.path


def _error(status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]})
    return web.Response(status=status, text=body, content_type="application/json",
                        headers=headers)


class _BlobServer:
    """Serving blob bodies with Range support and faults; shared by the registry and the CDN."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.faults: dict[str, BlobFault] = {}
        self.honor_range = True
        self.completed: dict[str, int] = {}  # digest -> bodies sent to the end
        self._gates: list[asyncio.Event] = []

    def fault(self, digest: str, fault: BlobFault) -> BlobFault:
        self.faults[digest] = fault
        self._gates.append(fault.gate)
        return fault

    def open_gates(self) -> None:
        for gate in self._gates:
            gate.set()

    async def send(self, request: web.Request, digest: str) -> web.StreamResponse:
        data = self.blobs.get(digest)
        if data is None:
            return _error(404, "BLOB_UNKNOWN", f"blob {digest} unknown")
        fault = self.faults.get(digest, BlobFault())
        headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest,
                   "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(data))})
        if fault.wrong_bytes:
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start, end, status = 0, len(data), 200
        match = _RANGE.match(request.headers.get("Range", ""))
        if match and self.honor_range:
            start = int(match.group(1))
            end = min(int(match.group(2)) + 1, len(data)) if match.group(2) else len(data)
            if start >= len(data) or start >= end:
                return _error(416, "RANGE_INVALID", "range not satisfiable",
                              {"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start
        await response.prepare(request)

        cut = end
        if fault.truncate_at is not None and (fault.truncate_times is None
                                              or fault.truncated < fault.truncate_times):
            fault.truncated += 1
            cut = min(end, start + fault.truncate_at)
        chunk = fault.chunk_size or 256 * 1024
        hold = None if fault.gate_after is None else start + fault.gate_after
        pos = start
        while pos < cut:  # bounded: pos grows by at least one byte per round
            stop = min(cut, pos + chunk)
            if hold is not None and pos < hold:
                stop = min(stop, hold)
            await response.write(data[pos:stop])
            pos = stop
            if pos == hold:
                await asyncio.wait_for(fault.gate.wait(), GATE_TIMEOUT)
            if fault.delay and pos < cut:
                await asyncio.sleep(fault.delay)
        if cut < end:
            # Content-Length promised more: hang up after flushing what was sent.
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        self.completed[digest] = self.completed.get(digest, 0) + 1
        return response


class FakeCDN:
    """A second server (another port) that blob GETs are redirected to, like Docker Hub's CDN."""

    def __init__(self, blobs: _BlobServer) -> None:
        self._blobs = blobs
        self.requests: list[Recorded] = []
        self.url = ""
        self.app = web.Application(middlewares=[self._record])
        self.app.router.add_get("/cdn/{digest}", self._blob)

    @web.middleware
    async def _record(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        entry = _recorded(request)
        self.requests.append(entry)
        response = await handler(request)
        entry.status = response.status
        return response

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("sig") != "signed":
            return web.Response(status=403, text="bad signature")
        return await self._blobs.send(request, request.match_info["digest"])


def _recorded(request: web.Request) -> Recorded:
    return Recorded(method=request.method, path=request.path, raw_path=request.raw_path,
                    query=dict(request.query), headers=CIMultiDict(request.headers))


class FakeRegistry:
    """The fake upstream. Create it, add content, configure faults, then `await start(...)`."""

    def __init__(self) -> None:
        self._content = _BlobServer()
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}  # (repo, ref) -> body, type
        self.tags: dict[str, list[str]] = {}
        self.requests: list[Recorded] = []
        self.token_requests: list[Recorded] = []
        self.url = ""
        self.down = False
        self.chunked_manifests = False  # send manifests without Content-Length
        self.extra_headers: dict[str, str] = {}  # added to every answer (hostile headers)
        self.cut_documents_at: int | None = None  # manifests, tag lists: hang up mid-body
        self._failures: list[_Failure] = []
        self._holds: list[tuple[str, str | None, asyncio.Event]] = []
        self._arrivals: list[tuple[str, str | None, asyncio.Event]] = []
        self._auth: str | None = None  # None, "bearer" or "basic"
        self._basic_expected: str | None = None
        self._token_basic: str | None = None
        self._token_ttl: int | float = 300
        self._realm: str | None = None
        self._challenge_scope = True
        self._tokens: dict[str, str] = {}  # valid token -> scope
        self._token_ids = itertools.count(1)
        self._redirect_to: FakeCDN | None = None
        self._redirects: list[tuple[str, str | None, Callable[[web.Request], str | None],
                                    int]] = []
        self._test_server: TestServer | None = None
        self.app = web.Application(middlewares=[self._record])
        self.app.on_shutdown.append(self._on_shutdown)
        self.app.on_response_prepare.append(self._add_extra_headers)
        self.app.router.add_get("/token", self._token)
        self.app.router.add_route("*", "/{tail:.*}", self._api)

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self, aiohttp_server: AiohttpServer) -> FakeRegistry:
        server = await aiohttp_server(self.app)
        self.url = str(server.make_url("")).rstrip("/")
        self._test_server = server
        return self

    async def stop(self) -> None:
        """Close the port: from now on connections are refused."""
        assert self._test_server is not None
        await self._test_server.close()

    async def start_cdn(self, aiohttp_server: AiohttpServer) -> FakeCDN:
        cdn = FakeCDN(self._content)
        server = await aiohttp_server(cdn.app)
        cdn.url = str(server.make_url("")).rstrip("/")
        return cdn

    async def _add_extra_headers(self, request: web.Request,
                                 response: web.StreamResponse) -> None:
        response.headers.update(self.extra_headers)

    async def _on_shutdown(self, app: web.Application) -> None:
        self._content.open_gates()
        for _, _, gate in self._holds:
            gate.set()

    # ---- content --------------------------------------------------------------------------

    @property
    def completed(self) -> dict[str, int]:
        """How many times each blob's body was sent to the end."""
        return self._content.completed

    def add_blob(self, blob: Blob | bytes) -> str:
        data = blob.data if isinstance(blob, Blob) else blob
        digest = sha256(data)
        self._content.blobs[digest] = data
        return digest

    def add_manifest(self, repo: str, body: bytes, media_type: str,
                     tags: Iterable[str] = ()) -> str:
        digest = sha256(body)
        self.manifests[(repo, digest)] = (body, media_type)
        for tag in tags:
            self.manifests[(repo, tag)] = (body, media_type)
            if tag not in self.tags.setdefault(repo, []):
                self.tags[repo].append(tag)
        return digest

    def add_image(self, repo: str, image: Image, tags: Iterable[str] = ("latest",)) -> None:
        for blob in image.blobs:
            self.add_blob(blob)
        self.add_manifest(repo, image.manifest, image.media_type, tags)

    def add_index(self, repo: str, index: Index, tags: Iterable[str] = ("latest",)) -> None:
        for image in index.images:
            self.add_image(repo, image, tags=())
        self.add_manifest(repo, index.manifest, index.media_type, tags)

    # ---- faults ---------------------------------------------------------------------------

    def fault(self, digest: str, fault: BlobFault) -> BlobFault:
        return self._content.fault(digest, fault)

    def clear_fault(self, digest: str) -> None:
        self._content.faults.pop(digest, None)

    def ignore_range(self) -> None:
        """Answer Range requests with the whole blob (200), as some registries do."""
        self._content.honor_range = False

    def fail(self, status: int, *, path_contains: str = "", method: str | None = None,
             times: int | None = None) -> None:
        """Answer `status` to matching requests (the first `times` of them, or all)."""
        self._failures.append(_Failure(status, path_contains, method, times))

    def hold(self, path_contains: str, *, method: str | None = None) -> asyncio.Event:
        """Matching requests are recorded on arrival (status None) and answered only once the
        returned gate is set (after GATE_TIMEOUT at the latest, with a 500)."""
        gate = asyncio.Event()
        self._holds.append((path_contains, method, gate))
        return gate

    def arrival(self, path_contains: str, *, method: str | None = None) -> asyncio.Event:
        """An event set when the next matching request arrives (before any hold applies)."""
        event = asyncio.Event()
        self._arrivals.append((path_contains, method, event))
        return event

    def redirect(self, location: str | Callable[[web.Request], str | None], *,
                 path_contains: str = "", method: str | None = None, status: int = 307) -> None:
        """Answer matching requests (after auth) with `status` and this Location (a string, or
        a function of the request; None: no redirect, answer normally), whatever the target:
        the upstream turned hostile."""
        where = location if callable(location) else (lambda _request: location)
        self._redirects.append((path_contains, method, where, status))

    def clear_failures(self) -> None:
        """Forget every `fail(...)`: the upstream answers normally again."""
        self._failures.clear()

    def redirect_blobs_to(self, cdn: FakeCDN) -> None:
        """Blob GETs (after auth) answer 307 to `cdn`, with a signed URL of its own."""
        self._redirect_to = cdn

    def require_bearer(self, *, expires_in: int | float = 300, challenge_scope: bool = True,
                       credentials: tuple[str, str] | None = None,
                       realm: str | None = None) -> None:
        """Token auth: the 401 challenge names the realm `/token` on this server (or `realm`,
        any URL: a hostile upstream). With `credentials`, the token endpoint demands them as
        Basic auth."""
        self._auth = "bearer"
        self._realm = realm
        self._token_ttl = expires_in
        self._challenge_scope = challenge_scope
        self._token_basic = _basic(*credentials) if credentials else None

    def require_basic(self, username: str, password: str) -> None:
        self._auth = "basic"
        self._basic_expected = _basic(username, password)

    def revoke_tokens(self) -> None:
        """Every token issued so far stops working (expired, or revoked, server-side)."""
        self._tokens.clear()

    # ---- queries for tests ----------------------------------------------------------------

    def api_requests(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Registry API requests (not token requests), optionally filtered."""
        return [r for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)]

    # ---- handlers -------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        entry = _recorded(request)
        (self.token_requests if request.path == "/token" else self.requests).append(entry)
        for contains, method, event in self._arrivals:
            if contains in request.path and method in (None, request.method):
                event.set()
        for contains, method, gate in self._holds:
            if contains in request.path and method in (None, request.method):
                try:
                    await asyncio.wait_for(gate.wait(), GATE_TIMEOUT)
                except TimeoutError:
                    entry.status = 500
                    return _error(500, "UNKNOWN", "held request never released")
        response = await self._refusal(request) or await handler(request)
        entry.status = response.status
        return response

    async def _refusal(self, request: web.Request) -> web.StreamResponse | None:
        if self.down:
            return _error(503, "UNAVAILABLE", "registry is down for maintenance")
        for failure in self._failures:
            if failure.matches(request):
                if failure.times is not None:
                    failure.times -= 1
                headers = {"Retry-After": "1"} if failure.status == 429 else None
                code = "TOOMANYREQUESTS" if failure.status == 429 else "UNAVAILABLE"
                return _error(failure.status, code, f"injected {failure.status}", headers)
        return None

    async def _token(self, request: web.Request) -> web.StreamResponse:
        if self._token_basic is not None and \
                request.headers.get("Authorization") != self._token_basic:
            return web.json_response({"details": "incorrect username or password"}, status=401)
        scope = request.query.get("scope", "")
        token = f"token-{next(self._token_ids)}"
        self._tokens[token] = scope
        return web.json_response({"token": token, "access_token": token,
                                  "expires_in": self._token_ttl})

    def _unauthorized(self, request: web.Request, repo: str | None) -> web.StreamResponse | None:
        """A 401 with a challenge when the request lacks what `_auth` demands, else None."""
        given = request.headers.get("Authorization", "")
        if self._auth == "basic":
            if given == self._basic_expected:
                return None
            return _error(401, "UNAUTHORIZED", "authentication required",
                          {"WWW-Authenticate": 'Basic realm="fake"'})
        if self._auth == "bearer":
            scope = f"repository:{repo}:pull" if repo else ""
            token = given.removeprefix("Bearer ") if given.startswith("Bearer ") else None
            if token is not None and token in self._tokens and (
                    not repo or self._tokens[token] == scope):
                return None
            realm = self._realm or f"{self.url}/token"
            challenge = f'Bearer realm="{realm}",service="fake-registry"'
            if scope and self._challenge_scope:
                challenge += f',scope="{scope}"'
            return _error(401, "UNAUTHORIZED", "authentication required",
                          {"WWW-Authenticate": challenge})
        return None

    async def _api(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return _error(405, "UNSUPPORTED", "read-only fake")
        if request.path in ("/v2", "/v2/"):
            return self._unauthorized(request, None) or web.json_response({})
        match = _API_PATH.match(request.path)
        if match is None:
            return _error(404, "NAME_UNKNOWN", "not an API path")
        repo, kind, ref = match.group("name"), match.group("kind"), match.group("ref")
        refused = self._unauthorized(request, repo)
        if refused is not None:
            return refused
        for contains, method, where, status in self._redirects:
            target = where(request) if contains in request.path and method in (
                None, request.method) else None
            if target is not None:
                return web.Response(status=status, headers={"Location": target})
        if kind in ("manifests", "tags"):
            document = (await self._manifest(request, repo, ref) if kind == "manifests"
                        else self._tag_list(request, repo))
            return await self._cut(request, document)
        if request.method == "GET" and self._redirect_to is not None:
            if ref not in self._content.blobs:
                return _error(404, "BLOB_UNKNOWN", f"blob {ref} unknown")
            location = f"{self._redirect_to.url}/cdn/{ref}?sig=signed"
            return web.Response(status=307, headers={"Location": location})
        return await self._content.send(request, ref)

    async def _manifest(self, request: web.Request, repo: str, ref: str) -> web.StreamResponse:
        found = self.manifests.get((repo, ref))
        if found is None:
            return _error(404, "MANIFEST_UNKNOWN", f"manifest {repo}:{ref} unknown")
        body, media_type = found
        headers = {"Content-Type": media_type, "Docker-Content-Digest": sha256(body)}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(body))})
        if not self.chunked_manifests:
            return web.Response(body=body, headers=headers)
        response = web.StreamResponse(headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for pos in range(0, len(body), 1 << 20):
            await response.write(body[pos:pos + (1 << 20)])
        await response.write_eof()
        return response

    async def _cut(self, request: web.Request,
                   document: web.StreamResponse) -> web.StreamResponse:
        """With `cut_documents_at`, a whole GET answer becomes: its full Content-Length
        announced, that many body bytes sent, then a hang-up. Anything else goes as it is."""
        body = getattr(document, "body", None)
        if (self.cut_documents_at is None or request.method != "GET" or document.status != 200
                or not isinstance(body, bytes)):
            return document
        response = web.StreamResponse(headers=document.headers)
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: self.cut_documents_at])
        if request.transport is not None:
            request.transport.close()
        return response

    def _tag_list(self, request: web.Request, repo: str) -> web.StreamResponse:
        if repo not in self.tags:
            return _error(404, "NAME_UNKNOWN", f"repository {repo} unknown")
        tags = sorted(self.tags[repo])
        last = request.query.get("last")
        if last:
            tags = [tag for tag in tags if tag > last]
        headers = {}
        n = request.query.get("n", "")
        if n.isascii() and n.isdigit() and len(n) <= 18 and len(tags) > int(n) > 0:
            tags = tags[: int(n)]
            headers["Link"] = f'</v2/{repo}/tags/list?n={n}&last={tags[-1]}>; rel="next"'
        return web.json_response({"name": repo, "tags": tags}, headers=headers)


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")

