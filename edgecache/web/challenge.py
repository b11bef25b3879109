"""The 401 a client gets from a route it may not read: the `WWW-Authenticate` challenge and a
message that says what to send.

The challenge is Bearer, naming this server's own token endpoint as the realm (see
web/tokens.py for why). The realm is built from the address the client used (its Host header,
checked to be a plain host[:port]), so a client reaching the mirror as `10.0.0.5:6123`, as
`[::1]:6123` or as `mirror.site` is sent back to the same place. The message names that
address too, not the upstream's: credentials stored for `quay.io` (a kubelet pull secret whose
server_address is the registry) are never sent to a mirror, and the operator must be told to
log in to the mirror itself.
"""

from __future__ import annotations

import enum
import re

from aiohttp import web

TOKEN_PATH = "/v2/token"
_HOST_RE = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\])"
                      r"(?::\d{1,5})?")
_SCOPE_RE = re.compile(r"/v2/([a-z0-9._/-]{1,255}?)/(?:manifests|blobs|tags)/")


class Refusal(enum.Enum):
    """Why credentials did not open a route; each gets its own message."""

    MISSING = "missing"  # none given (or an empty user and password, as podman sends)
    ANONYMOUS = "anonymous"  # a token fetched without credentials
    WRONG = "wrong"  # a user, password or static token that is not accepted
    STALE = "stale"  # a token of our form that is expired or not signed by this process


def address(request: web.Request) -> str:
    """host[:port] as the client addressed this server: its Host header when that is a plain
    host name or address, else the listening socket's address."""
    host = request.host
    if _HOST_RE.fullmatch(host):
        return host
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        ip, port = str(sockname[0]), int(sockname[1])
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    return "localhost"


def realm(request: web.Request) -> str:
    return f"{request.scheme}://{address(request)}{TOKEN_PATH}"


def bearer(request: web.Request, service: str, refusal: Refusal | None,
           actions: str = "pull") -> str:
    """The challenge: realm and service always; for a repository route the scope it needs;
    `error` when a token was given and is not enough (RFC 6750)."""
    parts = [f'Bearer realm="{realm(request)}"', f'service="{service}"']
    if match := _SCOPE_RE.match(request.rel_url.raw_path):
        parts.append(f'scope="repository:{match.group(1)}:{actions}"')
    if refusal is Refusal.ANONYMOUS:
        parts.append('error="insufficient_scope"')
    elif refusal is Refusal.STALE:
        parts.append('error="invalid_token"')
    return ",".join(parts)


def message(request: web.Request, refusal: Refusal) -> str:
    host = address(request)
    login = f"`docker login {host}` or `podman login {host}`"
    if refusal is Refusal.WRONG:
        return (f"invalid credentials for {host}: the user name and password (or token) are "
                f"not accepted; log in again with {login}")
    if refusal is Refusal.STALE:
        return f"token expired or not issued by {host}: fetch a new one from {realm(request)}"
    return (f"authentication required: log in to {host} with {login}, or send Basic "
            f"credentials for {host} (containerd, k3s: `edgecache client-config --username`); "
            f"credentials stored under the registry's own name are not sent to a mirror")
