"""One upstream download per blob, streamed to every reader while it is written.

The first request for a cold digest starts a `Fill`: a task, owned by `Fills` rather than by
any request, that writes the upstream body into a temporary file while hashing it. Every request
for the same digest (from any repository or upstream route) gets a `FillReader` that `pread`s a
duplicate of the file descriptor, so it can follow the growing file from any offset (Range
requests included) and keep reading after the file is renamed into place.

How a reader follows the download: the fill wakes its waiting readers when `NOTIFY_BYTES` more
have been written, or `NOTIFY_DELAY` after the first byte they have not been told about (and at
once when it ends), not on every upstream chunk: upstream chunks are often 16-64 KiB, and 50
readers woken for each cost more than the bytes (50 clients behind a 200 Mbit/s upstream spent
most of the loop in small writes). A woken reader takes everything readable at once: on plain
HTTP, `copy` hands the span to `os.sendfile` (zero copy from the page cache the fill just wrote);
otherwise it `pread`s `READ_CHUNK` pieces.

Readers never see the last byte before the digest is verified: a blob whose bytes do not match
ends every reader's stream one byte short, which the client sees as a broken download; the
temporary file is removed and nothing is published. A client that goes away costs only its
reader; the download carries on for the others and for the cache.

When the blob cannot be cached (no room can be made for its announced size, or the disk fills
while writing), the fill steps aside and each reader continues from where it stands with its
own upstream stream: the pull succeeds, nothing is cached. A reader that streams the whole blob
that way still checks the digest before its last byte.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import aclosing
from typing import Any

from edgecache.errors import DigestMismatch, EdgecacheError, StorageError, TooManyRequests
from edgecache.metrics import Metrics
from edgecache.oci import Digest
from edgecache.proxy.download import Download, Opener
from edgecache.storage.blobs import BlobStore, BlobWriter
from edgecache.storage.quota import Quota

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
NOTIFY_BYTES = 1 << 20
NOTIFY_DELAY = 0.01  # seconds

Write = Callable[[bytes], Awaitable[None]]
SendFile = Callable[[int, int, int], Awaitable[None]]  # fd, offset, count: send those bytes

Published = Callable[[Digest, int, str], None]  # digest, size, upstream it came from


class _Bypass(Exception):
    """Internal signal to readers: continue from upstream directly, nothing will be cached."""


class Fill:
    """The state of one download, shared by its task and its readers."""

    def __init__(self, digest: Digest, writer: BlobWriter, upstream: str, opener: Opener,
                 metrics: Metrics) -> None:
        self.digest = digest
        self.upstream = upstream
        self.size: int | None = None
        self.error: BaseException | None = None
        self.done = False
        self.bypass = False
        self.opener = opener
        self.metrics = metrics
        self._writer = writer
        self._sized = asyncio.Event()
        self._changed = asyncio.Event()
        self._notified = 0  # how much the readers were told about
        self._timer: asyncio.TimerHandle | None = None
        self.readers = 0
        self.max_readers = 256

    @property
    def written(self) -> int:
        return self._writer.size

    def open_reader(self) -> FillReader:
        """Attach a reader; synchronous, so the descriptor is duplicated before any await."""
        if self.readers >= self.max_readers:
            raise TooManyRequests(f"{self.readers} clients are already following this download")
        self.readers += 1
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
        if self.bypass:
            raise _Bypass
        if self.done:
            return self.written
        return max(0, self.written - 1)

    async def changed(self) -> None:
        await self._changed.wait()

    def _grew(self) -> None:
        """Bytes were written: wake the readers now if enough piled up, else soon."""
        if self.written - self._notified >= NOTIFY_BYTES:
            self._notify()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(NOTIFY_DELAY, self._notify)

    def _notify(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._notified = self.written
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def _set_size(self, size: int | None) -> None:
        if not self._sized.is_set():
            self.size = size
            self._sized.set()

    def _finish(self, error: BaseException | None = None, bypass: bool = False) -> None:
        self.error = error
        self.bypass = bypass
        self.done = error is None and not bypass
        if self.done and self.size is None:
            self.size = self.written
        self._sized.set()
        self._notify()


class FillReader:
    """One client's view of a fill; `chunks` closes the descriptor when it ends."""

    def __init__(self, fill: Fill, fd: int) -> None:
        self.fill = fill
        self._fd: int | None = fd

    async def _limit(self, pos: int, end: int | None) -> int:
        """How far from `pos` the file may be read now (waiting for at least one byte), or `pos`
        when a read to the end has reached it. Raises the fill's error, or `_Bypass`."""
        fill = self.fill
        while True:
            available = fill.readable()
            if pos < available:
                return available if end is None else min(available, end)
            if fill.done:
                if end is None:
                    return pos
                raise StorageError(f"blob ended at {available} bytes, before {end}")
            await fill.changed()

    async def _spans(self, start: int, end: int | None
                     ) -> AsyncGenerator[tuple[int, int] | bytes, None]:
        """What [start, end) is made of, as it becomes readable: spans (pos, limit) of the file,
        or, once the reader has to continue from upstream, the bytes themselves."""
        pos = start
        while end is None or pos < end:
            try:
                limit = await self._limit(pos, end)
            except _Bypass:
                async with aclosing(self._direct(start, pos, end)) as rest:
                    async for data in rest:
                        yield data
                return
            if limit == pos:
                return
            yield pos, limit
            pos = limit

    def _pieces(self, pos: int, limit: int) -> Iterator[bytes]:
        """The readable span [pos, limit) of the file, read in `READ_CHUNK` pieces."""
        assert self._fd is not None
        while pos < limit:
            data = os.pread(self._fd, min(READ_CHUNK, limit - pos), pos)
            if not data:
                raise StorageError("download file shrank under a reader")
            pos += len(data)
            yield data

    async def chunks(self, start: int, end: int | None) -> AsyncGenerator[bytes, None]:
        """Bytes [start, end) as they become readable; `end` None means to the end."""
        try:
            async with aclosing(self._spans(start, end)) as spans:
                async for span in spans:
                    for data in [span] if isinstance(span, bytes) else self._pieces(*span):
                        yield data
        finally:
            self.close()

    async def copy(self, start: int, end: int | None, write: Write,
                   send_file: SendFile | None = None) -> int:
        """Bytes [start, end) as they become readable, each readable span at once: through
        `send_file(fd, offset, count)` when given (zero copy from the file), else read and
        passed to `write`. A reader that must continue from upstream goes through `write`.
        Returns the count of bytes sent; closes the descriptor."""
        sent = 0
        try:
            async with aclosing(self._spans(start, end)) as spans:
                async for span in spans:
                    if isinstance(span, bytes) or send_file is None:
                        for data in [span] if isinstance(span, bytes) else self._pieces(*span):
                            await write(data)
                            sent += len(data)
                    else:
                        assert self._fd is not None
                        await send_file(self._fd, span[0], span[1] - span[0])
                        sent += span[1] - span[0]
        finally:
            self.close()
        return sent

    async def _direct(self, start: int, pos: int, end: int | None) -> AsyncGenerator[bytes, None]:
        """Continue from upstream at `pos`. A reader of the whole blob re-hashes what it already
        sent (still readable through its descriptor) and checks the digest before the end."""
        fill = self.fill
        hasher: Any = None
        if start == 0 and end in (None, fill.size):
            hasher = fill.digest.hasher()
            offset = 0
            while offset < pos and self._fd is not None:
                data = os.pread(self._fd, min(1 << 20, pos - offset), offset)
                if not data:
                    break
                hasher.update(data)
                offset += len(data)
        download = Download(fill.opener, pos, fill.upstream, fill.metrics)
        try:
            async for data in download.chunks():
                offset = download.pos - len(data)  # where this chunk starts
                if end is not None and download.pos > end:
                    data = data[: end - offset]
                reached = offset + len(data)
                last = reached == (end if end is not None else download.total)
                if hasher is not None:
                    hasher.update(data)
                    if last:
                        self._check(hasher)
                yield data
                if last:
                    return
            if hasher is not None:  # no size was announced: the check comes after the body,
                self._check(hasher)  # before the response is ended
        finally:
            download.close()

    def _check(self, hasher: Any) -> None:
        fill = self.fill
        if hasher.hexdigest() != fill.digest.hex:
            fill.metrics.digest_mismatches.labels(fill.upstream).inc()
            raise DigestMismatch(str(fill.digest), f"{fill.digest.algorithm}:{hasher.hexdigest()}")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.fill.readers -= 1


