"""Phase 1 of `edgecache import` (see `importer.py`): the bundle's members into `tmp/`, checked.

Each new blob member is written through a `BlobWriter` and its digest checked as it arrives; it
stays unpublished, its temporary file open, until the importer publishes or discards it. What
the cache already holds is skipped, or only hashed when it is restricted (`_open_to_all`).
`Staging` keeps what the later phases read: staged and present sizes, the bodies of manifests,
`index.json` and `oci-layout`.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import IO, BinaryIO

from edgecache.airgap.imported import ImportReport
from edgecache.airgap.localcontent import routes
from edgecache.airgap.progress import Progress
from edgecache.airgap.reader import BundleReader, read_exactly
from edgecache.airgap.reference import parse_repository
from edgecache.config import Config
from edgecache.errors import BundleInvalid, DigestMismatch, StorageError
from edgecache.oci import Digest, Hashing
from edgecache.storage.blobs import BlobStore, BlobWriter
from edgecache.storage.index import Index
from edgecache.storage.layout import Layout
from edgecache.storage.quota import disk_usage
from edgecache.storage.schema import UNKNOWN_OWNER
from edgecache.units import human

MAX_MEMBERS = 100_000


@dataclass
class _Staged:
    writer: BlobWriter
    size: int


def raise_open_file_limit() -> int:
    """Every staged blob keeps its temporary file open until it is published; let a bundle of
    thousands of blobs stage by raising the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class Staging:
    def __init__(self, config: Config, progress: Progress, *, repository: str | None = None,
                 max_members: int = MAX_MEMBERS) -> None:
        self._config = config
        self._progress = progress
        self._max_members = max_members
        self._layout = Layout(config.storage.path)
        self._blobs = BlobStore(self._layout)
        self._staged: dict[Digest, _Staged] = {}
        self._present: dict[Digest, int] = {}  # already cached: digest -> size
        self._verified: set[Digest] = set()  # cached and restricted: the member's bytes hashed
        private = {n for n, u in config.upstreams.items() if u.access == "authenticated"}
        self._restricted = frozenset(private | {UNKNOWN_OWNER} if private else ())
        self._reading: Index | None = None  # opened when a restricted blob may be skipped
        self._seen: set[str] = set()
        self._layout_json: bytes | None = None
        self._index_json: bytes | None = None
        self._fd_budget = raise_open_file_limit() - 64
        self._repository = (parse_repository(repository, routes(config))
                            if repository else None)
        self.report = ImportReport()

    def _open_to_all(self, digest: Digest, index: Index | None = None) -> bool:
        """Whether every route may already read this cached blob (so a link widens nothing):
        indexed, and linked to no private upstream and no unknown owner."""
        if not self._restricted:
            return True
        if index is None:
            if self._reading is None:
                self._reading = Index(self._layout.index_file)
            index = self._reading
        text = str(digest)
        return index.size(text) is not None and not index.links(text) & self._restricted

    # ---- 1. stage -----------------------------------------------------------------------------

    def _stage(self, source: BinaryIO) -> None:
        disk = disk_usage(str(self._layout.root))
        room = disk.free - self._config.storage.min_free.resolve(disk.total)
        reader = BundleReader(source, self._max_members, self._progress.advance)
        self.report.compressed = reader.compressed
        staged_bytes = 0
        for member, info, data in reader.members():
            self._progress.item_done()
            if member.kind == "dir" or data is None:
                continue
            if member.name in self._seen:
                raise BundleInvalid(f"member {member.name!r} appears twice")
            self._seen.add(member.name)
            if member.kind == "layout":
                self._layout_json = b"".join(read_exactly(data, info.size))
            elif member.kind == "index":
                self._index_json = b"".join(read_exactly(data, info.size))
            elif member.kind == "blob":
                assert member.digest is not None
                if self._blobs.size(member.digest) == info.size:
                    if not self._open_to_all(member.digest):
                        self._check_bytes(member.digest, member.name, info.size, data)
                        self._verified.add(member.digest)
                    self._present[member.digest] = info.size  # not staged
                    continue
                if staged_bytes + info.size > room:
                    raise BundleInvalid(
                        f"the bundle holds more new content than the {human(max(room, 0))} "
                        f"storage.path can take while keeping storage.min_free free")
                self._stage_blob(member.digest, member.name, info.size, data)
                staged_bytes += info.size

    def _stage_blob(self, digest: Digest, name: str, size: int, data: IO[bytes]) -> None:
        if len(self._staged) >= self._fd_budget:
            raise BundleInvalid(f"more than {self._fd_budget} new blobs: over the open-file "
                                "limit (raise `ulimit -n`) or split the bundle")
        writer = self._blobs.writer(digest)
        self._staged[digest] = _Staged(writer, size)  # registered first: abort cleans it
        for chunk in read_exactly(data, size):
            try:
                writer.write(chunk)
            except OSError as exc:
                raise StorageError(f"cannot stage {digest}: {exc.strerror or exc}") from exc
        try:
            writer.verify()
        except DigestMismatch as exc:
            raise BundleInvalid(f"member {name!r}: its bytes do not match its name "
                                f"(they hash to {exc.actual})") from None

    def _check_bytes(self, digest: Digest, name: str, size: int, data: IO[bytes]) -> None:
        hashing = Hashing(digest)
        for chunk in read_exactly(data, size):
            hashing.update(chunk)
        if not hashing.matches():
            raise BundleInvalid(f"member {name!r}: its bytes do not match its name "
                                f"(they hash to {hashing.actual()})")

    def _size(self, digest: Digest) -> int | None:
        staged = self._staged.get(digest)
        return staged.size if staged is not None else self._present.get(digest)

    def _body(self, digest: Digest) -> bytes:
        staged = self._staged.get(digest)
        if staged is not None:
            return staged.writer.pread(staged.size, 0)
        body = self._blobs.read(digest)
        if body is None:
            raise StorageError(f"{digest} left the cache during the import; run it again")
        return body

    def _warn(self, message: str) -> None:
        if message not in self.report.warnings:
            self.report.warnings.append(message)

    def _discard(self) -> None:
        """Remove every staged file not published (all of them after a refusal)."""
        for staged in self._staged.values():
            staged.writer.abort()
        self._staged.clear()
