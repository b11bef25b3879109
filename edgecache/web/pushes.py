"""Every request on the local registry's route: pulls of local content and the writes of the
push API (manifest PUT and DELETE, blob DELETE, tag DELETE; uploads in `web/uploads.py`).

Pulls of local content follow a public upstream's rule: no credentials needed (a site's nodes
pull what its CI pushed, as they pull public images). Writes need the push right: with
`local.push: authenticated` (the default), a valid user, static token or a token this server
issued against credentials; an anonymous token or none gets 401 with a Bearer challenge whose
scope asks for `pull,push`, so docker, podman and skopeo log in and retry.
"""

from __future__ import annotations

from aiohttp import web

from edgecache.errors import BlobUnknown, NameUnknown, PushTooLarge, Unauthorized, Unsupported
from edgecache.local.referrers import local_referrers
from edgecache.local.registry import LocalRegistry
from edgecache.oci import MANIFEST_LIMIT, OCI_INDEX
from edgecache.proxy.routing import Target
from edgecache.proxy.tags import TagQuery, page
from edgecache.storage.store import Store
from edgecache.web import challenge
from edgecache.web.auth import ClientAuth
from edgecache.web.ranges import parse_range
from edgecache.web.responses import BlobFileResponse
from edgecache.web.uploads import UploadHandlers

READS = frozenset({"GET", "HEAD"})
ALLOWED = {"manifests": "GET, HEAD, PUT, DELETE", "blobs": "GET, HEAD, DELETE", "tags": "GET",
           "referrers": "GET"}  # a 405's Allow, per route (uploads: web/uploads.py)


class LocalHandlers:
    def __init__(self, registry: LocalRegistry, uploads: UploadHandlers, store: Store,
                 auth: ClientAuth, anonymous_push: bool) -> None:
        self.name = registry.name
        self._registry = registry
        self._uploads = uploads
        self._store = store
        self._auth = auth
        self._anonymous = anonymous_push

    async def handle(self, request: web.Request, target: Target) -> web.StreamResponse:
        method = request.method
        if method not in READS:
            await self._check_push(request)
        kind = target.kind
        if kind == "uploads":
            return await self._uploads.handle(request, target)
        if kind == "manifests":
            if method in READS:
                return self._get_manifest(request, target)
            if method == "PUT":
                return await self._put_manifest(request, target)
            if method == "DELETE":
                self._registry.delete_manifest(target.repository, target.reference,
                                               target.digest)
                return web.Response(status=202)
        elif kind == "blobs":
            if method in READS:
                return self._get_blob(request, target)
            if method == "DELETE":
                self._registry.delete_blob(target.content_digest())
                return web.Response(status=202)
        elif method == "GET" and kind == "tags":
            return self._tags(request, target)
        elif method == "GET" and kind == "referrers":
            answer = local_referrers(self._registry, target.content_digest(), request.query)
            response = web.Response(body=answer.body, headers={"Content-Type": OCI_INDEX})
            if answer.filters:
                response.headers["OCI-Filters-Applied"] = answer.filters
            return response
        raise Unsupported(f"{method} is not supported on /v2/<name>/{kind}/",
                          ALLOWED.get(kind, "GET, HEAD"))

    async def _check_push(self, request: web.Request) -> None:
        if self._anonymous:
            return
        _, refusal = await self._auth.identify(request.headers.get("Authorization", ""))
        if refusal is not None:
            raise Unauthorized(challenge.message(request, refusal),
                               challenge.bearer(request, self._auth.service, refusal,
                                                "pull,push"))

    def _get_manifest(self, request: web.Request, target: Target) -> web.Response:
        digest = self._registry.resolve(target.repository, target.reference, target.digest)
        stored = self._registry.manifest(digest)
        headers = {"Content-Type": stored.media_type or "", "Docker-Content-Digest": str(digest),
                   "ETag": f'"{digest}"', "Content-Length": str(stored.size)}
        if request.method == "HEAD":
            return web.Response(headers=headers)
        body = self._store.read(digest)
        if body is None:
            raise BlobUnknown(f"manifest {digest} was removed while being served")
        self._store.touch(digest)
        return web.Response(body=body, headers=headers)

    async def _put_manifest(self, request: web.Request, target: Target) -> web.Response:
        length = request.content_length
        if length is not None and length > MANIFEST_LIMIT:
            raise PushTooLarge(f"manifest of {length} bytes is over the {MANIFEST_LIMIT} limit")
        body = bytearray()
        while chunk := await request.content.readany():
            body += chunk
            if len(body) > MANIFEST_LIMIT:
                raise PushTooLarge(f"manifest is over the {MANIFEST_LIMIT} byte limit")
        if len(body) > self._store.room():
            raise PushTooLarge("the disk is full: no room above storage.min_free for the "
                               "manifest")
        pushed = await self._registry.put_manifest(
            target.repository, target.reference, target.digest, bytes(body),
            request.headers.get("Content-Type"))
        base = request.rel_url.raw_path.rpartition("/manifests/")[0]
        headers = {"Location": f"{base}/manifests/{pushed.digest}",
                   "Docker-Content-Digest": str(pushed.digest), "Content-Length": "0"}
        if pushed.subject is not None:
            headers["OCI-Subject"] = pushed.subject
        return web.Response(status=201, headers=headers)

    def _get_blob(self, request: web.Request, target: Target) -> web.StreamResponse:
        digest = target.content_digest()
        stored = self._registry.blob(digest)
        if stored is None:
            raise BlobUnknown(f"blob unknown: {digest}")
        headers = {"Content-Type": "application/octet-stream",
                   "Docker-Content-Digest": str(digest), "ETag": f'"{digest}"',
                   "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            headers["Content-Length"] = str(stored.size)
            return web.Response(headers=headers)
        span = parse_range(request.headers.get("Range"), stored.size)
        return BlobFileResponse(stored.open, stored.size, span, headers)

    def _tags(self, request: web.Request, target: Target) -> web.Response:
        query = TagQuery.parse(request.query)
        tags = self._registry.tags(target.repository)
        if not tags:  # content is per registry: a repository is its tags (as Distribution)
            raise NameUnknown(f"repository name not known to registry: {target.repository} "
                              "has no tags")
        found = page(tags, query)
        response = web.json_response({"name": target.repository, "tags": found.tags})
        if found.more:
            following = {"n": str(query.n)} if query.n is not None else {}
            following["last"] = found.tags[-1]
            if "ns" in request.query:
                following["ns"] = request.query["ns"]
            response.headers["Link"] = f'<{request.rel_url.with_query(following)}>; rel="next"'
        return response
