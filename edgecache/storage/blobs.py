"""Content-addressed blob files (the local store's driver): written once, verified, then
placed by an atomic rename. `storage/store.py` is the one caller that places a file (its
`publish`); everything else reads, or writes temporary files.

A blob becomes visible under its digest only after every byte was hashed and matched, the file
was fsynced and renamed into place, and the directory entry was fsynced: a crash at any point
leaves at worst a `.part` file in `tmp/`, which the next start sweeps away (a push session's
stays while the session lives: `storage/uploadindex.py`; it is still published only by a PUT
whose digest the whole file matches).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecache.errors import DigestMismatch, StorageError
from edgecache.oci import Digest
from edgecache.storage.files import BlobFile
from edgecache.storage.layout import Layout

log = logging.getLogger(__name__)
UNNAMED = Digest("sha256", "0" * 64)  # an upload's digest until it is named: matches no bytes
CATCH_UP_PIECE = 1 << 20  # re-hashing a resumed upload reads this much at a time, into one buffer


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobWriter:
    """One blob being written to a temporary file, hashed as it goes; `abort` abandons it.

    The descriptor is readable too (O_RDWR): `reader()` hands out duplicates of it, so readers
    of a download in progress follow the growing file and keep reading after the rename.
    """

    def __init__(self, layout: Layout, digest: Digest, path: Path | None = None,
                 resume: bool = False) -> None:
        """`path`: a push session's file (`Layout.upload`); `resume`: open it as a previous
        process left it, its bytes not hashed until `catch_up`."""
        self.digest = digest
        self._layout = layout
        self._target = layout.blob(digest)
        self._path = path or layout.tmp_dir / f"{digest.hex[:16]}-{uuid.uuid4().hex}.part"
        flags = os.O_RDWR | os.O_CLOEXEC | (0 if resume else os.O_CREAT | os.O_EXCL)
        self._fd = os.open(self._path, flags, 0o644)
        self.size = os.lseek(self._fd, 0, os.SEEK_END) if resume else 0
        self.behind = self.size  # bytes in the file the hash has not seen (`catch_up`)
        self._hasher: Any = digest.hasher()
        self._closed = False

    def write(self, data: bytes) -> None:
        """Append to the file; page-cache writes are fast enough to stay on the event loop.
        Hash and size follow each write call, so a short write then an error (ENOSPC) leaves
        them in step with the file. A writer abandoned meanwhile (a DELETE while a PATCH
        waits for its body) writes nothing: its descriptor number may be another file's now."""
        if self._closed or self.behind:
            raise OSError(errno.EBADF, "the upload was abandoned or is not caught up")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self._hasher.update(view[:written])
            self.size += written
            view = view[written:]

    def catch_up(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Hash the bytes a previous process wrote (hashlib's state cannot be saved): blocking,
        for a thread; one buffer of CATCH_UP_PIECE, so memory stays flat whatever the size."""
        buffer = memoryview(bytearray(CATCH_UP_PIECE))
        while self.behind:
            if stopping():
                raise StorageError("stopped while re-reading an upload")
            offset = self.size - self.behind
            got = os.preadv(self._fd, [buffer[:min(self.behind, CATCH_UP_PIECE)]], offset)
            if not got:
                raise StorageError(f"the upload's file ends at {offset} bytes, not {self.size}")
            self._hasher.update(buffer[:got])
            self.behind -= got

    def name(self, digest: Digest) -> None:
        """An upload learns its digest only at its end: name it before `place` (which then
        checks the bytes against it). A writer begun unnamed (`BlobStore.upload`) can never be
        placed before this: its placeholder digest matches no content."""
        if digest.algorithm != self.digest.algorithm:
            raise DigestMismatch(str(digest), f"{self.digest.algorithm} (what uploads hash)")
        self.digest = digest
        self._target = self._layout.blob(digest)

    def verify(self) -> None:
        """Raise DigestMismatch if the bytes written so far do not match, keeping the file: an
        import checks each blob as it arrives but publishes only once the whole bundle passed."""
        actual = f"{self.digest.algorithm}:{self._hasher.copy().hexdigest()}"
        if actual != str(self.digest):
            raise DigestMismatch(str(self.digest), actual)

    def reader(self) -> BlobFile:
        """A reader of what is written, on its own descriptor: synchronous, so a caller on the
        loop has it before any await (the writer's own is closed on the loop once placed)."""
        return BlobFile(os.dup(self._fd))

    def pread(self, size: int, offset: int) -> bytes:
        """Bytes written so far (an import reads a staged manifest back to check it)."""
        return os.pread(self._fd, size, offset)

    async def place(self) -> None:
        """Verify, fsync and rename into place; on a mismatch or a failure remove the file and
        raise. Only `Store.publish` calls this: the index rows and the quota follow there."""
        actual = f"{self.digest.algorithm}:{self._hasher.hexdigest()}"
        if actual != str(self.digest) or self.behind:
            self.abort()
            raise DigestMismatch(str(self.digest), actual)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._publish)
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot store {self.digest}: {exc.strerror or exc}") from exc
        # Closed here, on the loop, not in the executor: while the fsync runs, new readers of
        # the fill still duplicate this descriptor (`reader`), and a number closed under them
        # (or already reused by another file or socket) would hand them other bytes.
        self._close()

    def _publish(self) -> None:
        os.fsync(self._fd)
        self._target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self._path, self._target)
        _fsync_dir(self._target.parent)

    def abort(self) -> None:
        """Forget everything written; safe to call twice and once placed."""
        if self._closed:
            return
        self._close()
        self._path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the descriptor and keep the file: a push session that outlives this process."""
        self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)


class BlobStore:
    """The content-addressed file tree. Holds no state beyond its layout."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def prepare(self, sweep: bool = True, keep: frozenset[str] = frozenset()) -> None:
        """Create the tree and sweep downloads a previous process left half-written, but for
        the names in `keep` (live push sessions' files: `uploadindex.survivors`)."""
        for directory in (self.layout.blobs_dir, self.layout.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if not sweep:
            return
        swept = 0
        for leftover in self.layout.tmp_dir.iterdir():
            if leftover.name in keep:
                continue
            leftover.unlink(missing_ok=True)
            swept += 1
        if swept:
            log.info("swept %d unfinished download(s) from %s", swept, self.layout.tmp_dir)

    def path(self, digest: Digest) -> Path:
        return self.layout.blob(digest)

    def name(self, digest: Digest) -> str:
        """Where the blob's file is (or would be)."""
        return self.layout.blob_name(digest)

    def size(self, digest: Digest) -> int | None:
        """The stored size, or None when the blob is not here."""
        try:
            return os.stat(self.layout.blob_name(digest)).st_size
        except FileNotFoundError:
            return None

    def read(self, digest: Digest) -> bytes | None:
        try:
            return self.layout.blob(digest).read_bytes()
        except FileNotFoundError:
            return None

    def remove(self, digest: Digest) -> None:
        """Unlink a published blob. A reader that has it open keeps reading the old inode."""
        self.layout.blob(digest).unlink(missing_ok=True)

    def upload(self, session: str | None = None) -> BlobWriter:
        """A writer whose digest is named at the end (`BlobWriter.name`): a push; with a
        `session`, into that session's file (kept across restarts while its row lives)."""
        return self.writer(UNNAMED, None if session is None else self.layout.upload(session))

    def resume(self, session: str) -> BlobWriter | None:
        """The writer of a session's file a previous process left; None when it is gone."""
        try:
            return BlobWriter(self.layout, UNNAMED, self.layout.upload(session), resume=True)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot reopen an upload: {exc.strerror or exc}") from exc

    def writer(self, digest: Digest, path: Path | None = None,
               resume: bool = False) -> BlobWriter:
        try:
            return BlobWriter(self.layout, digest, path, resume)
        except OSError as exc:
            raise StorageError(f"cannot create a temporary file: {exc.strerror or exc}") from exc
