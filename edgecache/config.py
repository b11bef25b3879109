"""The configuration: frozen value objects, loaded and validated in one place.

Only the CLI and the composition root call `load`; every component receives its own section.
Errors name the key path and the problem in one line (`upstreams.ghcr.io.url: ...`), because an
operator reading a failed unit's journal should not have to guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from edgecache.errors import ConfigError

DEFAULT_STORAGE = "/var/lib/edgecache"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object, key: str) -> float:
    """Seconds from `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"1d"` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration such as '30s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ConfigError(f"{key}: expected a duration such as '30s', got {value!r}")
    if seconds < 0:
        raise ConfigError(f"{key}: duration must not be negative")
    return seconds


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?B?|B)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Size:
    """A size in bytes, or a percentage of the filesystem holding the storage."""

    bytes: int | None = None
    percent: float | None = None

    def resolve(self, filesystem_total: int) -> int:
        if self.percent is not None:
            return int(filesystem_total * self.percent / 100)
        return self.bytes or 0


def parse_size(value: object, key: str) -> Size:
    """`20GiB`, `500MB`, `1.5G`, `80%` or a plain number of bytes."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a size such as '20GiB' or '10%', got {value!r}")
    if isinstance(value, int) and value >= 0:
        return Size(bytes=value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError:
                percent = -1.0
            if 0 < percent <= 100:
                return Size(percent=percent)
            raise ConfigError(f"{key}: a percentage must be above 0 and at most 100, got {value!r}")
        if m := _SIZE_RE.match(text):
            unit = (m.group(2) or "").upper()
            base = 1024 if unit.endswith("IB") or unit.endswith("I") else 1000
            factor = base ** "KMGTP".index(unit[0]) * base if unit and unit[0] in "KMGTP" else 1
            return Size(bytes=int(float(m.group(1)) * factor))
    raise ConfigError(f"{key}: expected a size such as '20GiB' or '10%', got {value!r}")


@dataclass(frozen=True)
class ListenConfig:
    http: str | None = "127.0.0.1:5000"
    https: str | None = "0.0.0.0:30003"
    shutdown_timeout: float = 20.0
    idle_timeout: float = 30.0  # closes idle connections and ones that never finish a request


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str = ""  # both empty: a self-managed CA and certificate under storage.path/tls
    key_file: str = ""
    extra_names: tuple[str, ...] = ()
    client_ca_file: str = ""  # set: clients must present a certificate signed by it (mTLS)


@dataclass(frozen=True)
class AuthConfig:
    htpasswd_file: str = ""  # bcrypt entries, as `htpasswd -B` writes them
    tokens_file: str = ""  # static bearer tokens, one `name:token` (or `token`) per line
    realm: str = "edgecache"


@dataclass(frozen=True)
class StorageConfig:
    path: Path = Path(DEFAULT_STORAGE)
    max_size: Size | None = None
    min_free: Size = Size(percent=5.0)
    high_watermark: float = 0.95
    low_watermark: float = 0.85
    access_flush_interval: float = 60.0


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    url: str
    username: str = ""
    password_file: str = ""
    connect_timeout: float = 5.0
    response_timeout: float = 10.0
    read_timeout: float = 60.0
    access: str = "public"  # or "authenticated": clients must log in to pull through it

    def password(self) -> str:
        """Read the password when needed, so it never sits in a config dump or a log line."""
        if not self.password_file:
            return ""
        return Path(self.password_file).read_text(encoding="utf-8").rstrip("\r\n")


@dataclass(frozen=True)
class CacheConfig:
    tag_ttl: float = 300.0
    revalidate_timeout: float = 2.0
    negative_ttl: float = 30.0  # how long an upstream's 404 is believed; 0: never remembered


@dataclass(frozen=True)
class HealthConfig:
    failure_threshold: int = 3
    probe_min_interval: float = 1.0
    probe_max_interval: float = 60.0


@dataclass(frozen=True)
class LimitsConfig:
    max_downloads: int = 32  # upstream blob downloads at once; more wait their turn
    max_readers_per_blob: int = 256  # clients following one download; more get 429


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "plain"


@dataclass(frozen=True)
class MetricsConfig:
    listen: str | None = "0.0.0.0:9630"


@dataclass(frozen=True)
class Config:
    listen: ListenConfig = field(default_factory=ListenConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    upstreams: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    default_upstream: str | None = "docker.io"
    cache: CacheConfig = field(default_factory=CacheConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    pins: tuple[str, ...] = ()


DEFAULT_UPSTREAMS: dict[str, dict[str, Any]] = {
    "docker.io": {"url": "https://registry-1.docker.io"},
    "ghcr.io": {"url": "https://ghcr.io"},
    "registry.k8s.io": {"url": "https://registry.k8s.io"},
    "quay.io": {"url": "https://quay.io"},
}


def _section(raw: object, key: str, allowed: set[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(raw).__name__}")
    for name in raw:
        if name not in allowed:
            where = f"{key}.{name}" if key else str(name)
            raise ConfigError(f"{where}: unknown key (allowed: {', '.join(sorted(allowed))})")
    return raw


def _string(raw: Mapping[str, Any], name: str, key: str, default: str) -> str:
    value = raw.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{key}.{name}: expected a string, got {value!r}")
    return value


def parse_hostport(value: str, key: str) -> tuple[str, int]:
    """Split `host:port`, `[v6]:port` or `:port`; the port must be 0-65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ConfigError(f"{key}: expected host:port, got {value!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


def _upstream(name: str, raw: object, key: str) -> UpstreamConfig:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9.-]+(:\d+)?", name):
        raise ConfigError(f"{key}: upstream name must be a registry host[:port], got {name!r}")
    fields = {"url", "username", "password_file", "connect_timeout", "response_timeout",
              "read_timeout", "access"}
    if isinstance(raw, dict) and "password" in raw:
        raise ConfigError(f"{key}.password: passwords are never inlined; put it in a file "
                          "readable only by edgecache and set password_file")
    section = _section(raw, key, fields)
    url = _string(section, "url", key, "")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = "a URL with credentials" if "@" in url else repr(url)  # never echo a password
        raise ConfigError(f"{key}.url: expected an http(s) URL, got {shown}")
    if parts.query or parts.fragment or parts.username:
        raise ConfigError(f"{key}.url: must not carry credentials, query or fragment")
    username = _string(section, "username", key, "")
    password_file = _string(section, "password_file", key, "")
    if password_file and not Path(password_file).is_file():
        raise ConfigError(f"{key}.password_file: no such file {password_file!r}")
    if bool(username) != bool(password_file):
        raise ConfigError(f"{key}: username and password_file go together")
    access = _string(section, "access", key, "authenticated" if username else "public")
    if access not in ("public", "authenticated"):
        raise ConfigError(f"{key}.access: expected public or authenticated, got {access!r}")
    return UpstreamConfig(
        name=name,
        url=url.rstrip("/"),
        username=username,
        password_file=password_file,
        connect_timeout=_duration(section, "connect_timeout", key, UpstreamConfig.connect_timeout),
        response_timeout=_duration(section, "response_timeout", key,
                                   UpstreamConfig.response_timeout),
        read_timeout=_duration(section, "read_timeout", key, UpstreamConfig.read_timeout),
        access=access,
    )


