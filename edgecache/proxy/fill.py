"""One upstream download per blob, streamed to every reader while it is written.

The first request for a cold digest starts a `Fill`: a task, owned by `Fills` rather than by
any request, that writes the upstream body into a temporary file while hashing it. Every request
for the same digest (from any repository or upstream route) gets a `FillReader` that reads the
file through a reader of its own (`BlobWriter.reader`), so it can follow the growing file from
any offset (Range requests included) and keep reading after the file is renamed into place. The
fill ends in `Store.publish` (verify, fsync, rename, index row and link to the upstream, quota),
the one publish every writer goes through.

How a reader follows the download: the fill wakes its waiting readers per `NOTIFY_BYTES`
written, or `NOTIFY_DELAY` after the first byte they were not told about (at once when it
ends), not per upstream chunk: 50 readers woken per 16-64 KiB chunk cost more than the bytes. A
woken reader takes everything readable: `sendfile` on plain HTTP (zero copy from the page
cache), else `READ_CHUNK` preads (`proxy/reader.py`).

Readers never see the last byte before the digest is verified: a blob whose bytes do not match
ends every reader's stream one byte short, which the client sees as a broken download; the
temporary file is removed and nothing is published. A client that goes away costs only its
reader; the download carries on for the others and for the cache.

Every fill ends, and every reader hears how: whatever ends the download task (a domain error,
a full disk, a bug, a cancel while queued) finishes the fill with an error its readers raise. A
reader waits for news at most `stall_timeout` (`download.stall_bound`, from the upstream's
timeouts), then fails (503, or 429 while queued). A reader is a context manager its handler
closes on every path.

Fills in flight are bounded (each holds a temporary file): `limits.max_downloads` run, as many
again queue (`Fills.max_fills`); one more is 429 TOOMANYREQUESTS at once (joining is bounded by
`limits.max_readers_per_blob` only). A queued fill whose readers all left is dropped with its
file; a running one carries on for the cache.

When the blob cannot be cached (no room can be made for its announced size, or the disk fills
while writing), the fill steps aside and each reader continues from where it stands with its
own upstream stream: the pull succeeds, nothing is cached. A reader that streams the whole blob
that way still checks the digest before its last byte.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from edgecache.errors import (
    DigestMismatch,
    EdgecacheError,
    NotFound,
    StorageError,
    TooManyRequests,
    UpstreamBadResponse,
    UpstreamUnavailable,
)
from edgecache.metrics import Metrics
from edgecache.oci import Digest
from edgecache.proxy.download import DEFAULT_STALL, Download, Opener
from edgecache.proxy.reader import Bypass
from edgecache.proxy.reader import FillReader as FillReader  # re-exported: service.py uses it
from edgecache.storage.store import BlobWriter, Store

log = logging.getLogger(__name__)

NOTIFY_BYTES = 1 << 20
NOTIFY_DELAY = 0.01  # seconds


class Fill:
    """The state of one download, shared by its task and its readers."""

    def __init__(self, digest: Digest, writer: BlobWriter, upstream: str, opener: Opener,
                 metrics: Metrics, stall_timeout: float = DEFAULT_STALL) -> None:
        self.digest = digest
        self.upstream = upstream
        self.size: int | None = None
        self.error: BaseException | None = None
        self.done = False
        self.bypass = False
        self.ended = False  # done, failed or bypassed: nothing more will happen
        self.started = False  # holds a download slot (else still queued)
        self.stall_timeout = stall_timeout
        self.opener = opener
        self.metrics = metrics
        self._writer = writer
        self._sized = asyncio.Event()
        self._changed = asyncio.Event()
        self._notified = 0  # how much the readers were told about
        self._timer: asyncio.TimerHandle | None = None
        self.readers = 0
        self.max_readers = 256
        self.abandon: Callable[[], None] | None = None  # drops the fill while it is queued

    @property
    def written(self) -> int:
        return self._writer.size

    def open_reader(self) -> FillReader:
        """Attach a reader; synchronous, so its file is opened before any await."""
        if self.readers >= self.max_readers:
            raise TooManyRequests(f"{self.readers} clients are already following this download")
        file = self._writer.reader()
        self.readers += 1
        return FillReader(self, file)

    def reader_left(self) -> None:
        """A reader closed. A fill still queued that nobody follows any more is dropped: it
        holds a temporary file and a place in the queue, and would start later for nobody."""
        self.readers -= 1
        if self.readers <= 0 and not self.started and not self.ended and self.abandon:
            self.abandon()

    async def wait_size(self) -> int | None:
        """Wait for the upstream's answer; the total size, None if it sent none."""
        await self._news(self._sized)
        if self.error is not None and self.size is None:
            raise self.error
        return self.size

    def readable(self) -> int:
        """How far readers may read now. The last byte waits for verification."""
        if self.error is not None:
            raise self.error
        if self.bypass:
            raise Bypass
        if self.done:
            return self.written
        return max(0, self.written - 1)

    async def changed(self) -> None:
        await self._news(self._changed)

    async def _news(self, event: asyncio.Event) -> None:
        """Wait for `event`, at most `stall_timeout`: a reader is never held by a download that
        has gone quiet for longer than its own timeouts allow, nor by the queue."""
        try:
            async with asyncio.timeout(self.stall_timeout):
                await event.wait()
        except TimeoutError:
            if not self.started:
                raise TooManyRequests(
                    f"download of {self.digest} still queued after {self.stall_timeout:g}s "
                    "behind other downloads") from None
            raise UpstreamUnavailable(
                self.upstream, f"download of {self.digest} stalled: no progress in "
                f"{self.stall_timeout:g}s") from None

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
        self.ended = True
        self.error = error
        self.bypass = bypass
        self.done = error is None and not bypass
        if self.done and self.size is None:
            self.size = self.written
        self._sized.set()
        self._notify()


