"""The `cluster:` section: which nodes form the site, and how they prove they belong to it.

The site is a static list of peer URLs (`peers:`, a systemd site; it may include this node) or
a DNS name whose A/AAAA records are the peers (`dns:`, a Kubernetes headless Service) with the
port and scheme they listen on. `self:` is this node's own peer URL, so it can find itself in
the ring; when omitted it is derived from `listen.http` (or `listen.https`) where that names an
address, else from the host name's address. The secret is required: without it any host that
can reach the listener could read private content as a peer.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edgecache import configfields as fields
from edgecache.configvalues import (
    Problems,
    parse_hostport,
    parse_upstream_url,
    show,
    valid_host,
)
from edgecache.errors import ConfigError

if TYPE_CHECKING:  # config.py holds a ClusterConfig: no import of it at run time
    from edgecache.config import ListenConfig

KEYS = {"peers", "dns", "port", "scheme", "self", "secret_file", "health_interval",
        "dns_interval", "ask_timeout"}
MIN_SECRET = 16  # bytes: shorter is guessable by a neighbour on the site network


@dataclass(frozen=True)
class ClusterConfig:
    peers: tuple[str, ...] = ()  # normalised peer URLs: scheme://host:port
    dns: str = ""
    port: int = 0  # for dns: the peers' port (0: this node's listener port)
    scheme: str = "http"  # for dns
    self_url: str = ""
    secret_file: str = ""
    health_interval: float = 2.0
    dns_interval: float = 10.0
    ask_timeout: float = 1.0  # the bounded HEAD an owner sends its peers before the WAN

    @property
    def enabled(self) -> bool:
        return bool(self.peers or self.dns)

    def secret(self) -> bytes:
        """Read when the node starts, never kept in a config dump or a log line."""
        try:
            with open(self.secret_file, "rb") as handle:
                secret = handle.read(4096).strip()
        except OSError as exc:
            raise ConfigError(f"cluster.secret_file {self.secret_file}: "
                              f"{exc.strerror or exc}") from None
        if len(secret) < MIN_SECRET:
            raise ConfigError(f"cluster.secret_file {self.secret_file}: the secret must be at "
                              f"least {MIN_SECRET} bytes (e.g. `openssl rand -hex 32`)")
        return secret


def peer_url(value: object, key: str) -> str:
    """`scheme://host:port`, lower-cased, with the port written out: the ring hashes the
    text, so two spellings of one node would be two nodes."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected an http(s) URL, got {show(value)}")
    url = parse_upstream_url(value, key)
    parts = urlsplit(url)
    if parts.path not in ("", "/"):
        raise ConfigError(f"{key}: a peer URL has no path (peers speak /v2/ at their root)")
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}:{port}"


def parse_cluster(raw: object, listen: ListenConfig, p: Problems) -> ClusterConfig:
    section = fields.section(raw, "cluster", KEYS, p)
    if not section:
        return ClusterConfig()
    peers = _peers(section.get("peers"), p)
    dns = p.value(lambda: fields.string(section, "dns", "cluster", ""), "")
    if dns and not valid_host(dns):
        p.add(f"cluster.dns: {show(dns)} is not a DNS name")
    if peers and dns:
        p.add("cluster: set peers or dns, not both")
    if not peers and not dns:
        p.add("cluster: set peers (a list of peer URLs) or dns (a name whose records are the "
              "peers)")
    scheme = p.value(lambda: fields.choice(section, "scheme", "cluster", "http",
                                           ("http", "https")), "http")
    port = section.get("port", 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        p.add(f"cluster.port: expected a port number, got {show(port)}")
        port = 0
    secret = p.value(lambda: fields.existing_file(section, "secret_file", "cluster"), "")
    if not section.get("secret_file"):
        p.add("cluster.secret_file: required: peers prove they belong to the site with it")

    def duration(name: str, default: float) -> float:
        return p.value(lambda: fields.positive_duration(section, name, "cluster", default),
                       default)

    own = section.get("self")
    self_url = (p.value(lambda: peer_url(own, "cluster.self"), "") if own
                else _derived_self(listen))
    return ClusterConfig(
        peers=peers, dns=dns, port=port, scheme=scheme, self_url=self_url, secret_file=secret,
        health_interval=duration("health_interval", ClusterConfig.health_interval),
        dns_interval=duration("dns_interval", ClusterConfig.dns_interval),
        ask_timeout=duration("ask_timeout", ClusterConfig.ask_timeout))


def _peers(raw: Any, p: Problems) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        p.add(f"cluster.peers: expected a list of peer URLs, got {show(raw)}")
        return ()
    found: list[str] = []
    for i, item in enumerate(raw):
        url = p.value(lambda: peer_url(item, f"cluster.peers[{i}]"), "")  # noqa: B023
        if url and url not in found:
            found.append(url)
    return tuple(found)


def _derived_self(listen: ListenConfig) -> str:
    """This node's URL as its peers reach it: the plain listener when there is one."""
    address, scheme = ((listen.http, "http") if listen.http else (listen.https, "https"))
    if address is None:
        return ""
    try:
        host, port = parse_hostport(address, "listen")
    except ConfigError:
        return ""  # reported by the listen section
    if host in ("0.0.0.0", "::", ""):
        host = _own_address()
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def _own_address() -> str:
    """The host name's address: in a pod, the pod IP (/etc/hosts); on a host, its own."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