def _duration(raw: Mapping[str, Any], name: str, key: str, default: float) -> float:
    return parse_duration(raw.get(name, default), f"{key}.{name}")


def _cache(raw: object) -> CacheConfig:
    section = _section(raw, "cache", {"tag_ttl", "revalidate_timeout", "negative_ttl"})
    return CacheConfig(
        tag_ttl=_duration(section, "tag_ttl", "cache", CacheConfig.tag_ttl),
        revalidate_timeout=_duration(section, "revalidate_timeout", "cache",
                                     CacheConfig.revalidate_timeout),
        negative_ttl=_duration(section, "negative_ttl", "cache", CacheConfig.negative_ttl),
    )


def _health(raw: object) -> HealthConfig:
    section = _section(raw, "health",
                       {"failure_threshold", "probe_min_interval", "probe_max_interval"})
    threshold = section.get("failure_threshold", HealthConfig.failure_threshold)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ConfigError(f"health.failure_threshold: expected a positive integer, got "
                          f"{threshold!r}")
    low = _duration(section, "probe_min_interval", "health", HealthConfig.probe_min_interval)
    high = _duration(section, "probe_max_interval", "health", HealthConfig.probe_max_interval)
    if low <= 0 or high < low:
        raise ConfigError("health.probe_min_interval: must be positive and at most "
                          "probe_max_interval")
    return HealthConfig(failure_threshold=threshold, probe_min_interval=low,
                        probe_max_interval=high)


