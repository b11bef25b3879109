"""An image as every reader of the store names it (the status page, the catalog's neighbours,
`ls`, `du`, `verify --repair`): a tag, its closure, its size, whether it is pinned or local.
One definition, in SQL on the index's connection, so the page and the commands cannot disagree.

- Closure: the tag's manifest, what it references and one level further down (index ->
  platform manifests -> configs and layers), each digest once; a layer shared by two images
  counts in each.
- Size: the bytes of the closure the store holds; with `restricted` owners (private upstreams,
  the status page's claim rule, `proxy/claims.py`), a digest linked to one of them counts only
  when it is linked to the image's upstream too. The commands pass none: an operator sees all.
- Pinned: its manifest is in what eviction protects: the closure of the config's `pins:` and the
  runtime pins (`storage/eviction.py` `pinned_digests`), or local content (never evicted).
- Local: its upstream is the local registry's name (`local.registry`, issue 17).

How much is read is the caller's: the page builds rows for its page alone (`row`, a few index
seeks each), the commands read every tag (`every`) in a process of their own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from edgecache.errors import StorageError
from edgecache.storage.eviction import pinned_digests
from edgecache.storage.index import Index
from edgecache.storage.localindex import local_digests


@dataclass(frozen=True, slots=True)
class Image:
    upstream: str
    repository: str
    tag: str
    digest: str
    media_type: str | None  # None: the tag outlived its manifest (evicted)
    size: int  # bytes held of its closure
    last_use: float | None  # its manifest's last access, as last flushed (Unix time)
    pinned: bool
    local: bool

    @property
    def name(self) -> str:
        return f"{self.upstream}/{self.repository}:{self.tag}"


def closure_sql(roots: str) -> str:
    """The digests an image's closure holds, for the root digests the subquery `roots` names."""
    return (f"{roots} UNION SELECT child FROM refs WHERE parent IN ({roots})"
            " UNION SELECT r2.child FROM refs r1 JOIN refs r2 ON r2.parent=r1.child"
            f" WHERE r1.parent IN ({roots})")


def size_sql(restricted: Collection[str] = ()) -> str:
    """The bytes held of tag row `t`'s closure, as an SQL expression (the owners are
    configuration names, quoted as SQL literals)."""
    claim = ""
    if restricted:
        names = ",".join("'" + name.replace("'", "''") + "'" for name in sorted(restricted))
        claim = (" AND (EXISTS (SELECT 1 FROM links l WHERE l.digest=b.digest"
                 " AND l.upstream=t.upstream) OR NOT EXISTS (SELECT 1 FROM links l"
                 f" WHERE l.digest=b.digest AND l.upstream IN ({names})))")
    return ("(SELECT COALESCE(SUM(b.size), 0) FROM blobs b WHERE b.digest IN ("
            f"{closure_sql('SELECT t.digest')}){claim})")


@contextmanager
def reading() -> Iterator[None]:
    """A read of the index as one StorageError (locked past the timeout, damaged)."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"cannot read the index: {exc}") from exc


class Images:
    def __init__(self, index: Index, pins: Iterable[str] = (), local: str | None = None,
                 restricted: Collection[str] = ()) -> None:
        self._index = index
        self._db = index.sql
        self._pins = tuple(pins)
        self.local = local
        self.size = size_sql(restricted)

    def protected(self) -> set[str]:
        """What eviction protects (the pins' closures, local content): read once per page or
        command, since a runtime pin may come or go between two."""
        out = pinned_digests(self._index, self._pins)
        return out | local_digests(self._index, self.local) if self.local else out

    def row(self, tag_row: tuple[str, str, str, str], protected: set[str]) -> Image:
        """One image from its `tags` row (upstream, repository, tag, digest), looked up alone."""
        upstream, repository, tag, digest = tag_row
        held = self._db.execute("SELECT media_type, last_access FROM blobs WHERE digest=?",
                                (digest,)).fetchone()
        size = self._db.execute(f"SELECT {self.size} FROM (SELECT ? AS digest, ? AS upstream) t",
                                (digest, upstream)).fetchone()[0]
        return self._image(upstream, repository, tag, digest, held[0] if held else None,
                           int(size), float(held[1]) if held else None, protected)

    def every(self) -> list[Image]:
        """Every tag whose manifest is held, by name (a tag row outlives an evicted manifest)."""
        with reading():
            protected = self.protected()
            rows = self._db.execute(
                f"SELECT t.upstream, t.repository, t.tag, t.digest, b.media_type, {self.size},"
                " b.last_access FROM tags t JOIN blobs b ON b.digest=t.digest"
                " ORDER BY 1, 2, 3").fetchall()
        return [self._image(u, r, t, d, m, int(s), float(a), protected)
                for u, r, t, d, m, s, a in rows]

    def held_bytes(self, roots: str, args: tuple[object, ...] = ()) -> int:
        """The bytes held of the closures of the digests the subquery `roots` names."""
        with reading():
            return int(self._db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM blobs WHERE digest IN"
                f" ({closure_sql(roots)})", (*args, *args, *args)).fetchone()[0])

    def using(self, digests: Iterable[str], among: list[Image]) -> list[Image]:
        """Of `among` (images read before a repair), those whose closure holds any of `digests`
        or whose manifest has gone since (a repair forgets the manifests above a corrupt blob):
        what removing `digests` breaks."""
        wanted = sorted(set(digests))
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        with reading():
            hit = set(self._db.execute(
                "SELECT t.upstream, t.repository, t.tag FROM tags t WHERE NOT EXISTS"
                " (SELECT 1 FROM blobs WHERE digest=t.digest) OR EXISTS (SELECT 1 FROM"
                f" ({closure_sql('SELECT t.digest')}) c WHERE c.digest IN ({marks}))", wanted))
        return [image for image in among if (image.upstream, image.repository, image.tag) in hit]

    def _image(self, upstream: str, repository: str, tag: str, digest: str,
               media_type: str | None, size: int, last_use: float | None,
               protected: set[str]) -> Image:
        return Image(upstream, repository, tag, digest, media_type, size, last_use,
                     digest in protected or upstream == self.local, upstream == self.local)
