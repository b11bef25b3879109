"""An open stored file, read-only: what a reader of the local store holds.

A `BlobFile` is the local store's reader: a published blob (`Stored.open`) or a write in
progress (`BlobWriter.reader`, a duplicate of the writer's descriptor that follows the growing
file and keeps reading after the rename). Its descriptor never leaves storage/: the web layer
asks the file to `sendfile` itself onto a socket (the fast path: zero copy from the page cache),
to say whether a span is in the page cache (`in_page_cache`, so the loop never waits on the
disk), or to read (`read_nowait` on the loop, `pread` in the executor). Each is one syscall,
as before the seam: nothing is added per window or piece. A backend without local files would
offer readers without these, and the web layer would copy through user space.
"""

from __future__ import annotations

import errno
import os
from types import TracebackType

_nowait_reads = hasattr(os, "preadv") and hasattr(os, "RWF_NOWAIT")  # cleared if refused


class BlobFile:
    """An open descriptor on stored bytes; a context manager, closed once (`close` twice is
    harmless). Whoever holds it closes it: a descriptor closed under a thread could be reused
    by another file or socket, so a thread gets its own `duplicate`."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def open(cls, path: str) -> BlobFile | None:
        """The file at `path`, None when it is not there (evicted, removed). os.open: a
        buffered file object would cost an isatty() and an fstat per request."""
        try:
            return cls(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except FileNotFoundError:
            return None

    def __enter__(self) -> BlobFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def duplicate(self) -> BlobFile:
        """The same file on a descriptor of its own (for a thread, which closes it)."""
        return BlobFile(os.dup(self._fd))

    def pread(self, size: int, offset: int) -> bytes:
        """Up to `size` bytes at `offset` (may wait on the disk: off the loop, or small)."""
        return os.pread(self._fd, size, offset)

    def read_nowait(self, size: int, offset: int) -> bytearray | memoryview | None:
        """Up to `size` bytes at `offset` if the page cache has them (never waits on the
        disk), else None."""
        global _nowait_reads
        if not _nowait_reads:
            return None
        buf = bytearray(size)
        try:
            got = os.preadv(self._fd, [buf], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            _nowait_reads = False  # this kernel or filesystem cannot: the executor it is
            return None
        if got <= 0:
            return None
        return buf if got == size else memoryview(buf)[:got]

    def in_page_cache(self, offset: int, count: int) -> bool:
        """Whether the first and last byte of the span are in the page cache (readahead makes
        the middle very likely to be): then sending it cannot wait on the disk."""
        if not _nowait_reads:
            return False
        probe = bytearray(1)
        try:
            return all(os.preadv(self._fd, [probe], at, os.RWF_NOWAIT) == 1
                       for at in (offset, offset + count - 1))
        except OSError:
            return False

    def sendfile(self, out: int, offset: int, count: int) -> int:
        """os.sendfile of [offset, offset + count) onto the socket descriptor `out`; the bytes
        sent (BlockingIOError when the socket's buffer is full)."""
        return os.sendfile(out, self._fd, offset, count)