def from_mapping(raw: object) -> Config:
    """Validate a parsed YAML document; an empty document gives the embedded defaults."""
    top = _section(raw, "", {"listen", "tls", "auth", "storage", "upstreams",
                             "default_upstream", "cache", "health", "log", "metrics", "limits",
                             "pins"})
    listen = _section(top.get("listen"), "listen",
                      {"http", "https", "shutdown_timeout", "idle_timeout"})
    addresses: dict[str, str | None] = {}
    for name, default in (("http", ListenConfig.http), ("https", ListenConfig.https)):
        value = listen.get(name, default)
        if value in (None, ""):
            value = None
        elif not isinstance(value, str):
            raise ConfigError(f"listen.{name}: expected host:port, got {value!r}")
        else:
            parse_hostport(value, f"listen.{name}")
        addresses[name] = value
    if addresses["http"] is None and addresses["https"] is None:
        raise ConfigError("listen: at least one of http and https must be set")
    storage_config = _storage(top.get("storage"))
    raw_upstreams = top.get("upstreams", DEFAULT_UPSTREAMS)
    if not isinstance(raw_upstreams, dict) or not raw_upstreams:
        raise ConfigError("upstreams: expected a non-empty mapping of registry name to settings")
    upstreams = {
        str(name): _upstream(name, value, f"upstreams.{name}")
        for name, value in raw_upstreams.items()
    }
    auth = _auth(top.get("auth"))
    locked = [name for name, u in upstreams.items() if u.access == "authenticated"]
    if locked and not (auth.htpasswd_file or auth.tokens_file):
        raise ConfigError(f"auth: upstreams {', '.join(sorted(locked))} are authenticated; set "
                          "auth.htpasswd_file or auth.tokens_file for the clients' credentials")
    default = top.get("default_upstream", "docker.io" if "docker.io" in upstreams else None)
    if default in ("", None):
        default = None
    elif not isinstance(default, str) or default not in upstreams:
        raise ConfigError(f"default_upstream: {default!r} is not a configured upstream")
    log = _section(top.get("log"), "log", {"level", "format"})
    level = _string(log, "level", "log", "info").lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log.level: expected debug, info, warning or error, got {level!r}")
    log_format = _string(log, "format", "log", "plain").lower()
    if log_format not in ("plain", "json"):
        raise ConfigError(f"log.format: expected plain or json, got {log_format!r}")
    metrics = _section(top.get("metrics"), "metrics", {"listen"})
    metrics_listen = metrics.get("listen", MetricsConfig.listen)
    if metrics_listen in ("", None):
        metrics_listen = None
    elif not isinstance(metrics_listen, str):
        raise ConfigError(f"metrics.listen: expected host:port, got {metrics_listen!r}")
    else:
        parse_hostport(metrics_listen, "metrics.listen")
    return Config(
        listen=ListenConfig(
            http=addresses["http"], https=addresses["https"],
            shutdown_timeout=_duration(listen, "shutdown_timeout", "listen",
                                       ListenConfig.shutdown_timeout),
            idle_timeout=_duration(listen, "idle_timeout", "listen", ListenConfig.idle_timeout)),
        tls=_tls(top.get("tls")),
        auth=auth,
        storage=storage_config,
        upstreams=upstreams,
        default_upstream=default,
        cache=_cache(top.get("cache")),
        health=_health(top.get("health")),
        log=LogConfig(level=level, format=log_format),
        metrics=MetricsConfig(listen=metrics_listen),
        limits=_limits(top.get("limits")),
        pins=_pins(top.get("pins"), upstreams),
    )


