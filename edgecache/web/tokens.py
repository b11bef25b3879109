"""Bearer tokens edgecache issues itself, as Docker Hub's token service does for its registry.

Why a token service at all: dockerd sends a mirror only the credentials it holds for Docker Hub,
and gives up on a mirror whose `/v2/` challenges it with Basic ("no basic auth credentials").
Challenged with Bearer instead, every client (dockerd, podman, skopeo, containerd) fetches a
token from the realm: anonymously when it holds no credentials for the mirror, with Basic (or
containerd's OAuth2 password form) when it does. An anonymous token opens `/v2/` and nothing
else; public routes need none. A token issued against valid credentials also opens the
authenticated upstreams' routes.

A token is `ec1.<payload>.<mac>`: the payload (subject, authenticated or not, issued, expires)
in unpadded base64url JSON, signed with HMAC-SHA256 under a key drawn at random for this
process, so a restart invalidates every token (clients fetch a new one at their next 401) and
nothing needs storing or sharing. Tokens are short-lived: a client re-fetches one after
`TOKEN_TTL`, which re-checks its password against the htpasswd file as it is then.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

TOKEN_TTL = 300  # seconds
PREFIX = "ec1."
MAX_TOKEN = 1024  # longer values are not ours; refused before any decoding


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token says about its bearer."""

    subject: str  # the user name, or "" for an anonymous token
    authenticated: bool
    expires: int  # Unix time


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and verifies this process's tokens; the key never leaves the object."""

    def __init__(self, ttl: int = TOKEN_TTL) -> None:
        self._key = secrets.token_bytes(32)
        self.ttl = ttl

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, subject: str, authenticated: bool,
              now: float | None = None) -> dict[str, object]:
        """The token endpoint's answer: `token` and `access_token` (the same value, for
        Docker's and OAuth2 clients), `expires_in` and `issued_at` (RFC 3339)."""
        issued = int(time.time() if now is None else now)
        claims = {"sub": subject, "auth": authenticated, "iat": issued, "exp": issued + self.ttl}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        token = f"{PREFIX}{payload}.{self._mac(payload)}"
        return {"token": token, "access_token": token, "expires_in": self.ttl,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(issued))}

    def verify(self, token: str, now: float | None = None) -> Grant | None:
        """The grant of a token this process signed and that has not expired, else None."""
        if len(token) > MAX_TOKEN or not token.startswith(PREFIX) or not token.isascii():
            return None
        payload, sep, mac = token[len(PREFIX):].partition(".")
        if not sep or not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        try:
            claims = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):  # cannot happen for a signed payload, but cheap
            return None
        if not isinstance(claims, dict):
            return None
        subject, authenticated, expires = claims.get("sub"), claims.get("auth"), claims.get("exp")
        if not (isinstance(subject, str) and isinstance(authenticated, bool)
                and isinstance(expires, int)):
            return None
        if expires <= (time.time() if now is None else now):
            return None
        return Grant(subject, authenticated, expires)

    @staticmethod
    def is_ours(token: str) -> bool:
        """Whether a bearer value has this service's form (signed or not, expired or not)."""
        return token.startswith(PREFIX)
