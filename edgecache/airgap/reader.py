"""Reading a bundle as one forward stream, without trusting it.

A bundle may be many gigabytes and come from a pipe, so it is read once, front to back
(`tarfile` mode `r|`), never extracted and never held in memory. zstd is recognised by its
magic bytes (28 B5 2F FD); anything else is read as a plain tar.

What `tarfile` alone would let through, and what stops it here:
- a pax or GNU long-name header claiming gigabytes (tarfile reads it whole into memory):
  refused above `EXTENDED_HEADER_LIMIT`, from the header, before it is read;
- endless headers: counted, refused past the member limit;
- a stream cut short or a corrupt header mid-way (tarfile takes either for a normal end): the
  archive must end with tar's zero block, checked against the last bytes read;
- numeric fields tarfile takes as they come: a negative size (pax `size=-4096`, or a base-256
  header field) moves tarfile's offset backwards and reaches `read()` as a negative length; a
  size past `MAX_MEMBER_SIZE`, a non-finite or absurd pax `mtime`, GNU sparse maps (which
  tarfile parses with bare `int()` and tuple unpacking). Each is checked where tarfile sets it:
  in the raw header (`frombuf`) and again once a pax header has replaced it
  (`_apply_pax_info`), before tarfile computes where the next header starts.
"""

from __future__ import annotations

import collections
import io
import math
import tarfile
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO, cast

import zstandard

from edgecache.airgap.bundle import ZSTD_MAGIC, Member, classify
from edgecache.errors import BundleInvalid

BUFSIZE = 1 << 20
# tarfile's stream buffer: it copies what is left of it on every header read, so small
TAR_BUFSIZE = 1 << 16
EXTENDED_HEADER_LIMIT = 1 << 20
MAX_MEMBER_SIZE = 1 << 44  # 16 TiB: no blob is larger; past it a size is an attack
MAX_MTIME = 1 << 40  # seconds; datetime and os.utime refuse far less than tarfile accepts
BLOCK = tarfile.BLOCKSIZE
_EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
             tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
# what a broken stream raises: tar's own errors, zstd's, and a chain of extended headers
# deep enough to exhaust tarfile's recursion
_STREAM_ERRORS = (tarfile.TarError, zstandard.ZstdError, EOFError, RecursionError)


class _Source(io.RawIOBase):
    """The input file, with the bytes already peeked put back in front, and a byte count for
    progress."""

    def __init__(self, raw: BinaryIO, prefix: bytes, counted: Callable[[int], None]) -> None:
        self._raw = raw
        self._prefix = prefix
        self._counted = counted

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._raw.read(len(view))
        view[: len(data)] = data
        self._counted(len(data))
        return len(data)