class Fills:
    """The downloads in flight, by digest. One per process, owned by the composition root."""

    def __init__(self, store: Store, metrics: Metrics, max_downloads: int = 32,
                 max_readers: int = 256, stall_timeouts: Mapping[str, float] | None = None
                 ) -> None:
        self._slots = asyncio.Semaphore(max_downloads)
        self.max_fills = 2 * max_downloads  # running + queued: see the module docstring
        self._stall_timeouts = dict(stall_timeouts or {})  # by upstream name
        self._max_readers = max_readers
        self._store = store
        self._metrics = metrics
        self._active: dict[Digest, Fill] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, digest: Digest) -> Fill | None:
        return self._active.get(digest)

    @property
    def in_flight(self) -> int:
        """Downloads running or queued (layer prefetch starts one only below max_downloads)."""
        return len(self._active)

    def start(self, digest: Digest, upstream: str, opener: Opener) -> Fill:
        """The fill for `digest`, started unless one is already running."""
        fill = self._active.get(digest)
        if fill is not None:
            return fill
        if len(self._active) >= self.max_fills:
            raise TooManyRequests(f"{len(self._active)} downloads are already running or "
                                  "queued; try again later")
        fill = Fill(digest, self._store.begin(digest), upstream, opener, self._metrics,
                    self._stall_timeouts.get(upstream, DEFAULT_STALL))
        fill.max_readers = self._max_readers
        self._active[digest] = fill
        task = asyncio.create_task(self._run(fill), name=f"fill {digest}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        fill.abandon = lambda: self._drop(fill, task)
        self._metrics.downloads_in_flight.inc()
        return fill

    def _drop(self, fill: Fill, task: asyncio.Task[None]) -> None:
        """Forget a queued fill at once (a new request starts afresh) and cancel its task."""
        if self._active.get(fill.digest) is fill:
            del self._active[fill.digest]
        task.cancel()

    async def close(self) -> None:
        """Cancel downloads at shutdown; their temporary files are removed."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, fill: Fill) -> None:
        try:
            async with self._slots:  # bounded downloads at once; the rest queue, readers wait
                fill.started = True
                await self._download(fill)
        finally:  # whatever ended the task, even a cancel while queued: its readers hear it
            if not fill.ended:  # cancelled: edgecache is stopping, or nobody waits for it any more
                fill._finish(UpstreamUnavailable(
                    fill.upstream, f"download of {fill.digest} was cancelled"))
            fill._writer.abort()  # a no-op once published; a fill dropped while queued has a file
            if self._active.get(fill.digest) is fill:
                del self._active[fill.digest]
            self._metrics.downloads_in_flight.dec()

    async def _download(self, fill: Fill) -> None:
        writer = fill._writer
        download = Download(fill.opener, 0, fill.upstream, self._metrics)
        reserved = 0
        try:
            size = await download.open()
            fill._set_size(size)
            if size is not None:
                if not await self._store.reserve(size):
                    fill._finish(bypass=True)
                    return
                reserved = size
            async for data in download.chunks():
                try:
                    writer.write(data)
                except OSError as exc:
                    log.warning("cannot cache %s (%s); serving it uncached", fill.digest, exc)
                    self._metrics.uncacheable.inc()
                    self._metrics.storage_errors.inc()
                    fill._finish(bypass=True)
                    return
                if download.source == "upstream":
                    self._metrics.upstream_bytes.labels(fill.upstream).inc(len(data))
                fill._grew()
            reserved, held = 0, reserved  # publish settles the reservation
            await self._publish(fill, writer, held)
        except DigestMismatch as exc:
            self._metrics.digest_mismatches.labels(fill.upstream).inc()
            log.error("upstream %s sent wrong bytes: %s; nothing was stored", fill.upstream, exc)
            fill._finish(exc)
        except (EdgecacheError, OSError) as exc:
            # an upstream 404 is the client's answer, not our trouble: a scan of absent
            # digests must not flood the journal (the access line still has each one)
            (log.debug if isinstance(exc, NotFound) else log.warning)(
                "download of %s failed: %s", fill.digest, exc)
            if isinstance(exc, OSError):
                self._metrics.storage_errors.inc()
            fill._finish(exc if isinstance(exc, EdgecacheError) else StorageError(str(exc)))
        except Exception as exc:  # a task's guard: a defect must not leave readers waiting
            log.exception("download of %s failed unexpectedly", fill.digest)
            fill._finish(UpstreamBadResponse(fill.upstream, f"download of {fill.digest} "
                                             f"failed: {type(exc).__name__}"))
        finally:
            download.close()
            writer.abort()  # a no-op once published
            self._store.release(reserved)

    async def _publish(self, fill: Fill, writer: BlobWriter, reserved: int) -> None:
        try:
            await self._store.publish(writer, upstreams=(fill.upstream,), reserved=reserved)
        except StorageError as exc:
            # Verified, but not stored (a full disk at fsync): the bytes are good, so readers
            # finish from their files; nothing enters the index.
            log.warning("verified %s but could not store it: %s", fill.digest, exc)
            self._metrics.storage_errors.inc()
        fill._finish()
