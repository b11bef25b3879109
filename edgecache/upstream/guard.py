"""No open proxy: where an upstream's redirects may lead.

An upstream (or whoever controls its responses) can redirect us anywhere; followed blindly, that
makes the mirror an SSRF tool against the node's metadata service (169.254.169.254), its
loopback services or the site's private network. Redirect targets may reach loopback, link-local
or private addresses only if the upstream itself lives in that class (a Harbor on 10.x may send
us to its own storage on 10.y). Host names are checked where they are resolved, at connect time,
so DNS rebinding between a check and the connection gains nothing; literal addresses are checked
before the request (aiohttp does not resolve them).
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver


def address_class(address: str) -> str:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "reserved"
    if ip.is_private or ip in ipaddress.ip_network("100.64.0.0/10"):
        return "private"
    return "public"


def literal_class(host: str) -> str | None:
    """The class of a literal IP host, None for a name."""
    try:
        return address_class(host.strip("[]"))
    except ValueError:
        return None


class AddressGuard:
    """What the upstream at `host` may be redirected to; learns the upstream's own class."""

    def __init__(self, host: str) -> None:
        self.host = host.lower()
        own = literal_class(self.host)
        self.allowed: set[str] = {"public"} | ({own} if own else set())

    def learn(self, addresses: list[str]) -> None:
        self.allowed.update(address_class(a) for a in addresses)

    def permits(self, host: str, address: str) -> bool:
        return host.lower() == self.host or address_class(address) in self.allowed


class GuardedResolver(AbstractResolver):
    """The default resolver, filtered by an `AddressGuard`."""

    def __init__(self, guard: AddressGuard) -> None:
        self._guard = guard
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host.lower() == self._guard.host:
            self._guard.learn([r["host"] for r in results])
            return results
        kept = [r for r in results if self._guard.permits(host, r["host"])]
        if not kept:
            # errno and strerror: aiohttp's connector error shows only the strerror
            raise OSError(errno.EACCES, f"refused to connect to {host}: it resolves only to "
                          "addresses this upstream may not reach "
                          f"({results[0]['host'] if results else '-'})")
        return kept

    async def close(self) -> None:
        await self._inner.close()
