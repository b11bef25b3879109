"""Blob bodies: cached files, and downloads in progress (the Range header: `web/ranges.py`).

Blob bytes come from a storage reader (`storage/store.py`: a `BlobFile`, opened when the
response is prepared, closed however it ends); web/ never sees a path or the file's descriptor.
Cached files on plain TCP go out zero-copy: the file's `sendfile` onto a duplicate of the
connection's socket (uvloop has no `loop.sendfile`; the stdlib loop's costs more per request),
1 MiB at a time (the longest the loop is held, as a 1 MiB write was before), waiting for the
socket to become writable between calls: no user-space buffer, so no per-connection memory, and
the kernel copies page cache to socket once. A window whose first and last pages are in the
page cache is sent from the loop (a thread hop costs more than the copy); otherwise from the
default executor, so the loop never waits on the disk. A client that stops reading is cut off after
`listen.idle_timeout` without progress (`web/stalls.py`: one timer per body, nothing per piece).

Under TLS there is no zero-copy: the file is read in `TLS_CHUNK` pieces and written through the
transport, which encrypts them, with the transport's write buffer limited to one piece. A piece
is read on the loop with `RWF_NOWAIT` (it only succeeds from the page cache, so it never waits on
the disk) and from the executor otherwise. A connection holds about three pieces (the plaintext,
its ciphertext, OpenSSL's memory BIO grown to one piece) plus ~0.14 MiB of TLS and HTTP state.
Measured at 64 concurrent 64 MiB downloads with the heap trimmer (edgecache/memory.py) running
(peak RSS, server CPU-seconds per GB): 1 MiB pieces with uvloop's 512 KiB limit held 4 MiB per
connection; 128 KiB pieces 76-82 MiB, 0.48 s/GB; 64 KiB 67-73 MiB, 0.51; 48 KiB (three TLS
records) 63-64 MiB, 0.50; 32 KiB 60-64 MiB, 0.55 (each Python-level write costs the same, so
smaller pieces cost CPU; throughput against nginx moved within the noise of a shared machine).
Reusing one piece buffer per connection changed neither figure measurably and would need proof
that the TLS transport never keeps a reference (uvloop does keep one when OpenSSL asks to retry
a write), so each piece is a fresh buffer.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from edgecache.errors import BlobUnknown, EdgecacheError
from edgecache.proxy.reader import FillReader, SendFile
from edgecache.storage.store import BlobFile
from edgecache.web.ranges import parse_range as parse_range  # re-exported for callers
from edgecache.web.stalls import StallGuard

log = logging.getLogger(__name__)

TLS_CHUNK = 48 * 1024  # peak RSS vs CPU per GB at 64 TLS downloads: see the docstring
SENDFILE_WINDOW = 1 << 20


def _range_headers(headers: dict[str, str], span: tuple[int, int] | None,
                   size: int | None) -> int:
    """Add Content-Range when partial; returns the status."""
    if span is None:
        return 200
    headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{size}"
    return 206


Sent = Callable[[int], None]  # told once, at the end, how many body bytes went out
Opener = Callable[[], BlobFile | None]  # the blob's reader; None when it has gone


class CountedResponse(web.StreamResponse):
    """A blob body that counts the body bytes it really sent, in `body_sent`: aiohttp's own
    count (`body_length`) has the headers in it and none of what `os.sendfile` sends past its
    writer (a 25 MB cache hit was logged as 460 bytes). The access log and the byte metrics
    use this count. Whoever writes the body adds to it, once per piece or sendfile window
    where the loop already is (no wrapper around `write`: nothing more per piece)."""

    body_sent = 0

    @property
    def body_length(self) -> int:
        """What any access logger reads (aiohttp's own `%b` too): the body bytes sent."""
        return self.body_sent


class BlobFileResponse(CountedResponse):
    """A cached blob, whole or one range; `sent` is told the body bytes sent at the end,
    however it ends. `opener` gives the reader (`Stored.open`), called in prepare, which runs
    after the handler has returned: so the file is opened only by what closes it."""

    def __init__(self, opener: Opener, size: int, span: tuple[int, int] | None,
                 headers: dict[str, str], sent: Sent | None = None) -> None:
        super().__init__(status=_range_headers(headers, span, size), headers=headers)
        self._open = opener
        self._offset, end = span if span is not None else (0, size)
        self.content_length = end - self._offset
        self._sent = sent

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost")
        tls = transport.get_extra_info("sslcontext") is not None
        file = self._open()
        if file is None:
            raise BlobUnknown("blob was removed while being served")
        outlet = guard = None
        try:
            outlet = None if tls else _outlet(transport)
            writer = await super().prepare(request)
            guard = StallGuard(request, lambda: self.body_sent)
            count = self.content_length or 0
            if tls:
                # the TLS layer would otherwise queue up to 512 KiB (uvloop) of ciphertext per
                # connection before pausing us: a piece in flight at a time is enough
                transport.set_write_buffer_limits(high=TLS_CHUNK)
                await self._write_chunks(file, count)
            elif outlet is not None:
                await _sendfile(transport, outlet, file, self._offset, count, self, guard)
            else:
                await self._write_chunks(file, count)
            await super().write_eof()
            return writer
        finally:
            if guard is not None:
                guard.close()
            if outlet is not None:
                os.close(outlet)
            file.close()
            if self._sent is not None:
                self._sent(self.body_sent)

    async def _write_chunks(self, file: BlobFile, count: int) -> None:
        loop = asyncio.get_running_loop()
        offset, end = self._offset, self._offset + count
        while offset < end:
            size = min(TLS_CHUNK, end - offset)
            data: bytes | bytearray | memoryview | None = file.read_nowait(size, offset)
            if data is None:
                data = await loop.run_in_executor(None, file.pread, size, offset)
            if not data:
                raise ConnectionResetError("blob file ended early")
            await self.write(data)
            offset += len(data)
            self.body_sent += len(data)

    async def write_eof(self, data: bytes = b"") -> None:
        """Already done in prepare (as aiohttp's FileResponse does)."""


def _outlet(transport: asyncio.BaseTransport) -> int | None:
    """A duplicate of the connection's socket descriptor to send files on (the caller closes
    it); None when the transport has no socket. A duplicate: if the client goes away and the
    transport closes its descriptor meanwhile, the number cannot be reused under us by another
    connection. (TCP_CORK around the headers, as nginx's tcp_nopush, was measured: +3 %
    requests/s at 1 connection, -1 % at 64, 4-10 % more CPU per 1 MiB request: left out.)"""
    sock = transport.get_extra_info("socket")
    return None if sock is None else os.dup(sock.fileno())


async def _sendfile(transport: asyncio.BaseTransport, out: int, file: BlobFile, offset: int,
                    count: int, response: CountedResponse, guard: StallGuard) -> None:
    """Send `count` bytes of `file` from `offset` with its `sendfile` on `out`, an outlet's
    descriptor (`_outlet`), counted in `response.body_sent` as they go. The bytes must follow
    what the transport already holds (the headers), so its buffer is emptied first."""
    loop = asyncio.get_running_loop()
    write_transport: asyncio.WriteTransport = transport  # type: ignore[assignment]
    while write_transport.get_write_buffer_size():
        if transport.is_closing():
            raise ConnectionResetError("connection lost")
        await asyncio.sleep(0)  # uvloop writes what it queued at the end of an iteration
        if write_transport.get_write_buffer_size():
            await _writable(loop, out, guard)  # the socket is full: the transport waits too
    end = offset + count
    while offset < end:
        if transport.is_closing():
            raise ConnectionResetError("connection lost")
        window = min(end - offset, SENDFILE_WINDOW)
        try:
            if file.in_page_cache(offset, window):  # a page-cache copy: cheaper than a thread
                sent = file.sendfile(out, offset, window)
            else:
                sent = await loop.run_in_executor(None, _sendfile_owned, os.dup(out),
                                                  file.duplicate(), offset, window)
        except BlockingIOError:  # the socket's buffer is full: wait for the client
            await _writable(loop, out, guard)
            continue
        if not sent:
            raise ConnectionResetError("blob file ended early")
        offset += sent
        response.body_sent += sent


def _sendfile_owned(out: int, file: BlobFile, offset: int, count: int) -> int:
    """sendfile in a thread, on a socket descriptor and a file the thread owns and closes. If
    the client leaves while the thread is on its way to the syscall, the request closes its
    own; were the thread to use those numbers, a new connection could have been given one of
    them, and it would receive this blob's bytes."""
    try:
        return file.sendfile(out, offset, count)
    finally:
        os.close(out)
        file.close()


async def _writable(loop: asyncio.AbstractEventLoop, fd: int, guard: StallGuard) -> None:
    waiter = guard.waiter = loop.create_future()

    def ready() -> None:
        if not waiter.done():
            waiter.set_result(None)

    loop.add_writer(fd, ready)
    try:
        await waiter
    finally:
        loop.remove_writer(fd)


async def stream_fill(request: web.Request, reader: FillReader, size: int | None,
                      span: tuple[int, int] | None, headers: dict[str, str],
                      sent: Sent | None = None) -> web.StreamResponse:
    """Stream a download in progress. If it fails, the connection is cut before the last byte,
    so the client never mistakes a broken blob for a whole one; that, or a client that left,
    returns the unfinished response, which aiohttp ends as the hang-up it is (the access line
    is written; no error is logged as unexpected). `sent` is told the body bytes
    sent, however it ends. The caller owns `reader` (and closes it, even if the headers
    cannot be sent).

    On plain TCP with a known length, what the download has written (and the fill lets readers
    see) goes out with the download file's `sendfile`, as a cached file does: no copy
    through user space, one call per readable span. 50 clients following one download spent
    most of the loop copying it (pread + write); see NOTES.md for the figures. Under TLS, or
    without a Content-Length (chunked framing must wrap the bytes), it is read in pieces and
    written through the transport."""
    response = CountedResponse(status=_range_headers(headers, span, size), headers=headers)
    start, end = span if span is not None else (0, size)
    if end is not None:
        response.content_length = end - start
    outlet = guard = None
    try:
        writer = await response.prepare(request)
        guard = StallGuard(request, lambda: response.body_sent + reader.written)
        transport = request.transport
        send_file: SendFile | None = None
        if (end is not None and transport is not None and writer is not None
                and transport.get_extra_info("sslcontext") is None):
            outlet = _outlet(transport)
        if outlet is not None:
            async def send_file(file: BlobFile, offset: int, count: int) -> None:
                assert transport is not None and outlet is not None
                assert guard is not None
                await _sendfile(transport, outlet, file, offset, count, response, guard)

        try:
            await reader.copy(start, end, response.write, send_file)
        except EdgecacheError as exc:
            log.warning("cut a client off %s: %s", reader.fill.digest, exc)
            if request.transport is not None:
                request.transport.abort()
            return response  # unfinished, on a closed connection: aiohttp ends it quietly
        await response.write_eof()
        return response
    except ConnectionError:  # the client left (before the headers, or during the body): its
        return response  # response cannot be finished, which aiohttp handles as a hang-up
    finally:
        if guard is not None:
            guard.close()
        if outlet is not None:
            os.close(outlet)
        response.body_sent += reader.written  # what went through `write`; sendfile counted its
        if sent is not None:
            sent(response.body_sent)