class Fills:
    """The downloads in flight, by digest. One per process, owned by the composition root."""

    def __init__(self, blobs: BlobStore, quota: Quota, metrics: Metrics,
                 published: Published, max_downloads: int = 32,
                 max_readers: int = 256) -> None:
        self._slots = asyncio.Semaphore(max_downloads)
        self._max_readers = max_readers
        self._blobs = blobs
        self._quota = quota
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
        fill = Fill(digest, self._blobs.writer(digest), upstream, opener, self._metrics)
        fill.max_readers = self._max_readers
        self._active[key] = fill
        task = asyncio.create_task(self._run(fill), name=f"fill {key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._metrics.downloads_in_flight.inc()
        return fill

    async def close(self) -> None:
        """Cancel downloads at shutdown; their temporary files are removed."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, fill: Fill) -> None:
        async with self._slots:  # bounded downloads at once; the rest queue, readers wait
            await self._download(fill)

    async def _download(self, fill: Fill) -> None:
        writer = fill._writer
        download = Download(fill.opener, 0, fill.upstream, self._metrics)
        reserved = 0
        try:
            size = await download.open()
            fill._set_size(size)
            if size is not None:
                if not await self._quota.reserve(size):
                    fill._finish(bypass=True)
                    return
                reserved = size
            async for data in download.chunks():
                try:
                    writer.write(data)
                except OSError as exc:
                    log.warning("cannot cache %s (%s); serving it uncached", fill.digest, exc)
                    self._metrics.uncacheable.inc()
                    fill._finish(bypass=True)
                    return
                self._metrics.upstream_bytes.labels(fill.upstream).inc(len(data))
                fill._grew()
            await self._publish(fill, writer)
        except DigestMismatch as exc:
            self._metrics.digest_mismatches.labels(fill.upstream).inc()
            log.error("upstream %s sent wrong bytes: %s; nothing was stored", fill.upstream, exc)
            fill._finish(exc)
        except (EdgecacheError, OSError, asyncio.CancelledError) as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.warning("download of %s failed: %s", fill.digest, exc)
            fill._finish(exc if isinstance(exc, EdgecacheError) else StorageError(str(exc)))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            download.close()
            writer.abort()  # a no-op once committed
            self._quota.release(reserved)
            del self._active[str(fill.digest)]
            self._metrics.downloads_in_flight.dec()

    async def _publish(self, fill: Fill, writer: BlobWriter) -> None:
        try:
            await writer.commit()
        except StorageError as exc:
            # Verified, but not stored (a full disk at fsync): the bytes are good, so readers
            # finish from their descriptors; nothing enters the index.
            log.warning("verified %s but could not store it: %s", fill.digest, exc)
            fill._finish()
            return
        self._quota.added(writer.size)
        self._published(fill.digest, writer.size, fill.upstream)
        fill._finish()