class _Tail:
    """The decompressed tar stream, remembering how far it got and its last chunks (not
    copied: kept by reference), so the end of the archive can be checked after tarfile has
    stopped."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.position = 0
        self._chunks: collections.deque[tuple[int, bytes]] = collections.deque()
        self._kept = 0
        self._keep = 4 * TAR_BUFSIZE + 2 * BLOCK

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if data:
            self._chunks.append((self.position, data))
            self._kept += len(data)
            self.position += len(data)
            while self._kept - len(self._chunks[0][1]) >= self._keep:
                self._kept -= len(self._chunks.popleft()[1])
        return data

    def block_at(self, offset: int) -> bytes:
        """The BLOCK bytes from `offset`, if still remembered (fewer at the end of data)."""
        pieces = [data[max(0, offset - start): offset + BLOCK - start]
                  for start, data in self._chunks
                  if start < offset + BLOCK and start + len(data) > offset]
        if not self._chunks or self._chunks[0][0] > offset:
            return b""
        return b"".join(pieces)


def _guarded_tarinfo(max_headers: int) -> type[tarfile.TarInfo]:
    """A TarInfo that checks each raw header as tarfile parses it (extended headers included,
    which never reach the member loop)."""
    count = 0

    class Guarded(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Guarded:
            nonlocal count
            info = super().frombuf(buf, encoding, errors)
            count += 1
            if count > max_headers:
                raise BundleInvalid(f"more than {max_headers} tar headers: refused")
            if info.type in _EXTENDED and info.size > EXTENDED_HEADER_LIMIT:
                raise BundleInvalid(f"an extended tar header of {info.size} bytes: refused")
            if info.type == tarfile.GNUTYPE_SPARSE:
                raise BundleInvalid(f"member {info.name[:120]!r} is a sparse file: refused")
            _check_numbers(info)
            return info

        def _apply_pax_info(self, pax_headers: dict[str, str], encoding: str,
                            errors: str) -> None:
            if any(key.startswith("GNU.sparse.") for key in pax_headers):
                raise BundleInvalid(f"member {self.name[:120]!r} is a sparse file: refused")
            super()._apply_pax_info(pax_headers, encoding, errors)  # type: ignore[misc]
            _check_numbers(self)

        # pax sparse maps are parsed before the fields are applied: refuse them first
        def _proc_gnusparse_00(self, *args: object) -> None:
            raise BundleInvalid(f"member {self.name[:120]!r} is a sparse file: refused")

        _proc_gnusparse_01 = _proc_gnusparse_10 = _proc_gnusparse_00

    return Guarded


def _check_numbers(info: tarfile.TarInfo) -> None:
    name = info.name[:120]
    if not 0 <= info.size <= MAX_MEMBER_SIZE:
        raise BundleInvalid(f"member {name!r} claims a size of {info.size} bytes: refused")
    mtime = info.mtime
    if not isinstance(mtime, int | float) or not (math.isfinite(mtime)
                                                   and abs(mtime) <= MAX_MTIME):
        raise BundleInvalid(f"member {name!r} has an invalid mtime: refused")


class BundleReader:
    """Iterate over (member, data) once; `data` is None for directories and must be read
    (or not) before asking for the next member."""

    def __init__(self, raw: BinaryIO, max_members: int,
                 counted: Callable[[int], None] = lambda n: None) -> None:
        magic = raw.read(len(ZSTD_MAGIC))
        counted(len(magic))
        self.compressed = magic == ZSTD_MAGIC
        source: IO[bytes] = io.BufferedReader(_Source(raw, magic, counted), BUFSIZE)
        if self.compressed:
            source = zstandard.ZstdDecompressor().stream_reader(
                source, read_size=BUFSIZE, read_across_frames=True)
        self._tail = _Tail(source)
        self._max_members = max_members

    def members(self) -> Iterator[tuple[Member, tarfile.TarInfo, IO[bytes] | None]]:
        count = 0
        try:
            with tarfile.open(fileobj=cast(IO[bytes], self._tail), mode="r|", bufsize=TAR_BUFSIZE,
                              tarinfo=_guarded_tarinfo(3 * self._max_members + 16)) as tar:
                while (info := tar.next()) is not None:
                    count += 1
                    if count > self._max_members:
                        raise BundleInvalid(f"more than {self._max_members} members: refused")
                    member = classify(info)
                    yield member, info, tar.extractfile(info) if member.kind != "dir" else None
                end = tar.offset
        except _STREAM_ERRORS as exc:
            if count == 0 and not self.compressed and isinstance(exc, tarfile.ReadError):
                raise BundleInvalid("not a tar archive (plain, or compressed with zstd)") \
                    from None
            raise BundleInvalid(f"the archive is truncated or corrupt: {exc}") from None
        block = self._tail.block_at(end)
        if len(block) != BLOCK or block.count(0) != BLOCK:
            raise BundleInvalid("the archive is truncated or corrupt: no end-of-archive "
                                f"marker after {end} bytes")


def read_exactly(data: IO[bytes], size: int, chunk: int = BUFSIZE) -> Iterator[bytes]:
    """A member's bytes in chunks; a short member means the archive was cut."""
    remaining = size
    while remaining:
        try:
            piece = data.read(min(chunk, remaining))
        except _STREAM_ERRORS as exc:
            raise BundleInvalid(f"the archive is truncated or corrupt: {exc}") from None
        if not piece:
            raise BundleInvalid("the archive is truncated: a member ends early")
        remaining -= len(piece)
        yield piece
