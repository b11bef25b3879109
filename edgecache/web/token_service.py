"""The token endpoint (`/v2/token`) that `/v2/`'s Bearer challenge names as its realm.

Two dialects, as registry clients speak them: the distribution token spec's GET (`scope`,
`service`, `account` in the query; Basic credentials optional: dockerd, podman, skopeo and
edgecache's own upstream client) and OAuth2's password grant, a POSTed form (`grant_type`,
`username`, `password`), which containerd tries first when it holds credentials. No credentials
get an anonymous token; wrong ones get 401, checked by the same off-loop, bounded bcrypt path
as every other request (web/auth.py). `scope` is not needed to decide anything: a user who may
read one authenticated upstream may read them all, so a token is not scoped. No refresh tokens
are issued, so clients keep the password they logged in with and fetch a token with it.
"""

from __future__ import annotations

import urllib.parse

from aiohttp import web

from edgecache.errors import InvalidRequest, NotFound, Unauthorized, Unsupported
from edgecache.upstream.auth import basic_header
from edgecache.web import challenge
from edgecache.web.auth import ClientAuth
from edgecache.web.challenge import Refusal

FORM = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 16


class TokenService:
    def __init__(self, auth: ClientAuth) -> None:
        self._auth = auth

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self._auth.required(None):
            raise NotFound("no token service: client auth is not configured here")
        if request.method == "POST":
            header = await self._password_grant(request)
        elif request.method in ("GET", "HEAD"):
            header = request.headers.get("Authorization", "")
        else:
            raise Unsupported(f"{request.method} is not supported by the token endpoint",
                              "GET, HEAD, POST")
        subject, refusal = await self._auth.identify(header)
        if refusal is Refusal.MISSING:
            return self._answer("", False)
        if refusal is not None:
            raise Unauthorized(
                f"invalid credentials for {challenge.address(request)}: the user name and "
                "password (or token) are not accepted",
                f'Basic realm="{self._auth.realm}", charset="UTF-8"')
        return self._answer(subject, True)

    def _answer(self, subject: str, authenticated: bool) -> web.Response:
        body = self._auth.tokens.issue(subject, authenticated)
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    @staticmethod
    async def _password_grant(request: web.Request) -> str:
        """The form's credentials as a Basic header value ("" without a user name)."""
        if request.content_type != FORM:
            raise InvalidRequest(f"the token endpoint takes a POSTed {FORM} form")
        try:
            text = (await request.read()).decode("utf-8")
            form = urllib.parse.parse_qs(text, keep_blank_values=True,
                                         max_num_fields=MAX_FORM_FIELDS)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidRequest(f"malformed token request form: {exc}") from exc
        grant = form.get("grant_type", [""])[0]
        if grant != "password":
            raise InvalidRequest(f"unsupported grant_type {grant[:40]!r}: use password, or GET "
                                 "with Basic credentials")
        user, password = form.get("username", [""])[0], form.get("password", [""])[0]
        return basic_header(user, password) if user or password else ""
