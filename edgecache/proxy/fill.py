"""One upstream download per blob, streamed to every reader while it is written.

The first request for a cold digest starts a `Fill`: a task, owned by `Fills` rather than by
any request, that writes the upstream body into a temporary file while hashing it. Every request
for the same digest (from any repository or upstream route) gets a `FillReader` that `pread`s a
duplicate of the file descriptor, so it can follow the growing file from any offset (Range
requests included) and keep reading after the file is renamed into place.

Readers never see the last byte before the digest is verified: a blob whose bytes do not match
ends every reader's stream one byte short, which the client sees as a broken download; the
temporary file is removed and nothing is published. A client that goes away costs only its
reader; the download carries on for the others and for the cache.

A download that breaks mid-way resumes with `Range: bytes=<written>-`, a bounded number of
times; readers see only a pause.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator, Awaitable, Callable

from edgecache.errors import (
    DigestMismatch,
    EdgecacheError,
    StorageError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamUnavailable,
)
from edgecache.metrics import Metrics
from edgecache.oci import Digest
from edgecache.storage.blobs import BlobStore, BlobWriter
from edgecache.upstream.client import BlobStream

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
RESUME_ATTEMPTS = 3
RESUME_BACKOFF = 0.5

Opener = Callable[[int], Awaitable[BlobStream]]
Published = Callable[[Digest, int], None]


class Fill:
    """The state of one download, shared by its task and its readers."""

    def __init__(self, digest: Digest, writer: BlobWriter, upstream: str) -> None:
        self.digest = digest
        self.upstream = upstream
        self.size: int | None = None
        self.error: BaseException | None = None
        self.done = False
        self._writer = writer
        self._sized = asyncio.Event()
        self._changed = asyncio.Event()

    @property
    def written(self) -> int:
        return self._writer.size

    def open_reader(self) -> FillReader:
        """Attach a reader; synchronous, so the descriptor is duplicated before any await."""
        return FillReader(self, os.dup(self._writer.fd))

    async def wait_size(self) -> int | None:
        """Wait for the upstream's answer; the total size, None if it sent none."""
        await self._sized.wait()
        if self.error is not None and self.size is None:
            raise self.error
        return self.size

    def readable(self) -> int:
        """How far readers may read now. The last byte waits for verification."""
        if self.error is not None:
            raise self.error
        if self.done:
            return self.written
        return max(0, self.written - 1)

    async def changed(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def _set_size(self, size: int | None) -> None:
        if self._sized.is_set():
            return
        self.size = size
        self._sized.set()

    def _finish(self, error: BaseException | None) -> None:
        self.error = error
        self.done = error is None
        if self.done and self.size is None:
            self.size = self.written
        self._sized.set()
        self._notify()


class FillReader:
    """One client's view of a fill; `chunks` closes the descriptor when it ends."""

    def __init__(self, fill: Fill, fd: int) -> None:
        self.fill = fill
        self._fd: int | None = fd

    async def chunks(self, start: int, end: int | None) -> AsyncGenerator[bytes, None]:
        """Bytes [start, end) as they become readable; `end` None means to the end."""
        fill, fd, pos = self.fill, self._fd, start
        assert fd is not None
        try:
            while end is None or pos < end:
                available = fill.readable()
                if end is None and fill.done and pos >= available:
                    return
                if pos < available:
                    limit = available if end is None else min(available, end)
                    data = os.pread(fd, min(READ_CHUNK, limit - pos), pos)
                    if not data:
                        raise StorageError("download file shrank under a reader")
                    pos += len(data)
                    yield data
                else:
                    await fill.changed()
        finally:
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Fills:
    """The downloads in flight, by digest. One per process, owned by the composition root."""

    def __init__(self, blobs: BlobStore, metrics: Metrics, published: Published) -> None:
        self._blobs = blobs
        self._metrics = metrics
        self._published = published
        self._active: dict[str, Fill] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, digest: Digest) -> Fill | None:
        return self._active.get(str(digest))

    def start(self, digest: Digest, upstream: str, opener: Opener) -> Fill:
        """The fill for `digest`, started unless one is already running."""
        key = str(digest)
        fill = self._active.get(key)
        if fill is not None:
            return fill
        fill = Fill(digest, self._blobs.writer(digest), upstream)
        self._active[key] = fill
        task = asyncio.create_task(self._run(fill, opener), name=f"fill {key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._metrics.downloads_in_flight.inc()
        return fill

    async def close(self) -> None:
        """Cancel downloads at shutdown; their temporary files are removed."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, fill: Fill, opener: Opener) -> None:
        writer = fill._writer
        try:
            await self._download(fill, writer, opener)
            path = await writer.commit()
            self._published(fill.digest, writer.size)
            log.debug("stored %s (%d bytes) at %s", fill.digest, writer.size, path)
            fill._finish(None)
        except DigestMismatch as exc:
            self._metrics.digest_mismatches.labels(fill.upstream).inc()
            log.error("upstream %s sent wrong bytes: %s; nothing was stored", fill.upstream, exc)
            fill._finish(exc)
        except (EdgecacheError, OSError, asyncio.CancelledError) as exc:
            writer.abort()
            if not isinstance(exc, asyncio.CancelledError):
                log.warning("download of %s failed: %s", fill.digest, exc)
            fill._finish(exc if isinstance(exc, EdgecacheError) else StorageError(str(exc)))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            del self._active[str(fill.digest)]
            self._metrics.downloads_in_flight.dec()

    async def _download(self, fill: Fill, writer: BlobWriter, opener: Opener) -> None:
        failures = 0
        while True:
            offset = writer.size
            try:
                stream = await opener(offset)
            except UpstreamUnavailable:
                if offset == 0 or failures >= RESUME_ATTEMPTS:
                    raise
                failures += 1
                await asyncio.sleep(RESUME_BACKOFF * failures)
                continue
            try:
                if offset == 0:
                    fill._set_size(stream.total)
                elif stream.start != offset:
                    if stream.start != 0:
                        raise UpstreamBadResponse(fill.upstream, "resumed at the wrong offset")
                    writer.truncate(0)  # the upstream ignored Range: start over
                async for data in stream.chunks():
                    writer.write(data)
                    self._metrics.upstream_bytes.labels(fill.upstream).inc(len(data))
                    if fill.size is not None and writer.size > fill.size:
                        raise UpstreamBadResponse(fill.upstream, "blob longer than announced")
                    fill._notify()
                if fill.size is None or writer.size == fill.size:
                    return
                raise UpstreamUnavailable(fill.upstream, "blob download ended early")
            except UpstreamError as exc:
                if not isinstance(exc, UpstreamUnavailable) or failures >= RESUME_ATTEMPTS:
                    raise
                failures += 1
                log.info("download of %s broke at %d bytes (%s); resuming", fill.digest,
                         writer.size, exc)
                self._metrics.resumed_downloads.labels(fill.upstream).inc()
                await asyncio.sleep(RESUME_BACKOFF * failures)
            finally:
                stream.close()