def _storage(raw: object) -> StorageConfig:
    section = _section(raw, "storage", {"path", "max_size", "min_free", "high_watermark",
                                        "low_watermark", "access_flush_interval"})
    path = _string(section, "path", "storage", DEFAULT_STORAGE)
    if not path:
        raise ConfigError("storage.path: must not be empty")
    max_size = section.get("max_size")
    high = section.get("high_watermark", StorageConfig.high_watermark)
    low = section.get("low_watermark", StorageConfig.low_watermark)
    for name, value in (("high_watermark", high), ("low_watermark", low)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise ConfigError(f"storage.{name}: expected a fraction in (0, 1], got {value!r}")
    if low > high:
        raise ConfigError("storage.low_watermark: must not be above high_watermark")
    return StorageConfig(
        path=Path(path),
        max_size=None if max_size in (None, "") else parse_size(max_size, "storage.max_size"),
        min_free=parse_size(section.get("min_free", "5%"), "storage.min_free"),
        high_watermark=float(high),
        low_watermark=float(low),
        access_flush_interval=_duration(section, "access_flush_interval", "storage",
                                        StorageConfig.access_flush_interval),
    )


def _positive_int(section: Mapping[str, Any], name: str, key: str, default: int) -> int:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}.{name}: expected a positive integer, got {value!r}")
    return value


def _limits(raw: object) -> LimitsConfig:
    section = _section(raw, "limits", {"max_downloads", "max_readers_per_blob"})
    return LimitsConfig(
        max_downloads=_positive_int(section, "max_downloads", "limits",
                                    LimitsConfig.max_downloads),
        max_readers_per_blob=_positive_int(section, "max_readers_per_blob", "limits",
                                           LimitsConfig.max_readers_per_blob))


def _existing_file(section: Mapping[str, Any], name: str, key: str) -> str:
    value = _string(section, name, key, "")
    if value and not Path(value).is_file():
        raise ConfigError(f"{key}.{name}: no such file {value!r}")
    return value


def _auth(raw: object) -> AuthConfig:
    section = _section(raw, "auth", {"htpasswd_file", "tokens_file", "realm"})
    realm = _string(section, "realm", "auth", "edgecache")
    if not realm or '"' in realm or "\\" in realm:
        raise ConfigError("auth.realm: must be a non-empty string without quotes")
    return AuthConfig(htpasswd_file=_existing_file(section, "htpasswd_file", "auth"),
                      tokens_file=_existing_file(section, "tokens_file", "auth"), realm=realm)


def secret_files(config: Config) -> list[tuple[str, str]]:
    """(key, path) of every file holding a secret, for the start-up permission check."""
    found = [(f"upstreams.{name}.password_file", u.password_file)
             for name, u in config.upstreams.items() if u.password_file]
    found += [(f"auth.{k}", v) for k, v in (("htpasswd_file", config.auth.htpasswd_file),
                                             ("tokens_file", config.auth.tokens_file)) if v]
    if config.tls.key_file:
        found.append(("tls.key_file", config.tls.key_file))
    return found


def _tls(raw: object) -> TlsConfig:
    section = _section(raw, "tls", {"cert_file", "key_file", "extra_names", "client_ca_file"})
    cert = _string(section, "cert_file", "tls", "")
    key = _string(section, "key_file", "tls", "")
    if bool(cert) != bool(key):
        raise ConfigError("tls: cert_file and key_file go together (or neither, for a "
                          "self-managed CA)")
    for name, value in (("cert_file", cert), ("key_file", key)):
        if value and not Path(value).is_file():
            raise ConfigError(f"tls.{name}: no such file {value!r}")
    names = section.get("extra_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError("tls.extra_names: expected a list of DNS names or IP addresses")
    return TlsConfig(cert_file=cert, key_file=key, extra_names=tuple(names),
                     client_ca_file=_existing_file(section, "client_ca_file", "tls"))


def _pins(raw: object, upstreams: Mapping[str, UpstreamConfig]) -> tuple[str, ...]:
    """Image references `registry/repository:tag` or `registry/repository@digest`; the
    registry must be a configured upstream (parsed fully by the pin resolver)."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ConfigError("pins: expected a list of image references")
    for i, ref in enumerate(raw):
        registry = ref.split("/", 1)[0]
        if "/" not in ref or registry not in upstreams:
            raise ConfigError(f"pins[{i}]: {ref!r} must start with a configured upstream name")
    return tuple(raw)


def load(path: str | None) -> Config:
    """Load and validate a YAML file, or the embedded defaults when `path` is None."""
    if path is None:
        return from_mapping({})
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from exc
    return from_mapping(raw if raw is not None else {})
