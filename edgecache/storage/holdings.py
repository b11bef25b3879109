"""The status page's and the catalog's pages of what the store holds: images by tag, one
image's parts, the repositories (`/v2/_catalog`). Queries beside `index.py`, on its connection;
each row is an `images.Image`, the one definition of an image's closure, size and pins that the
cache commands (`ls`, `du`) read too.

Every answer is one page: a bounded `LIMIT`, searched and sorted in SQL, so a store of a
million tags costs a page's rows in memory, never the table. These run on the event loop, so
their time is bounded too: sorting by name walks the tags' key; sizes are computed for the
page's rows only; a sort that must compute every row (by size: each tag's closure; by last
pull: a lookup each) is done only when few enough rows match (`SORT_LIMITS`), else the page is
by name and says so. Measured on a loaded 2-core machine, 100,000 tags of 3 blobs each: a page
by name 3-7 ms, its last page by offset 11 ms, a search 7 ms, a catalog page 1 ms; by size
~30-60 us a matching tag (5,000: 160-300 ms, hence the limit), by last pull ~8 us.
The caller says which upstreams may be listed (`visible`): private content is filtered here,
in the query, never after a page was cut (a page never comes back short of what it could show).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from edgecache.storage.images import Image, Images
from edgecache.storage.index import Index

MAX_PAGE = 200
CATALOG_MAX = 1000
_SORTS = {
    "name": "t.upstream {0}, t.repository {0}, t.tag {0}",
    "size": "{size} {0}, t.upstream, t.repository, t.tag",
    "pulled": "(SELECT last_access FROM blobs WHERE digest=t.digest) {0}, t.upstream,"
              " t.repository, t.tag",
}
# sorts that compute every matching row (a closure's size; a join and a sort): at most this many
SORT_LIMITS: Mapping[str, int] = MappingProxyType({"size": 1_000, "pulled": 5_000})


@dataclass(frozen=True, slots=True)
class Part:
    """One thing an image references: a manifest, config or layer, held or not."""

    digest: str
    size: int | None
    media_type: str | None
    held: bool


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Image]
    offset: int
    more: bool
    sort: str = "name"  # the sort the page has (not the one asked for when `note` says why)
    note: str = ""  # why the page is not as asked (a sort over too many rows)


class Holdings:
    def __init__(self, index: Index, pins: Iterable[str] = (), local: str | None = None,
                 sort_limits: Mapping[str, int] = SORT_LIMITS,
                 restricted: Collection[str] = ()) -> None:
        """`restricted`: the owners (private upstreams) whose content counts towards another
        upstream's image only once linked to it, as `proxy/claims.py` hands it out."""
        self._db = index.sql
        self._images = Images(index, pins, local, restricted)
        self._sort_limits = sort_limits

    def images(self, visible: Collection[str], search: str = "", sort: str = "name",
               descending: bool = False, offset: int = 0, limit: int = 50) -> Page:
        """One page of tags of the `visible` upstreams whose name contains `search`. A sort
        that must compute every row (size, last pull) is done only when at most `sort_limits`
        rows match; otherwise the page is by name and says why (`note`)."""
        if not visible:
            return Page([], offset, False)
        limit, offset = max(1, min(limit, MAX_PAGE)), max(0, offset)
        where = f"t.upstream IN ({','.join('?' * len(visible))})"
        args: list[object] = list(visible)
        if search:
            where += " AND (t.upstream || '/' || t.repository || ':' || t.tag) LIKE ? ESCAPE '\\'"
            args.append("%" + search.replace("\\", "\\\\").replace("%", "\\%")
                        .replace("_", "\\_") + "%")
        note = ""
        bound = self._sort_limits.get(sort)
        if bound is not None and self._db.execute(
                f"SELECT COUNT(*) FROM (SELECT 1 FROM tags t WHERE {where} LIMIT ?)",
                (*args, bound + 1)).fetchone()[0] > bound:
            note = f"sorting by {sort} is offered for at most {bound} images: search to narrow"
            sort = "name"
        sort = sort if sort in _SORTS else "name"
        order = _SORTS[sort].format("DESC" if descending else "ASC", size=self._images.size)
        rows = self._db.execute(  # the tags alone: rows skipped by OFFSET cost no join
            f"SELECT t.upstream, t.repository, t.tag, t.digest FROM tags t WHERE {where}"
            f" ORDER BY {order} LIMIT ? OFFSET ?", (*args, limit + 1, offset)).fetchall()
        protected = self._images.protected()
        return Page([self._images.row(row, protected) for row in rows[:limit]], offset,
                    len(rows) > limit, sort, note)

    def image(self, upstream: str, repository: str, tag: str) -> Image | None:
        row = self._db.execute(
            "SELECT upstream, repository, tag, digest FROM tags"
            " WHERE upstream=? AND repository=? AND tag=?", (upstream, repository, tag)).fetchone()
        return None if row is None else self._images.row(row, self._images.protected())

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


def _after(head: str, last: str | None) -> str | None:
    """The repository names under `head` that sort after the catalog name `last` are those
    after the returned name ("" for all); None: none do."""
    if not last:
        return ""
    if last.startswith(head):
        return last[len(head):]
    return "" if head > last else None
