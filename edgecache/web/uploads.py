"""The blob upload endpoints of the local registry (`/v2/<name>/blobs/uploads/[<id>]`):
monolithic (POST ?digest=), POST then PUT, chunked (PATCH with Content-Range, status GET,
cancel DELETE) and cross-repository mount (`mount`, with or without `from`).

Bodies are streamed to the session's temporary file as they arrive (never held in memory);
the bytes of a chunk cut mid-way stay, so the client asks the status and resumes from there.
A body that would not fit on the disk above `storage.min_free` (its Content-Length, its
Content-Range, or its bytes as they arrive) is refused with 413 SIZE_INVALID: nothing stored
is evicted for a push. Only `LocalRegistry.publish_blob` makes an upload visible.
"""

from __future__ import annotations

import errno
import re

from aiohttp import web

from edgecache.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    PushTooLarge,
    StorageError,
    Unsupported,
    UploadRangeInvalid,
)
from edgecache.local.registry import LocalRegistry
from edgecache.local.uploads import Session, Uploads
from edgecache.oci import Digest
from edgecache.proxy.routing import Target
from edgecache.storage.store import BlobWriter, Store

_RANGE_RE = re.compile(r"(?:bytes[ =])?(\d{1,19})-(\d{1,19})")
UUID_HEADER = "Docker-Upload-UUID"
SESSION_METHODS = "GET, HEAD, PATCH, PUT, DELETE"  # on /blobs/uploads/<id>


def _full(size: int) -> str:
    return f"0-{max(size - 1, 0)}"


class UploadHandlers:
    def __init__(self, registry: LocalRegistry, uploads: Uploads, store: Store) -> None:
        self._registry = registry
        self._uploads = uploads
        self._store = store

    async def handle(self, request: web.Request, target: Target) -> web.StreamResponse:
        method = request.method
        if not target.reference:
            if method != "POST":
                raise Unsupported(f"{method} of an upload needs its session id", "POST")
            return await self._post(request, target)
        session = self._uploads.get(target.repository, target.reference)
        if method in ("GET", "HEAD"):
            return self._status(request, session, 204)
        if method == "DELETE":
            self._uploads.cancel(session)
            return web.Response(status=204)
        async with self._uploads.using(session):
            if method == "PATCH":
                await self._receive(request, session.writer, session.size)
                return self._status(request, session, 202)
            if method == "PUT":
                return await self._finish(request, session)
        raise Unsupported(f"{method} is not an upload method", SESSION_METHODS)

    async def _post(self, request: web.Request, target: Target) -> web.StreamResponse:
        query = request.query
        mount = query.get("mount")
        if mount is not None:
            digest = Digest.parse(mount)
            # `from` or not, any local repository will do: content is per registry here
            if self._registry.mount(digest):
                return self._created(request, digest)
        elif "digest" in query:
            digest = _upload_digest(query["digest"])
            writer = self._store.begin_upload()
            try:
                await self._receive(request, writer, 0)
            except BaseException:
                writer.abort()
                raise
            await self._registry.publish_blob(writer, digest)
            return self._created(request, digest)
        session = self._uploads.start(target.repository)
        return self._status(request, session, 202)

    async def _finish(self, request: web.Request, session: Session) -> web.StreamResponse:
        text = request.query.get("digest")
        if text is None:
            raise DigestInvalid("finishing an upload needs ?digest=<the blob's digest>")
        digest = _upload_digest(text)  # refused before the body: the session stays
        await self._receive(request, session.writer, session.size)
        self._uploads.finish(session)  # published or removed: the session ends either way
        await self._registry.publish_blob(session.writer, digest)
        return self._created(request, digest)

    async def _receive(self, request: web.Request, writer: BlobWriter, offset: int) -> None:
        """Append the request body at `offset` (where the upload ends), checked first against
        its Content-Range and the room on the disk."""
        length = request.content_length
        header = request.headers.get("Content-Range")
        if header is not None:
            match = _RANGE_RE.fullmatch(header.strip())
            if match is None:
                raise BlobUploadInvalid(f"malformed Content-Range {header[:100]!r}")
            start, end = int(match.group(1)), int(match.group(2))
            if start != offset or end < start:
                raise UploadRangeInvalid(f"chunk {start}-{end} does not start where the upload "
                                         f"ends ({offset} bytes); ask the status and resume")
            if length is not None and length != end - start + 1:
                raise BlobUploadInvalid("Content-Length does not match the Content-Range")
            length = end - start + 1
        room = self._store.room()
        if length is not None and length > room:
            raise PushTooLarge(_disk_full(length, room))
        received = 0
        while chunk := await request.content.readany():
            received += len(chunk)
            if length is not None and received > length:  # a chunked body past its range
                raise BlobUploadInvalid(f"the body is longer than the {length} bytes announced")
            if received > room:
                raise PushTooLarge(_disk_full(received, room))
            try:
                writer.write(chunk)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise PushTooLarge(_disk_full(received, 0)) from None
                if exc.errno == errno.EBADF:  # the writer was abandoned: DELETE or expiry
                    raise BlobUploadUnknown("the upload was cancelled while this chunk "
                                            "arrived: start again") from None
                raise StorageError(f"cannot write the upload: {exc.strerror or exc}") from exc

    @staticmethod
    def _status(request: web.Request, session: Session, status: int) -> web.Response:
        base = request.rel_url.raw_path.partition("/blobs/uploads")[0]
        location = f"{base}/blobs/uploads/{session.id}{_ns(request)}"
        return web.Response(status=status, headers={
            "Location": location, "Range": _full(session.size), UUID_HEADER: session.id,
            "Content-Length": "0"})

    @staticmethod
    def _created(request: web.Request, digest: Digest) -> web.Response:
        base = request.rel_url.raw_path.partition("/blobs/uploads")[0]
        return web.Response(status=201, headers={
            "Location": f"{base}/blobs/{digest}{_ns(request)}",
            "Docker-Content-Digest": str(digest), "Content-Length": "0"})


def _upload_digest(text: str) -> Digest:
    """An upload's digest: sha256, what an upload is hashed with as it arrives (the
    algorithm is named only at the end of a session); sha512 is refused as DIGEST_INVALID
    rather than found to mismatch after the whole body. Manifests take sha512 too."""
    digest = Digest.parse(text)
    if digest.algorithm != "sha256":
        raise DigestInvalid(f"{digest.algorithm} is not taken for blob uploads: pushed blobs "
                            "are verified as sha256")
    return digest


def _ns(request: web.Request) -> str:
    ns = request.query.get("ns")
    return f"?ns={ns}" if ns and ns.isprintable() and "&" not in ns and "#" not in ns else ""


def _disk_full(size: int, room: int) -> str:
    return (f"the disk is full: {size} bytes do not fit in the {room} bytes free above "
            "storage.min_free; nothing stored was evicted for this push")
