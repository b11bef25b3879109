"""Where clients reach edgecache, written the way client files name a registry (host:port)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from edgecache.config import Config, parse_hostport
from edgecache.configvalues import show, valid_host
from edgecache.errors import ConfigError
from edgecache.tls.server import host_names


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str  # "https" or "http"
    address: str  # host:port as clients write it ([v6]:port for IPv6)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"

    @property
    def ipv6(self) -> bool:
        """An IPv6 literal: some clients' reference grammar has no room for it."""
        return self.address.startswith("[")


def _hostport(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_address(value: str) -> None:
    """An `--address` becomes a directory name (`certs.d/<address>/`) and a mirror URL, so it
    must be a host or host:port the way a listener is, never a path such as `../../x`."""
    if _is_ip(value):
        return  # a bare IPv6 address: colons, no port
    if ":" in value.rsplit("]", 1)[-1]:
        parse_hostport(value, "--address")
        if value.startswith(":"):
            raise ConfigError(f"--address: {show(value)} names no host")
        return
    host = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if not (valid_host(host) and (host == value or ":" in host)):
        raise ConfigError(f"--address: {show(value)} is neither an IP address nor a host name")


def endpoints(config: Config, explicit: list[str]) -> list[Endpoint]:
    """Where clients reach edgecache: `--address` values, else the listener's address, else
    (for a wildcard listener) 127.0.0.1 first, then every non-loopback IPv4 of the host."""
    scheme, listen = ("https", config.listen.https) if config.listen.https else (
        "http", config.listen.http)
    assert listen is not None
    host, port = parse_hostport(listen, f"listen.{scheme}")
    if explicit:
        for address in explicit:
            check_address(address)
        # a bare IPv6 address has colons but no port; one address given twice is one endpoint
        addresses = [a if ":" in a.rsplit("]", 1)[-1] and not _is_ip(a) else _hostport(a, port)
                     for a in explicit]
        return [Endpoint(scheme, a) for a in dict.fromkeys(addresses)]
    if host not in ("0.0.0.0", "::", ""):
        return [Endpoint(scheme, _hostport(host, port))]
    _, ips = host_names()
    others = sorted(str(ip) for ip in ips if ip.version == 4 and not ip.is_loopback)
    return [Endpoint(scheme, _hostport(h, port)) for h in ["127.0.0.1", *others]]
