"""`GET /v2/_catalog`: the repositories this node holds a tag of, paged as the spec says
(`n`, `last`, a `Link` to the next page; byte order, as Distribution sorts).

How the three routing styles map:
- `?ns=<registry>` (containerd) and `/v2/<registry>/_catalog` (path prefix): that upstream's
  repositories, named as that route pulls them (`library/alpine` on docker.io). A private
  upstream needs the same credentials as a pull from it (401 with the Bearer challenge).
- `/v2/_catalog` with neither (the default upstream's clients and everyone else): every
  upstream's repositories, each named `<registry>/<repository>`, the path-prefix name that
  pulls it from this mirror. The request needs what `/v2/` needs; private upstreams are listed
  only when its credentials are valid (an anonymous token sees the public ones).
"""

from __future__ import annotations

from aiohttp import web

from edgecache.proxy.routing import CatalogRoute
from edgecache.proxy.tags import TagQuery
from edgecache.web.auth import ClientAuth
from edgecache.web.errors import error_response
from edgecache.web.observability import ACCESS
from edgecache.web.status import Source

DEFAULT_PAGE = 100


class Catalog:
    def __init__(self, source: Source, auth: ClientAuth) -> None:
        self._source = source
        self._auth = auth

    async def list(self, request: web.Request, route: CatalogRoute) -> web.Response:
        request[ACCESS] = {"route": "catalog", "upstream": route.upstream or "-",
                           "result": "error"}
        source = self._source()
        if source is None:
            return error_response(503, "UNAVAILABLE", "starting")
        await self._auth.check(request, route.upstream)
        if route.upstream is not None:
            upstreams, prefixed = [route.upstream], False
        else:
            header = request.headers.get("Authorization", "")
            authenticated = bool(header) and (await self._auth.identify(header))[1] is None
            upstreams, prefixed = sorted(source.visible(authenticated)), True
        query = TagQuery.parse(request.query)
        n = DEFAULT_PAGE if query.n is None else query.n
        names, more = source.holdings.repositories(upstreams, query.last, n, prefixed)
        request[ACCESS]["result"] = "hit"
        response = web.json_response({"repositories": names})
        if more and names:
            following = {"n": str(n), "last": names[-1]}
            if "ns" in request.query:
                following["ns"] = request.query["ns"]
            response.headers["Link"] = f'<{request.rel_url.with_query(following)}>; rel="next"'
        return response
