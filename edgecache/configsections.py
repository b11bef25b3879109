"""The sections of a configuration, each read into its value object with every problem
recorded and defaults carried on, then the checks that span sections (authenticated upstreams
need client credentials; pins and default_upstream name configured upstreams; no two listeners
share a port).

A section that fails still yields a value, so the sections after it are checked too; a check
that depends on a failed part is skipped rather than reported twice (an upstream with a bad
url is reported once, not again by every pin that names it). `build`'s result is used only
when nothing was recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgecache import configfields as fields
from edgecache.cluster.settings import parse_cluster
from edgecache.config import (
    DEFAULT_STORAGE,
    DEFAULT_UPSTREAMS,
    AuthConfig,
    CacheConfig,
    Config,
    HealthConfig,
    LimitsConfig,
    ListenConfig,
    LogConfig,
    MetricsConfig,
    StorageConfig,
    TlsConfig,
    UpstreamConfig,
)
from edgecache.configvalues import (
    Problems,
    key_name,
    parse_cap,
    parse_size,
    parse_upstream_url,
    show,
    upstream_name,
    valid_host,
)
from edgecache.imagerefs import parse_pins
from edgecache.local.settings import parse_local
from edgecache.ops.prefetchsettings import parse_prefetch
from edgecache.tls.site import SITE_CA_KEYS, site_ca

SECTIONS = {"listen", "tls", "auth", "storage", "upstreams", "default_upstream", "cache",
            "health", "log", "metrics", "limits", "pins", "local", "prefetch", "cluster"}


def build(raw: object, p: Problems) -> Config:
    """Every section parsed (each records its problems and carries on with defaults), then
    the checks across sections. The result is used only when no problem was recorded."""
    if raw is not None and not isinstance(raw, dict):
        p.add(f"top level: expected a mapping of sections ({', '.join(sorted(SECTIONS))}), "
              f"got {show(raw)}")
        raw = {}
    top = fields.section(raw, "", SECTIONS, p)
    listen = _listen(top.get("listen"), p)
    storage = _storage(top.get("storage"), p)
    upstreams, names = _upstreams(top.get("upstreams", DEFAULT_UPSTREAMS), p)
    before = len(p.messages)
    auth = _auth(top.get("auth"), p)
    locked = [name for name, u in upstreams.items() if u.access == "authenticated"]
    if locked and len(p.messages) == before and not (auth.htpasswd_file or auth.tokens_file):
        p.add(f"auth: upstreams {', '.join(sorted(locked))} are authenticated; set "
              "auth.htpasswd_file or auth.tokens_file for the clients' credentials")
    metrics = _metrics(top.get("metrics"), p)
    fields.distinct_listeners(p, {"listen.http": listen.http, "listen.https": listen.https,
                                  "metrics.listen": metrics.listen})
    tls = _tls(top.get("tls"), p)
    return Config(
        listen=listen, tls=tls, auth=auth, storage=storage,
        upstreams=upstreams, default_upstream=_default_upstream(top, names, p),
        cache=_cache(top.get("cache"), p), health=_health(top.get("health"), p),
        log=_log(top.get("log"), p), metrics=metrics, limits=_limits(top.get("limits"), p),
        pins=parse_pins(top.get("pins"), names, p),
        local=parse_local(top.get("local"), auth, names, p),
        prefetch=parse_prefetch(top.get("prefetch"), names, p),
        cluster=parse_cluster(top.get("cluster"), listen, p, tls, top.get("listen")))


# ---- sections -----------------------------------------------------------------------------------

def _listen(raw: object, p: Problems) -> ListenConfig:
    section = fields.section(raw, "listen",
                             {"http", "https", "peer", "shutdown_timeout", "idle_timeout"}, p)
    http = p.value(lambda: fields.address(section, "http", "listen", ListenConfig.http),
                   ListenConfig.http)
    https = p.value(lambda: fields.address(section, "https", "listen", ListenConfig.https),
                    ListenConfig.https)
    if http is None and https is None:
        p.add("listen: at least one of http and https must be set")
    return ListenConfig(
        http=http, https=https,
        shutdown_timeout=p.value(lambda: fields.duration(
            section, "shutdown_timeout", "listen", ListenConfig.shutdown_timeout), 0.0),
        idle_timeout=p.value(lambda: fields.duration(
            section, "idle_timeout", "listen", ListenConfig.idle_timeout), 0.0))


def _metrics(raw: object, p: Problems) -> MetricsConfig:
    section = fields.section(raw, "metrics", {"listen"}, p)
    return MetricsConfig(listen=p.value(lambda: fields.address(
        section, "listen", "metrics", MetricsConfig.listen), MetricsConfig.listen))


def _storage(raw: object, p: Problems) -> StorageConfig:
    section = fields.section(raw, "storage", {"path", "max_size", "min_free", "high_watermark",
                                              "low_watermark", "access_flush_interval"}, p)
    defaults = StorageConfig()
    path = p.value(lambda: fields.path(section, "path", "storage", DEFAULT_STORAGE),
                   DEFAULT_STORAGE)
    if not path:
        p.add("storage.path: must not be empty")
    high = p.value(lambda: fields.fraction(section, "high_watermark", "storage",
                                           defaults.high_watermark), 1.0)
    low = p.value(lambda: fields.fraction(section, "low_watermark", "storage",
                                          defaults.low_watermark), 0.0)
    if low > high:
        p.add("storage.low_watermark: must not be above high_watermark")
    return StorageConfig(
        path=Path(path),
        max_size=p.value(lambda: parse_cap(section.get("max_size"), "storage.max_size"), None),
        min_free=p.value(lambda: parse_size(section.get("min_free", "5%"), "storage.min_free"),
                         defaults.min_free),
        high_watermark=high,
        low_watermark=low,
        access_flush_interval=p.value(lambda: fields.duration(
            section, "access_flush_interval", "storage", defaults.access_flush_interval), 0.0),
    )


def _upstreams(raw: object, p: Problems) -> tuple[dict[str, UpstreamConfig], set[str]]:
    """The valid upstreams, and the names of all listed (so a bad entry is reported once, not
    again by every pin and default_upstream that names it)."""
    if not isinstance(raw, dict) or not raw:
        p.add("upstreams: expected a non-empty mapping of registry name to settings")
        return {}, set()
    upstreams: dict[str, UpstreamConfig] = {}
    names: set[str] = set()
    for name, value in raw.items():
        key = f"upstreams.{key_name(name)}"
        lowered = p.value(lambda: upstream_name(name, key), "")  # noqa: B023 - called at once
        if not lowered:
            continue
        if lowered in names:
            p.add(f"{key}: names the same registry as another upstream (names are not "
                  "case-sensitive)")
            continue
        names.add(lowered)
        before = len(p.messages)
        upstream = _upstream(lowered, value, key, p)
        if len(p.messages) == before:
            upstreams[lowered] = upstream
    return upstreams, names


def _upstream(name: str, raw: object, key: str, p: Problems) -> UpstreamConfig:
    allowed = {"url", "username", "password_file", "connect_timeout", "response_timeout",
               "read_timeout", "access"}
    if not isinstance(raw, dict):
        p.add(f"{key}: expected a mapping with at least url, got {show(raw)}")
        return UpstreamConfig(name=name, url="")
    inlined = "password" in raw
    if inlined:
        p.add(f"{key}.password: passwords are never inlined; put it in a file readable only "
              "by edgecache and set password_file")
        raw = {k: v for k, v in raw.items() if k != "password"}
    section = fields.section(raw, key, allowed, p)
    url = p.value(lambda: parse_upstream_url(fields.string(section, "url", key, ""),
                                             f"{key}.url"), "")
    username = p.value(lambda: fields.string(section, "username", key, ""), "")
    password_file = p.value(lambda: fields.existing_file(section, "password_file", key), "")
    # an inlined password already says what to do: not a second line about the same fix
    if not inlined and bool(section.get("username")) != bool(section.get("password_file")):
        p.add(f"{key}: username and password_file go together")
    access = p.value(lambda: fields.choice(section, "access", key,
                                           "authenticated" if username else "public",
                                           ("public", "authenticated")), "public")

    def timeout(field_name: str, default: float) -> float:
        return p.value(lambda: fields.positive_duration(section, field_name, key, default), default)

    return UpstreamConfig(
        name=name, url=url, username=username, password_file=password_file,
        connect_timeout=timeout("connect_timeout", UpstreamConfig.connect_timeout),
        response_timeout=timeout("response_timeout", UpstreamConfig.response_timeout),
        read_timeout=timeout("read_timeout", UpstreamConfig.read_timeout),
        access=access,
    )


def _default_upstream(top: Mapping[str, Any], names: set[str], p: Problems) -> str | None:
    default = top.get("default_upstream", "docker.io" if "docker.io" in names else None)
    if default in ("", None):
        return None
    if not isinstance(default, str) or default.lower() not in names:
        p.add(f"default_upstream: {show(default)} is not a configured upstream")
        return None
    return default.lower()


def _auth(raw: object, p: Problems) -> AuthConfig:
    section = fields.section(raw, "auth", {"htpasswd_file", "tokens_file", "realm"}, p)
    realm = p.value(lambda: fields.string(section, "realm", "auth", "edgecache"), "edgecache")
    if not realm or '"' in realm or "\\" in realm or not realm.isprintable():
        p.add("auth.realm: must be a non-empty printable string without quotes or backslashes")
    return AuthConfig(
        htpasswd_file=p.value(lambda: fields.existing_file(section, "htpasswd_file", "auth"), ""),
        tokens_file=p.value(lambda: fields.existing_file(section, "tokens_file", "auth"), ""),
        realm=realm)


def _tls(raw: object, p: Problems) -> TlsConfig:
    keys = {"cert_file", "key_file", "extra_names", "client_ca_file", *SITE_CA_KEYS}
    section = fields.section(raw, "tls", keys, p)
    cert = p.value(lambda: fields.existing_file(section, "cert_file", "tls"), "")
    key = p.value(lambda: fields.existing_file(section, "key_file", "tls"), "")
    if bool(section.get("cert_file")) != bool(section.get("key_file")):
        p.add("tls: cert_file and key_file go together (or neither, for a self-managed CA)")
    names = section.get("extra_names", [])
    if names is None:
        names = []
    if not isinstance(names, list) or not all(
            isinstance(n, str) and valid_host(n.removeprefix("*.")) for n in names):
        p.add("tls.extra_names: expected a list of DNS names or IP addresses")
        names = []
    client_ca = p.value(lambda: fields.existing_file(section, "client_ca_file", "tls"), "")
    ca_cert, ca_key = site_ca(section, p)
    return TlsConfig(cert_file=cert, key_file=key, extra_names=tuple(names),
                     client_ca_file=client_ca, ca_cert_file=ca_cert, ca_key_file=ca_key)


def _cache(raw: object, p: Problems) -> CacheConfig:
    section = fields.section(raw, "cache", {"tag_ttl", "revalidate_timeout", "negative_ttl"}, p)

    def duration(name: str, default: float) -> float:
        return p.value(lambda: fields.duration(section, name, "cache", default), default)

    return CacheConfig(
        tag_ttl=duration("tag_ttl", CacheConfig.tag_ttl),
        revalidate_timeout=duration("revalidate_timeout", CacheConfig.revalidate_timeout),
        negative_ttl=duration("negative_ttl", CacheConfig.negative_ttl),
    )


def _health(raw: object, p: Problems) -> HealthConfig:
    section = fields.section(raw, "health",
                             {"failure_threshold", "probe_min_interval", "probe_max_interval"}, p)
    threshold = p.value(lambda: fields.count(section, "failure_threshold", "health",
                                             HealthConfig.failure_threshold, most=1000), 1)
    low = p.value(lambda: fields.duration(section, "probe_min_interval", "health",
                                          HealthConfig.probe_min_interval), 1.0)
    high = p.value(lambda: fields.duration(section, "probe_max_interval", "health",
                                           HealthConfig.probe_max_interval), low)
    if low <= 0 or high < low:
        p.add("health.probe_min_interval: must be positive and at most probe_max_interval")
    return HealthConfig(failure_threshold=threshold, probe_min_interval=low,
                        probe_max_interval=high)


def _limits(raw: object, p: Problems) -> LimitsConfig:
    section = fields.section(raw, "limits", {"max_downloads", "max_readers_per_blob"}, p)

    def count(name: str, default: int, most: int) -> int:
        return p.value(lambda: fields.count(section, name, "limits", default, most), default)

    return LimitsConfig(
        max_downloads=count("max_downloads", LimitsConfig.max_downloads, 10_000),
        max_readers_per_blob=count("max_readers_per_blob", LimitsConfig.max_readers_per_blob,
                                   fields.MAX_COUNT))


def _log(raw: object, p: Problems) -> LogConfig:
    section = fields.section(raw, "log", {"level", "format"}, p)
    return LogConfig(
        level=p.value(lambda: fields.choice(section, "level", "log", "info",
                                            ("debug", "info", "warning", "error")), "info"),
        format=p.value(lambda: fields.choice(section, "format", "log", "plain", ("plain", "json")),
                       "plain"))
