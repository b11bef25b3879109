"""Who may pull: client credentials for upstreams whose `access` is `authenticated`.

A NodePort is reachable by every host on the edge network; a mirror holding credentials for a
private upstream would otherwise hand its images to anyone. Clients authenticate with HTTP Basic
(checked against a bcrypt htpasswd file) or a static bearer token (a tokens file). Unauthenticated
requests get 401 with a `WWW-Authenticate: Basic` challenge, which docker, containerd and skopeo
answer with their configured credentials. Public upstreams need nothing.

bcrypt is slow on purpose (tens of milliseconds a check) and a pull is dozens of requests, so a
verified (user, password) pair is remembered, keyed by a hash of both, until the file changes.
Files are re-read when their modification time changes; comparisons are constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from aiohttp import web

from edgecache.config import AuthConfig
from edgecache.errors import Unauthorized

log = logging.getLogger(__name__)

VERIFIED_CACHE_LIMIT = 4096


class _Watched:
    """A small text file, re-read when its modification time or size changes."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self._stamp: tuple[int, int] | None = None
        self.lines: list[str] = []

    def refresh(self) -> bool:
        """True when the content changed."""
        if self.path is None:
            return False
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            log.error("cannot read %s: %s", self.path, exc.strerror)
            return False
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        text = self.path.read_text(encoding="utf-8", errors="replace")
        self.lines = [line.strip() for line in text.splitlines()
                      if line.strip() and not line.lstrip().startswith("#")]
        return True


def token_of(line: str) -> str:
    """A tokens file line is `token` or `name:token` (the name is for the operator)."""
    return line.rpartition(":")[2]


def first_token(config: AuthConfig) -> str | None:
    """The first static token of the tokens file: what `edgecache warm`, run with the service's
    own config, presents to the running service. None without a tokens file or token."""
    watched = _Watched(config.tokens_file)
    watched.refresh()
    return token_of(watched.lines[0]) if watched.lines else None


class ClientAuth:
    def __init__(self, config: AuthConfig, authenticated: Iterable[str]) -> None:
        self.realm = config.realm
        self._locked = frozenset(authenticated)
        self._htpasswd = _Watched(config.htpasswd_file)
        self._tokens_file = _Watched(config.tokens_file)
        self._users: dict[str, bytes] = {}
        self._tokens: list[bytes] = []
        self._verified: set[bytes] = set()
        self._reload()

    def _reload(self) -> None:
        if self._htpasswd.refresh():
            users = {}
            for line in self._htpasswd.lines:
                user, sep, hashed = line.partition(":")
                if sep and hashed.startswith(("$2y$", "$2b$", "$2a$")):
                    users[user] = ("$2b$" + hashed[4:]).encode()
                else:
                    log.warning("htpasswd entry for %r is not bcrypt; ignored", user)
            self._users = users
            self._verified.clear()
        if self._tokens_file.refresh():
            self._tokens = [token_of(line).encode() for line in self._tokens_file.lines]

    def required(self, upstream: str | None) -> bool:
        """For an upstream, whether it is locked; for the API root, whether any is."""
        return bool(self._locked) if upstream is None else upstream in self._locked

    def check(self, request: web.Request, upstream: str | None) -> None:
        """Raise Unauthorized unless the route is public or the credentials are valid. A public
        route ignores Authorization: a client may send one header to every registry."""
        if not self.required(upstream):
            return
        header = request.headers.get("Authorization", "")
        self._reload()
        if not self._valid(header):
            raise Unauthorized("invalid credentials" if header else "authentication required",
                               self.realm)

    def _valid(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            token = value.strip().encode("utf-8", "surrogateescape")  # a header's raw bytes
            return bool(token) and any(hmac.compare_digest(token, t) for t in self._tokens)
        if scheme != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode(
                "utf-8").partition(":")
        except (binascii.Error, ValueError):  # not base64, not ASCII, or not UTF-8 inside
            return False
        if not sep:
            return False
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        if key in self._verified:
            return True
        hashed = self._users.get(user)
        if hashed is None:
            return False
        import bcrypt  # here, not at start: ~0.4 MiB of RSS for services without an htpasswd

        if not bcrypt.checkpw(password.encode(), hashed):
            return False
        if len(self._verified) >= VERIFIED_CACHE_LIMIT:
            self._verified.clear()
        self._verified.add(key)
        return True
