"""The store: the one interface every caller of storage uses, and the one place content
becomes "cached".

```
 look up        blob(d) / manifest(d) -> Stored(size, media type, where) -> open() -> BlobFile
 write          begin(d) -> BlobWriter (hashes as it goes; abort() abandons it)
 publish        publish(writer) / publish_all([(writer | None, Record), ...])
                  verify -> fsync -> rename -> index row + links -> quota accounting
 beside it      touch, link, links, tags (what the index keeps about content)
```

`publish` is the only path from a temporary file to a visible blob, for every writer: the
upstream fill (`proxy/fill.py`), manifests (`proxy/manifests.py`), `edgecache import`, and the
writers still to come (pushes, peers). Each step waits for the one before: nothing unverified
is renamed, no index row names a file that is not in place, a row and its links are one
transaction (private content is never indexed unlinked), and the quota counts only what the
index holds. A writer that reserved room hands the reservation to `publish`, which settles it
whatever the outcome (released, and what was published counted): a reservation is never
counted twice, nor lost. `publish_all` publishes a batch in its order (an import: children
before parents), items without a writer only indexed, and accounts once at the end; a failure
abandons the writers not yet published.

The reader's fast path (`BlobFile.sendfile`) is a capability of the local store: the web layer
asks the reader to send itself, no descriptor or path leaves storage/. This class composes the
local driver (`BlobStore`: files), the index and the quota; a second backend would sit behind
the same methods.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edgecache.errors import StorageError
from edgecache.oci import Digest
from edgecache.storage import pins, referrers
from edgecache.storage.blobs import BlobStore, BlobWriter
from edgecache.storage.files import BlobFile
from edgecache.storage.holdings import Holdings, Page, Part
from edgecache.storage.images import Image
from edgecache.storage.index import Index
from edgecache.storage.localindex import LocalIndex
from edgecache.storage.quota import Quota

__all__ = ["BlobFile", "BlobWriter", "Holdings", "Image", "Page", "Part", "Record", "Store",
           "Stored", "Tag"]


@dataclass(frozen=True, slots=True)
class Stored:
    """Content this store holds: its size, its media type (manifests; None when not asked or
    not a manifest) and where it is, which only `open` reads."""

    digest: Digest
    size: int
    media_type: str | None
    _where: str

    def open(self) -> BlobFile | None:
        """A reader of the bytes; None when they left meanwhile (evicted, removed)."""
        return BlobFile.open(self._where)


@dataclass(frozen=True, slots=True)
class Record:
    """What publishing writes about one digest beside its bytes."""

    digest: Digest
    size: int
    media_type: str | None = None  # manifests
    children: Sequence[str] = ()  # a manifest's references
    upstreams: Iterable[str] = ()  # where it came from: links that scope private content


@dataclass(frozen=True, slots=True)
class Tag:
    """What a tag resolved to (the index's row, its digest parsed where it leaves SQL)."""

    digest: Digest
    checked_at: float


class Store:
    def __init__(self, blobs: BlobStore, index: Index, quota: Quota) -> None:
        self._blobs = blobs
        self._index = index
        self._quota = quota

    # ---- look up and read ---------------------------------------------------------------------

    def blob(self, digest: Digest) -> Stored | None:
        """The blob if its file is here (one stat: what a cache hit costs)."""
        where = self._blobs.name(digest)
        try:
            size = os.stat(where).st_size
        except FileNotFoundError:
            return None
        return Stored(digest, size, None, where)

    def manifest(self, digest: Digest) -> Stored | None:
        """The manifest if the index knows its media type and its file is here."""
        media_type = self.media_type(digest)
        if media_type is None:
            return None
        size = self._blobs.size(digest)
        return None if size is None else Stored(digest, size, media_type,
                                                self._blobs.name(digest))

    def media_type(self, digest: Digest) -> str | None:
        """The media type the index keeps (None: not a manifest we know)."""
        return self._index.media_type(str(digest))

    def read(self, digest: Digest) -> bytes | None:
        """Small content (a manifest) whole; None when it is not here."""
        return self._blobs.read(digest)

    # ---- write and publish --------------------------------------------------------------------

    def begin(self, digest: Digest) -> BlobWriter:
        """A writer for `digest` into a temporary file (StorageError if none can be made)."""
        return self._blobs.writer(digest)

    def begin_upload(self, session: str | None = None) -> BlobWriter:
        """A writer for a push, whose digest is named at its end (`BlobWriter.name`); with a
        `session` id, into a file a later process can resume (`resume_upload`)."""
        return self._blobs.upload(session)

    def resume_upload(self, session: str) -> BlobWriter | None:
        """A session's writer after a restart (hash caught up by `catch_up`); None: gone."""
        return self._blobs.resume(session)

    def room(self) -> int:
        """Bytes the disk can still take above `storage.min_free`, less reservations: a push
        is refused beyond it, and never evicts anything to make room."""
        return self._quota.room()

    async def reserve(self, size: int) -> bool:
        """Room for `size` more bytes (evicting if needed); False when it cannot be made."""
        return await self._quota.reserve(size)

    def release(self, size: int) -> None:
        """Give back a reservation nothing was published against."""
        self._quota.release(size)

    async def publish(self, writer: BlobWriter, media_type: str | None = None,
                      children: Sequence[str] = (), upstreams: Iterable[str] = (),
                      reserved: int = 0) -> None:
        """Make `writer`'s bytes cached content: verify, fsync, rename, index row and links,
        quota. DigestMismatch or StorageError (the file is then removed) when it cannot; the
        reservation is settled either way."""
        record = Record(writer.digest, writer.size, media_type, children, upstreams)
        await self.publish_all([(writer, record)], reserved)

    async def publish_all(self, items: Sequence[tuple[BlobWriter | None, Record]],
                          reserved: int = 0) -> int:
        """Publish `items` in their order (an item without a writer is content already in
        place: only its row and links are written), then account for them once; the bytes
        published. A failure abandons every writer not yet published and settles `reserved`."""
        published = done = 0
        try:
            for writer, record in items:
                if writer is not None:
                    await writer.place()
                    published += record.size
                done += 1
                self._index.record_blob(str(record.digest), record.size, record.media_type,
                                        record.children, upstreams=record.upstreams)
        finally:
            for writer, _ in items[done:]:
                if writer is not None:
                    writer.abort()
            self._quota.release(reserved)
            if published:
                self._quota.added(published)
                self._quota.check()
        return published

    async def put(self, digest: Digest, data: bytes, media_type: str | None = None,
                  children: Sequence[str] = (), upstreams: Iterable[str] = ()) -> None:
        """Publish small content held in memory (a manifest), as `publish` does a stream."""
        writer = self.begin(digest)
        try:
            writer.write(data)
        except OSError as exc:
            writer.abort()
            raise StorageError(f"cannot write {digest}: {exc.strerror or exc}") from exc
        await self.publish(writer, media_type, children, upstreams)

    # ---- what the index keeps beside the content ----------------------------------------------

    def touch(self, digest: Digest) -> None:
        """A use, for eviction's LRU (a manifest's refreshes what it references)."""
        self._index.touch(str(digest))

    def link(self, upstream: str, digest: Digest) -> None:
        """`upstream` has `digest` too: content scoped to it may answer its routes."""
        self._index.link(upstream, str(digest))

    def links(self, digest: Digest) -> set[str]:
        return self._index.links(str(digest))

    def tag(self, upstream: str, repository: str, tag: str) -> Tag | None:
        """The digest the tag last resolved to, and when that was confirmed."""
        record = self._index.tag(upstream, repository, tag)
        return None if record is None else Tag(Digest.parse(record.digest), record.checked_at)

    def set_tag(self, upstream: str, repository: str, tag: str, digest: Digest,
                checked_at: float | None = None) -> None:
        """`checked_at`: when the tag was confirmed, if not now (a peer's answer says)."""
        self._index.set_tag(upstream, repository, tag, str(digest), checked_at)

    def tags(self, upstream: str, repository: str) -> list[str]:
        return self._index.tags(upstream, repository)

    def every_tag(self) -> list[tuple[str, str, str, Digest]]:
        """Every tag row (upstream, repository, tag, digest) by name, held or not (`export`)."""
        return [(row.upstream, row.repository, row.tag, Digest.parse(row.digest))
                for row in self._index.all_tags()]

    def children(self, digest: Digest) -> list[Digest]:
        """What the index records a manifest references, one level down."""
        return [Digest.parse(child) for child in self._index.children(str(digest))]

    def runtime_pins(self) -> tuple[str, ...]:
        """The references pinned at runtime (`edgecache pin`), beside the config's `pins:`."""
        return pins.references(self._index)

    def local_referrers(self, registry: str, subject: Digest) -> list[Digest]:
        """The local registry's manifests whose `subject` is `subject` (pushed referrers)."""
        return [Digest.parse(row.digest)
                for row in LocalIndex(self._index, registry).referrers(str(subject))]

    def referrers(self, upstream: str, repository: str, subject: Digest) -> Tag | None:
        """The stored index that last answered the upstream's referrers of `subject`, and when."""
        record = referrers.answer(self._index, upstream, repository, str(subject))
        return None if record is None else Tag(Digest.parse(record.digest), record.checked_at)

    def set_referrers(self, upstream: str, repository: str, subject: Digest,
                      digest: Digest) -> None:
        referrers.set_answer(self._index, upstream, repository, str(subject), str(digest))
