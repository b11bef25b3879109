"""The status page: what this node holds and how it is doing, for a browser and for scripts.

Routes (the same on the metrics listener and on the client listeners):
- `/`: disk, hit ratio and bytes saved (last hour, since start), upstreams, cluster peers and a
  page of the images held; `q` searches (`upstream/repository:tag` contains it), `sort` is
  name, size or pulled, `order` asc or desc, `offset` and `n` (at most 200) page;
- `/image?upstream=&repository=&tag=`: one image's manifests, configs and layers, referrers;
- `/login`: asks the browser for credentials (HTTP Basic), then back to `/`.
Every page has a JSON twin: the same URL with `format=json` (scripts should not scrape HTML).

Who sees what: an image of an `access: authenticated` upstream (and that upstream's own row,
whose last error may name a repository) is shown only to a viewer whose Authorization header
holds valid client credentials (ClientAuth, as for pulls); anyone else sees the public ones and
a count of what is hidden. The metrics listener has no client auth of its own: it follows the
same rule, so without credentials it never lists private content. On a client listener the
page also follows `/v2/`'s rule: when any upstream is locked, a viewer with no credentials at
all (not even an anonymous token) gets a 401 with a Basic challenge a browser can answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from edgecache.errors import EdgecacheError
from edgecache.web.auth import ClientAuth
from edgecache.web.challenge import Refusal
from edgecache.web.errors import from_domain
from edgecache.web.statusdata import StatusSource
from edgecache.web.statusjson import image_json, overview_json, row_json
from edgecache.web.statuspage import image_html, not_found_html, overview_html

PAGE = 50
Source = Callable[[], StatusSource | None]


def add_status_routes(app: web.Application, source: Source, auth: ClientAuth,
                      challenge: bool) -> None:
    """Mount the pages; `challenge`: a client listener (see the module's last paragraph)."""
    pages = StatusPages(source, auth, challenge)
    app.router.add_get("/", pages.overview)
    app.router.add_get("/image", pages.image)
    app.router.add_get("/login", pages.login)


class StatusPages:
    def __init__(self, source: Source, auth: ClientAuth, challenge: bool) -> None:
        self._source = source
        self._auth = auth
        self._challenge = challenge

    async def _refusal(self, request: web.Request) -> Refusal | web.Response | None:
        """Why the viewer's credentials fail (None: valid), or the 429 to give instead."""
        header = request.headers.get("Authorization", "")
        try:
            return (await self._auth.identify(header))[1] if header else Refusal.MISSING
        except EdgecacheError as exc:  # too many password checks in progress: 429
            return from_domain(exc)

    async def _open(self, request: web.Request) -> tuple[StatusSource, bool] | web.Response:
        """The source and whether the viewer is authenticated, or the answer to give instead
        (503 while the service starts, a 401 challenge, a 429)."""
        source = self._source()
        if source is None:
            return _starting()
        refusal = await self._refusal(request)
        if isinstance(refusal, web.Response):
            return refusal
        if (self._challenge and self._auth.required(None)
                and refusal not in (None, Refusal.ANONYMOUS)):
            return _basic_challenge(self._auth.realm)
        return source, refusal is None

    async def overview(self, request: web.Request) -> web.StreamResponse:
        opened = await self._open(request)
        if isinstance(opened, web.Response):
            return opened
        source, viewer = opened
        query = request.query
        search = query.get("q", "")[:200]
        sort = query.get("sort", "name")
        descending = query.get("order") == "desc"
        offset, n = _number(query.get("offset"), 0), _number(query.get("n"), PAGE)
        visible = source.visible(viewer)
        page = source.holdings.images(visible, search, sort, descending, offset, n)
        rows = [(row, source.platforms(row)) for row in page.rows]
        hidden = sorted(source.private - visible)
        upstreams = [u for u in source.upstreams() if u.name in visible or not u.private]
        peers = source.peers() if source.peers is not None else None
        following = (str(request.rel_url.update_query(offset=str(page.offset + len(rows))))
                     if page.more else None)
        doc: dict[str, Any] = overview_json(
            source.disk(), source.rates.last_hour(), source.rates.since_start(), upstreams,
            peers, viewer, len(hidden))
        doc["images"] = {"rows": [row_json(row, platforms) for row, platforms in rows],
                         "offset": page.offset, "more": page.more, "next": following,
                         "q": search, "sort": page.sort, "order": "desc" if descending else "asc",
                         "note": page.note}
        if query.get("format") == "json":
            return web.json_response(doc)
        return _html(overview_html(doc))

    async def image(self, request: web.Request) -> web.StreamResponse:
        opened = await self._open(request)
        if isinstance(opened, web.Response):
            return opened
        source, viewer = opened
        query = request.query
        upstream, repository = query.get("upstream", ""), query.get("repository", "")
        tag = query.get("tag", "")
        as_json = query.get("format") == "json"
        row = (source.holdings.image(upstream, repository, tag)
               if upstream in source.visible(viewer) else None)  # hidden: as if not held
        if row is None:
            if as_json:
                return web.json_response({"error": "no such image held"}, status=404)
            return _html(not_found_html(upstream, repository, tag), status=404)
        parts, platforms = source.parts(row)
        doc = image_json(row, platforms, parts, source.holdings.referrers(row.digest))
        return web.json_response(doc) if as_json else _html(image_html(doc))

    async def login(self, request: web.Request) -> web.StreamResponse:
        """A browser sends credentials only after a challenge: this is that challenge."""
        refusal = await self._refusal(request)
        if isinstance(refusal, web.Response):
            return refusal
        if refusal is not None:
            return _basic_challenge(self._auth.realm)
        raise web.HTTPSeeOther("/")


def _number(text: str | None, default: int) -> int:
    """A page parameter: ASCII digits (at most 9), else the default."""
    if text and text.isascii() and text.isdigit() and len(text) <= 9:
        return int(text)
    return default


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store",
                                 "Content-Security-Policy": "default-src 'none'; "
                                 "style-src 'unsafe-inline'; form-action 'self'"})


def _starting() -> web.Response:
    return web.json_response({"status": "starting"}, status=503)


def _basic_challenge(realm: str) -> web.Response:
    return web.Response(status=401, text="log in with your registry credentials\n",
                        headers={"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"',
                                 "Cache-Control": "no-store"})
