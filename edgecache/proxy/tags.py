"""A page of a tag list, as the spec defines it, whatever the upstream did with the request.

The spec (v1.1.1, "Listing Tags") wants tags in lexical order, `n` results unless fewer remain or
a `Link` header says where the rest are, and `last` excluded. Upstreams differ: Distribution 2.8
ignores `n` and `last` and sends everything, Docker Hub pages, some do not sort. So edgecache
sorts, filters and cuts what it got, and says itself whether more remain: it asks the upstream
for one tag more than the page, so it knows without trusting (or parsing) the upstream's Link
(an upstream that refuses that `n`, as Distribution 3.0 does over its `maxtags`, is asked for
exactly `n`; then its Link, or more tags than asked, says it).
The order is byte order (Go's `sort.Strings`, Distribution's): the spec's "case-insensitive"
gloss contradicts the reference implementation, and `last` must compare the way the upstream
that honours it does, or a page boundary would skip tags.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgecache.errors import UpstreamBadResponse
from edgecache.upstream.client import UpstreamClient

MAX_PAGE = 10_000  # a larger `n` gets this many and a Link, as the spec allows
_NEXT = re.compile(r'rel\s*=\s*"?next"?', re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class TagQuery:
    """The client's `n` (None: every tag the upstream sends) and `last`."""

    n: int | None
    last: str | None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> TagQuery:
        """An `n` that is not ASCII digits is ignored, as a missing one (Distribution 2.8 ignores
        every `n`); a huge one is MAX_PAGE without converting it ('²'.isdigit() is True)."""
        text = query.get("n", "")
        n: int | None = None
        if text.isascii() and text.isdigit():
            digits = text.lstrip("0") or "0"
            n = MAX_PAGE if len(digits) > len(str(MAX_PAGE)) else min(int(digits), MAX_PAGE)
        return cls(n, query.get("last") or None)

    def upstream(self, extra: int = 1) -> dict[str, str]:
        """What to ask the upstream: `extra` tags more than the page, to learn whether more
        remain (0 for an upstream that refuses an `n` over its own limit)."""
        query = {"n": str(self.n + extra)} if self.n is not None else {}
        if self.last:
            query["last"] = self.last
        return query


@dataclass(frozen=True, slots=True)
class TagPage:
    tags: list[str]
    more: bool  # tags after the last one exist: the answer carries a Link to them


def page(tags: Iterable[object], query: TagQuery, upstream_link: str | None = None) -> TagPage:
    """Sort, drop up to `last`, cut to `n`. An upstream Link with rel="next" means more remain
    even when the upstream sent fewer than asked (its own page limit)."""
    found = sorted({tag for tag in tags if isinstance(tag, str)})
    if query.last:
        found = [tag for tag in found if tag > query.last]
    more = bool(upstream_link and _NEXT.search(upstream_link)) and bool(found)
    if query.n is not None:
        more = more or len(found) > query.n
        found = found[: query.n]
    return TagPage(found, more and bool(found))


async def upstream_page(client: UpstreamClient, repository: str, query: TagQuery) -> TagPage:
    """The page of the upstream's list; an upstream that refuses n + 1 (over its own limit) is
    asked for n."""
    try:
        tags, link = await client.list_tags(repository, query.upstream())
    except UpstreamBadResponse:
        if query.n is None:
            raise
        tags, link = await client.list_tags(repository, query.upstream(extra=0))
    return page(tags, query, link)
