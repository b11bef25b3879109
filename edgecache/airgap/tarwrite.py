"""Writing a bundle file: tar members with fixed metadata (the same images give the same
bytes), blobs re-hashed as they are read, and the output renamed into place only when whole.
"""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from edgecache.airgap.progress import Progress
from edgecache.errors import StorageError
from edgecache.oci import Digest, Hashing
from edgecache.storage.store import BlobFile


class Counting(io.RawIOBase):
    """The output, counting what the compressor wrote to it."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = self._out.write(data)
        self.count += len(data)
        return n if n is not None else len(data)

    def flush(self) -> None:
        self._out.flush()


class Verifying:
    """A blob file read for the tar, hashed on the way, progress counted."""

    def __init__(self, handle: BlobFile, digest: Digest, progress: Progress) -> None:
        self._handle = handle
        self._offset = 0
        self._digest = digest
        self._hashing = Hashing(digest)
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        """`tarfile` reads a member's `size` bytes in pieces; -1 (never asked) reads a MiB."""
        data = self._handle.pread(size if size >= 0 else 1 << 20, self._offset)
        self._offset += len(data)
        self._hashing.update(data)
        self._progress.advance(len(data))
        return data

    def check(self) -> None:
        self._hashing.check()


def member_info(name: str, size: int, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if directory else 0o644
    if directory:
        info.type = tarfile.DIRTYPE
    return info


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(member_info(name, len(data)), io.BytesIO(data))


def add_dir(tar: tarfile.TarFile, name: str) -> None:
    tar.addfile(member_info(name, 0, directory=True))


def write_atomically(path: Path, produce: Callable[[BinaryIO], None]) -> None:
    """Call `produce(file)` on a temporary file beside `path`, then fsync and rename it: the
    output name only ever holds a whole bundle."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        handle = open(tmp, "xb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise StorageError(f"--output {path}: {exc.strerror or exc}") from exc
    try:
        with handle:
            produce(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
