"""`listen.peer`: the site's peer requests on a listener of their own (a site-internal
interface, say), apart from the clients'.

With it set, each listener answers one kind of request only: a request that carries a peer
proof on the main listeners, or one without it on the peer listener, is refused (401 with the
peer challenge) before any route sees it, tokens, status and health routes included. So the
peer API can be kept off the network clients reach, and a client that finds the peer port
gets nothing from it. Which listener a request came in on is the socket's local address: the
peer listener's host (any address for a wildcard) and port.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from edgecache.configvalues import parse_hostport
from edgecache.errors import Unauthorized

from .proof import CHALLENGE, HEADER

WILDCARD = frozenset({"", "0.0.0.0", "::"})


class PeerListener:
    def __init__(self, address: str) -> None:
        self.address = address
        self.host, self.port = parse_hostport(address, "listen.peer")

    def arrived_on(self, request: web.Request) -> bool:
        """Whether the request came in on the peer listener."""
        transport = request.transport
        local = transport.get_extra_info("sockname") if transport is not None else None
        if not isinstance(local, tuple) or len(local) < 2:
            return False
        host, port = str(local[0]), local[1]
        if host.startswith("::ffff:"):  # an IPv4 peer on a dual-stack socket
            host = host.removeprefix("::ffff:")
        return port == self.port and (self.host in WILDCARD or host == self.host)

    def middleware(self) -> Middleware:
        @web.middleware
        async def one_kind_per_listener(request: web.Request,
                                        handler: Handler) -> web.StreamResponse:
            peer = HEADER in request.headers
            if self.arrived_on(request) != peer:
                raise Unauthorized(
                    "peer request refused: peers use listen.peer" if peer else
                    f"this is the site's peer listener ({self.address}): clients use the "
                    "main listener", CHALLENGE)
            return await handler(request)
        return one_kind_per_listener
