"""One client's view of a download in progress (`proxy/fill.py` has the how and why).

A `FillReader` reads the download's file through a reader of its own (`BlobWriter.reader`: a
`BlobFile` on a duplicate descriptor), so it follows the growing file from any offset and keeps
reading after the file is renamed into place; it waits on its `Fill` for news (bounded:
`Fill.stall_timeout`), and when the fill steps aside (`Bypass`) continues from upstream itself.
It is a context manager: whoever holds it closes it. Readable spans go to `copy`'s `send_file`
as (file, offset, count): the file sends itself (`BlobFile.sendfile`), no descriptor leaves
storage/.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING

from edgecache.errors import StorageError
from edgecache.oci import Hashing
from edgecache.proxy.download import Download
from edgecache.storage.store import BlobFile

if TYPE_CHECKING:
    from edgecache.proxy.fill import Fill

READ_CHUNK = 256 * 1024

Write = Callable[[bytes], Awaitable[None]]
SendFile = Callable[[BlobFile, int, int], Awaitable[None]]  # file, offset, count: send them


class Bypass(Exception):
    """Signal from a fill to its readers: continue from upstream directly, nothing will be
    cached."""


class FillReader:
    """One client's view of a fill: a context manager that closes its file (also closed
    when `copy` ends). `written` counts the bytes it handed to `write`, whatever the outcome
    (what it passed to `send_file`, the sender counts)."""

    def __init__(self, fill: Fill, file: BlobFile) -> None:
        self.fill = fill
        self._file: BlobFile | None = file
        self.written = 0

    def __enter__(self) -> FillReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def _limit(self, pos: int, end: int | None) -> int:
        """How far from `pos` the file may be read now (waiting for at least one byte), or `pos`
        when a read to the end has reached it. Raises the fill's error, or `Bypass`."""
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
            except Bypass:
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
        assert self._file is not None
        while pos < limit:
            data = self._file.pread(min(READ_CHUNK, limit - pos), pos)
            if not data:
                raise StorageError("download file shrank under a reader")
            pos += len(data)
            yield data

    async def copy(self, start: int, end: int | None, write: Write,
                   send_file: SendFile | None = None) -> None:
        """Bytes [start, end) as they become readable, each readable span at once: through
        `send_file(file, offset, count)` when given (zero copy from the file), else read and
        passed to `write` (counted in `written`). A reader that must continue from upstream goes
        through `write`. Closes the file."""
        try:
            async with aclosing(self._spans(start, end)) as spans:
                async for span in spans:
                    if isinstance(span, bytes) or send_file is None:
                        for data in [span] if isinstance(span, bytes) else self._pieces(*span):
                            await write(data)
                            self.written += len(data)
                    else:
                        assert self._file is not None
                        await send_file(self._file, span[0], span[1] - span[0])
        finally:
            self.close()

    async def _direct(self, start: int, pos: int, end: int | None) -> AsyncGenerator[bytes, None]:
        """Continue from upstream at `pos`. A reader of the whole blob re-hashes what it already
        sent (still readable through its file) and checks the digest before the end."""
        fill = self.fill
        hasher: Hashing | None = None
        if start == 0 and end in (None, fill.size):
            hasher = Hashing(fill.digest)
            offset = 0
            while offset < pos and self._file is not None:
                data = self._file.pread(min(1 << 20, pos - offset), offset)
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

    def _check(self, hasher: Hashing) -> None:
        if not hasher.matches():
            self.fill.metrics.digest_mismatches.labels(self.fill.upstream).inc()
            hasher.check()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self.fill.reader_left()
