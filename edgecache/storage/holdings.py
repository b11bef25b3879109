"""What the store holds, as an operator asks about it: images by tag, one image's parts, and
the repositories (`/v2/_catalog`). Queries beside `index.py`, on its connection.

Every answer is one page: a bounded `LIMIT`, searched and sorted in SQL, so a store of a
million tags costs a page's rows in memory, never the table. Sorting by name or last pull
walks an index; sorting by size computes each tag's closure size in SQLite (CPU, not memory).
The caller says which upstreams may be listed (`visible`): private content is filtered here,
in the query, never after a page was cut (a page never comes back short of what it could show).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from edgecache.errors import EdgecacheError
from edgecache.oci import ImageReference, official_repository
from edgecache.storage.index import Index

MAX_PAGE = 200
CATALOG_MAX = 1000
# the bytes held for a tag: its manifest, what that references, and one level further down
# (index -> platform manifests -> configs and layers), each digest counted once
_SIZE = ("(SELECT COALESCE(SUM(b.size), 0) FROM blobs b WHERE b.digest IN ("
         "SELECT t.digest UNION SELECT child FROM refs WHERE parent=t.digest"
         " UNION SELECT r2.child FROM refs r1 JOIN refs r2 ON r2.parent=r1.child"
         " WHERE r1.parent=t.digest))")
_SORTS = {
    "name": "t.upstream {0}, t.repository {0}, t.tag {0}",
    "size": "size {0}, t.upstream, t.repository, t.tag",
    "pulled": "pulled {0}, t.upstream, t.repository, t.tag",
}
SORTS = tuple(_SORTS)


@dataclass(frozen=True, slots=True)
class ImageRow:
    upstream: str
    repository: str
    tag: str
    digest: str
    media_type: str | None  # None: the manifest is no longer held (evicted)
    size: int  # bytes held of it
    last_pulled: float | None
    pinned: bool
    local: bool


@dataclass(frozen=True, slots=True)
class Part:
    """One thing an image references: a manifest, config or layer, held or not."""

    digest: str
    size: int | None
    media_type: str | None
    held: bool


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[ImageRow]
    offset: int
    more: bool


class Holdings:
    def __init__(self, index: Index, pins: Iterable[str] = (), local: str | None = None) -> None:
        self._db = index.sql
        self._local = local
        self._pins = [ref for ref in map(_reference, pins) if ref is not None]

    def images(self, visible: Collection[str], search: str = "", sort: str = "name",
               descending: bool = False, offset: int = 0, limit: int = 50) -> Page:
        """One page of tags of the `visible` upstreams whose name contains `search`."""
        if not visible:
            return Page([], offset, False)
        limit, offset = max(1, min(limit, MAX_PAGE)), max(0, offset)
        order = _SORTS.get(sort, _SORTS["name"]).format("DESC" if descending else "ASC")
        marks = ",".join("?" * len(visible))
        where = f"t.upstream IN ({marks})"
        args: list[object] = list(visible)
        if search:
            where += " AND (t.upstream || '/' || t.repository || ':' || t.tag) LIKE ? ESCAPE '\\'"
            args.append("%" + search.replace("\\", "\\\\").replace("%", "\\%")
                        .replace("_", "\\_") + "%")
        rows = self._db.execute(
            f"SELECT t.upstream, t.repository, t.tag, t.digest, m.media_type, {_SIZE} AS size,"
            " m.last_access AS pulled FROM tags t LEFT JOIN blobs m ON m.digest=t.digest"
            f" WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
            (*args, limit + 1, offset)).fetchall()
        pins = self._all_pins()
        return Page([self._row(row, pins) for row in rows[:limit]], offset, len(rows) > limit)

    def image(self, upstream: str, repository: str, tag: str) -> ImageRow | None:
        row = self._db.execute(
            f"SELECT t.upstream, t.repository, t.tag, t.digest, m.media_type, {_SIZE},"
            " m.last_access FROM tags t LEFT JOIN blobs m ON m.digest=t.digest"
            " WHERE t.upstream=? AND t.repository=? AND t.tag=?",
            (upstream, repository, tag)).fetchone()
        return None if row is None else self._row(row, self._all_pins())

    def parts(self, digests: Iterable[str], media_types: dict[str, str]) -> list[Part]:
        """What the index knows of each digest (a layer's media type comes from its manifest:
        `media_types`, the index keeps only manifests')."""
        out = []
        for digest in dict.fromkeys(digests):
            row = self._db.execute("SELECT size, media_type FROM blobs WHERE digest=?",
                                   (digest,)).fetchone()
            media_type = media_types.get(digest) or (row[1] if row else None)
            out.append(Part(digest, row[0] if row else None, media_type, row is not None))
        return out

    def referrers(self, digest: str) -> list[tuple[str, str | None]]:
        """(digest, artifact type) of held manifests whose `subject` is `digest`: the
        `subjects` table pushes fill (issue 17); none before it exists."""
        try:
            return [(row[0], row[1]) for row in self._db.execute(
                "SELECT digest, artifact_type FROM subjects WHERE subject=? ORDER BY digest"
                " LIMIT ?", (digest, MAX_PAGE))]
        except sqlite3.OperationalError:  # no such table (yet): nothing pushed refers
            return []

    def repositories(self, upstreams: Collection[str], last: str | None, n: int,
                     prefixed: bool) -> tuple[list[str], bool]:
        """A catalog page in byte order: the repositories with a tag on `upstreams`, each named
        `upstream/repository` when `prefixed`; those after `last`, at most `n`; and whether
        more remain. One index seek per upstream (`tags` is keyed by upstream, repository)."""
        n = max(0, min(n, CATALOG_MAX))
        found: list[str] = []
        for upstream in upstreams:
            head = f"{upstream}/" if prefixed else ""
            after = _after(head, last)
            if after is None:
                continue
            found += [head + row[0] for row in self._db.execute(
                "SELECT DISTINCT repository FROM tags WHERE upstream=? AND repository>?"
                " ORDER BY repository LIMIT ?", (upstream, after, n + 1))]
        found.sort()
        return found[:n], len(found) > n

    def _row(self, row: tuple[object, ...], pins: list[ImageReference]) -> ImageRow:
        upstream, repository, tag, digest, media_type, size, pulled = row
        assert isinstance(upstream, str) and isinstance(repository, str)
        assert isinstance(tag, str) and isinstance(digest, str)
        return ImageRow(upstream, repository, tag, digest,
                        media_type if isinstance(media_type, str) else None,
                        int(size) if isinstance(size, int) else 0,
                        float(pulled) if isinstance(pulled, int | float) else None,
                        _pinned(pins, upstream, repository, tag, digest),
                        upstream == self._local)

    def _all_pins(self) -> list[ImageReference]:
        """The config's pins and those added at runtime (the `pins` table of issue 18's
        runtime pins; none before it exists), read once per page."""
        try:
            rows = self._db.execute("SELECT reference FROM pins LIMIT 10000").fetchall()
        except sqlite3.OperationalError:  # no such table (yet)
            rows = []
        return self._pins + [ref for ref in (_reference(row[0]) for row in rows)
                             if ref is not None]


def _pinned(pins: list[ImageReference], upstream: str, repository: str, tag: str,
            digest: str) -> bool:
    return any(ref.digest == digest or (
        ref.registry == upstream and ref.tag == tag
        and official_repository(upstream, ref.repository) == repository) for ref in pins)


def _reference(text: object) -> ImageReference | None:
    try:
        return ImageReference.parse(text) if isinstance(text, str) else None
    except EdgecacheError:
        return None


def _after(head: str, last: str | None) -> str | None:
    """The repository names under `head` that sort after the catalog name `last` are those
    after the returned name ("" for all); None: none do."""
    if not last:
        return ""
    if last.startswith(head):
        return last[len(head):]
    return "" if head > last else None
