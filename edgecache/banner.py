"""What `edgecache serve` says once it listens: where the data lives, the quota in force now,
the URLs, and a command to try. An operator who ran `make run` should not have to read the
config to find the port, nor the docs to find out whether it works.

Logged at INFO, a line each (so a JSON log keeps one object per line), after the listeners are
up: a URL printed is one that answers. A wildcard listener (`0.0.0.0`, `::`) is shown as the
loopback address a command on this host can use, marked as listening on every address.
"""

from __future__ import annotations

import logging

from prometheus_client import Gauge

from edgecache.config import Config, Size, parse_hostport
from edgecache.metrics import Metrics
from edgecache.units import human

log = logging.getLogger("edgecache")

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}


def log_start(config: Config, metrics: Metrics) -> None:
    """The lines, with the cache size and budget as the metrics report them now."""
    for line in lines(config, int(_value(metrics.cache_bytes)), int(_value(metrics.quota_bytes))):
        log.info("%s", line)


def _value(gauge: Gauge) -> float:
    return next(iter(next(iter(gauge.collect())).samples)).value


def url(scheme: str, address: str, key: str, path: str = "") -> str:
    """The URL a client on this host uses, and a note when the listener takes every address."""
    return base_url(scheme, address, key) + path + (
        " (every address)" if parse_hostport(address, key)[0] in _WILDCARDS else "")


def base_url(scheme: str, address: str, key: str) -> str:
    host, port = parse_hostport(address, key)
    shown = _WILDCARDS.get(host, f"[{host}]" if ":" in host else host)
    return f"{scheme}://{shown}:{port}"


def lines(config: Config, cached: int, budget: int) -> list[str]:
    storage = config.storage
    limit = "no max_size" if storage.max_size is None else f"max_size {_size(storage.max_size)}"
    out = [
        f"data in {storage.path} (blobs/, index.db; {human(cached)} cached)",
        f"quota {human(budget)} now ({limit}, min_free {_size(storage.min_free)}; evicts from "
        f"{storage.high_watermark:.0%} down to {storage.low_watermark:.0%} of it)",
    ]
    if config.listen.http:
        out.append(f"HTTP    {url('http', config.listen.http, 'listen.http')}")
    if config.listen.https:
        out.append(f"HTTPS   {url('https', config.listen.https, 'listen.https')}"
                   + ("" if config.tls.cert_file else "; its CA: edgecache ca > ca.crt"))
    if config.metrics.listen:
        out.append(f"metrics {url('http', config.metrics.listen, 'metrics.listen', '/metrics')}")
    out.append(f"try: {try_command(config)}")
    return out


def try_command(config: Config) -> str:
    """A pull-side command that shows the mirror working: skopeo on an image of the default
    upstream (path-prefixed for another), or curl on /v2/ when nothing else fits."""
    plain = config.listen.http is not None
    address = config.listen.http if plain else config.listen.https
    assert address is not None  # the config refuses no listener at all
    base = base_url("http" if plain else "https", address, "listen")
    host = base.split("://", 1)[1]
    if "docker.io" in config.upstreams:
        name = "library/alpine:latest"
        if config.default_upstream != "docker.io":
            name = f"docker.io/{name}"
        tls = "--tls-verify=false " if plain else "--cert-dir <dir with ca.crt> "
        return f"skopeo inspect {tls}docker://{host}/{name}"
    curl = "curl -s" if plain else "curl -s --cacert ca.crt"
    return f"{curl} {base}/v2/"


def _size(size: Size) -> str:
    return f"{size.percent:g}%" if size.percent is not None else human(size.bytes or 0)
