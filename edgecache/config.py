"""The configuration: frozen value objects, loaded and validated in one place.

Only the CLI and the composition root call `load`; every component receives its own section.
Errors name the key path and the problem in one line (`upstreams.ghcr.io.url: ...`), because an
operator reading a failed unit's journal should not have to guess; and every problem of a file
is reported at once (`InvalidConfig.problems`), so fixing a config takes one pass, not one run
per mistake. The scalar parsers live in `configvalues`, the file reading in `configfile`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecache.cluster.settings import ClusterConfig
from edgecache.configfile import read_document
from edgecache.configvalues import (
    InvalidConfig,
    Problems,
    Size,
    parse_duration,
    parse_hostport,
    parse_size,
)
from edgecache.errors import ConfigError
from edgecache.ops.prefetchsettings import PrefetchConfig

if TYPE_CHECKING:
    from edgecache.local.settings import LocalConfig

__all__ = ["Config", "InvalidConfig", "Size", "from_mapping", "load", "parse_duration",
           "parse_hostport", "parse_size", "secret_files"]

DEFAULT_STORAGE = "/var/lib/edgecache"


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
    ca_cert_file: str = ""  # a site CA (edgecache/tls/site.py): each node issues its own from it
    ca_key_file: str = ""


@dataclass(frozen=True)
class AuthConfig:
    htpasswd_file: str = ""  # bcrypt entries, as `htpasswd -B` writes them
    tokens_file: str = ""  # static bearer tokens, one `name:token` (or `token`) per line
    realm: str = "edgecache"


@dataclass(frozen=True)
class StorageConfig:
    path: Path = Path(DEFAULT_STORAGE)
    max_size: Size | None = None
    min_free: Size = Size(percent=5.0)  # noqa: RUF009 - frozen, so sharing it is safe
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
        try:
            text = Path(self.password_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise ConfigError(f"upstreams.{self.name}.password_file {self.password_file}: "
                              f"{reason}") from None
        return text.rstrip("\r\n")


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
    prefetch: PrefetchConfig = field(default_factory=PrefetchConfig)
    local: LocalConfig | None = None  # the site's own registry (edgecache/local/settings.py)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


DEFAULT_UPSTREAMS: dict[str, dict[str, Any]] = {
    "docker.io": {"url": "https://registry-1.docker.io"},
    "ghcr.io": {"url": "https://ghcr.io"},
    "registry.k8s.io": {"url": "https://registry.k8s.io"},
    "quay.io": {"url": "https://quay.io"},
}


def load(path: str | None) -> Config:
    """Load and validate a YAML file, or the embedded defaults when `path` is None."""
    if path is None:
        return from_mapping({})
    document, duplicates = read_document(path)
    problems = Problems()
    problems.messages += duplicates
    config = _build(document if document is not None else {}, problems)
    problems.raise_any()
    return config


def from_mapping(raw: object) -> Config:
    """Validate a parsed YAML document; an empty document gives the embedded defaults."""
    problems = Problems()
    config = _build(raw, problems)
    problems.raise_any()
    return config


def _build(raw: object, problems: Problems) -> Config:
    """The section readers build the value objects above, so they import this module; this
    module imports them only when a configuration is read."""
    from edgecache.configsections import build

    return build(raw, problems)


def secret_files(config: Config) -> list[tuple[str, str]]:
    """(key, path) of every file holding a secret, for the start-up permission check."""
    found = [(f"upstreams.{name}.password_file", u.password_file)
             for name, u in config.upstreams.items() if u.password_file]
    found += [(f"auth.{k}", v) for k, v in (("htpasswd_file", config.auth.htpasswd_file),
                                             ("tokens_file", config.auth.tokens_file)) if v]
    found += [(f"tls.{k}", v) for k, v in (("key_file", config.tls.key_file),
                                            ("ca_key_file", config.tls.ca_key_file)) if v]
    if config.cluster.secret_file:
        found.append(("cluster.secret_file", config.cluster.secret_file))
    return found
