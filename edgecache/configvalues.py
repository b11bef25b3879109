"""The scalar values a configuration holds (durations, sizes, addresses, URLs, registry names)
and the collector that gathers every problem in one configuration.

Each parser refuses what would fail later, far from the file: a value the event loop cannot
schedule (`.nan`, `.inf`, a 300-digit number), a host the socket layer cannot bind, a URL that
smuggles credentials past `password_file`. A refusal is one line that names the key and never
echoes a secret or a value too long to read; `Problems` keeps all of them, so an operator fixes
a configuration in one pass instead of one error per `check-config` run.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import SplitResult, urlsplit

from edgecache.errors import ConfigError
from edgecache.oci import HOSTNAME_RE, is_registry_name

T = TypeVar("T")

MAX_DURATION = 365 * 86400.0  # far beyond any sane timeout; keeps timers schedulable
MAX_SIZE = 1 << 60  # 1 EiB: fits SQLite's integers and a float gauge exactly enough
MIN_BARE_SIZE = 1 << 20  # a bare number below 1 MiB is almost surely a forgotten unit
_MAX_NUMBER_TEXT = 40  # digits; more is a typo, and int() refuses beyond 4,300 anyway
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}", re.ASCII)


class InvalidConfig(ConfigError):
    """Every problem of one configuration; `str()` joins them for callers that want one."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(one_line(p) for p in problems)
        super().__init__("; ".join(self.problems))


def one_line(message: str) -> str:
    """The last guard of the one-line rule: control characters shown escaped."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], message)


class Problems:
    """Collects the problems of one configuration instead of stopping at the first."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)

    def value(self, parse: Callable[[], T], fallback: T) -> T:
        """`parse()`, or `fallback` with its error recorded, so the checks after it still run."""
        try:
            return parse()
        except InvalidConfig as exc:
            self.messages.extend(exc.problems)
        except ConfigError as exc:
            self.messages.append(str(exc))
        return fallback

    def raise_any(self) -> None:
        if self.messages:
            raise InvalidConfig(self.messages)


def show(value: object) -> str:
    """A value for an error message: short, one line, and never a whole nested structure
    (a YAML alias bomb would take minutes to repr)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        digits = value.bit_length() * 0.30103
        return repr(value) if digits < _MAX_NUMBER_TEXT else f"a {digits:.0f}-digit number"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 80 else repr(value[:80]) + "..."
    return f"a {type(value).__name__}"


def key_name(name: object) -> str:
    """A mapping key as it appears in a key path: plain when it is a plain name."""
    if isinstance(name, str) and _PLAIN_KEY.fullmatch(name):
        return name
    return show(name)


# ---- durations and sizes ------------------------------------------------------------------------

_NUMBER, _UNIT = r"\d+(?:\.\d+)?", "(?:ms|s|m|h|d)"
_DURATION_PART = re.compile(f"({_NUMBER})({_UNIT})", re.ASCII)
_DURATION_RE = re.compile(f"^\\s*(?:{_NUMBER}\\s*{_UNIT}?|(?:{_NUMBER}{_UNIT})+)\\s*$", re.ASCII)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}
_DURATION_ORDER = ("d", "h", "m", "s", "ms")


def parse_duration(value: object, key: str) -> float:
    """Seconds from `"500ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"1m30s"`, `"1d"` or a plain number
    of seconds. A compound is Go's form (what Kubernetes and Prometheus users write): parts
    without spaces, largest unit first, each unit once (`"30s1m"` is a typo, not 90 s)."""
    expected = f"{key}: expected a duration such as '30s' or '1m30s', got {show(value)}"
    if isinstance(value, bool):
        raise ConfigError(expected)
    if isinstance(value, int | float):
        if isinstance(value, int) and value.bit_length() > 64:
            raise ConfigError(f"{key}: duration must be at most 365d, got {show(value)}")
        seconds = float(value)
    elif isinstance(value, str) and _DURATION_RE.match(value):
        seconds = _duration_text(value.strip().replace(" ", ""), key, expected)
    else:
        raise ConfigError(expected)
    if not math.isfinite(seconds):
        raise ConfigError(f"{key}: duration must be a finite number, got {show(value)}")
    if seconds < 0:
        raise ConfigError(f"{key}: duration must not be negative")
    if seconds > MAX_DURATION:
        raise ConfigError(f"{key}: duration must be at most 365d, got {show(value)}")
    return seconds


def _duration_text(text: str, key: str, expected: str) -> float:
    """The seconds of a matched duration text: a bare number, one part or a compound."""
    parts = _DURATION_PART.findall(text) or [(text, "")]
    if any(len(number) > _MAX_NUMBER_TEXT for number, _ in parts):
        raise ConfigError(f"{key}: duration must be at most 365d, got {show(text)}")
    if len(parts) > 1:
        ranks = [_DURATION_ORDER.index(unit) for _, unit in parts]
        if ranks != sorted(set(ranks)):
            raise ConfigError(f"{expected} (largest unit first, each once)")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?B?|B)?\s*$",
                      re.IGNORECASE | re.ASCII)
_PERCENT_RE = re.compile(r"^\s*(\d{1,3}(?:\.\d{1,30})?)\s*%\s*$", re.ASCII)


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
    """`20GiB`, `500MB`, `1.5G`, `80%` or a plain number of bytes.

    A bare number counts bytes, which is what nobody means by `min_free: 5`: below 1 MiB it
    must carry a unit (zero, "none", needs none). Refusing small bare numbers rather than all
    of them keeps exact byte counts (`max_size: 2097152`) valid while catching the forgotten
    unit, whose values are small (`5`, `20`, `500`)."""
    expected = f"{key}: expected a size such as '20GiB' or '10%', got {show(value)}"
    if isinstance(value, bool):
        raise ConfigError(expected)
    if isinstance(value, str) and "%" in value:
        m = _PERCENT_RE.match(value)
        percent = float(m.group(1)) if m else -1.0
        if 0 < percent <= 100:
            return Size(percent=percent)
        raise ConfigError(f"{key}: a percentage must be above 0 and at most 100, "
                          f"got {show(value)}")
    unit = ""
    if isinstance(value, int) and value >= 0:
        amount = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        if len(m.group(1)) > _MAX_NUMBER_TEXT:
            raise ConfigError(f"{key}: must be at most 1EiB, got {show(value)}")
        unit = (m.group(2) or "").upper()
        base = 1024 if unit.endswith("IB") or unit.endswith("I") else 1000
        factor = base ** "KMGTP".index(unit[0]) * base if unit and unit[0] in "KMGTP" else 1
        amount = int(float(m.group(1)) * factor)
    else:
        raise ConfigError(expected)
    if amount > MAX_SIZE:
        raise ConfigError(f"{key}: must be at most 1EiB, got {show(value)}")
    if not unit and 0 < amount < MIN_BARE_SIZE:
        raise ConfigError(f"{key}: {amount} would mean {amount} bytes; give a unit such as "
                          f"'{amount}GiB', '{amount}MB' or '{amount}%' (0 for none)")
    return Size(bytes=amount)


def parse_cap(value: object, key: str) -> Size | None:
    """A limit such as `max_size`: None (or "") for none, else a size above zero, since a cap
    of 0 would make the cache keep nothing rather than be unlimited."""
    if value in (None, ""):
        return None
    size = parse_size(value, key)
    if size.bytes == 0:
        raise ConfigError(f"{key}: 0 would cache nothing; null (the default) sets no fixed cap")
    return size


# ---- hosts, addresses and URLs ------------------------------------------------------------------

def valid_host(host: str) -> bool:
    """An IP address or a DNS name (RFC 1123 labels), as a socket can bind or resolve it."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return len(host) <= 253 and HOSTNAME_RE.fullmatch(host) is not None
    return True


def parse_hostport(value: str, key: str) -> tuple[str, int]:
    """Split `host:port`, `[v6]:port` or `:port`; the port must be 0-65535."""
    host, sep, port = value.rpartition(":")
    if (not sep or not (port.isascii() and port.isdigit()) or len(port) > 5
            or int(port) > 65535):
        raise ConfigError(f"{key}: expected host:port, got {show(value)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host or not valid_host(host):
            raise ConfigError(f"{key}: {show(host)} in brackets is not an IPv6 address")
    elif ":" in host:
        raise ConfigError(f"{key}: an IPv6 address goes in brackets, as in '[::1]:5000'; got "
                          f"{show(value)}")
    elif host and not valid_host(host):
        raise ConfigError(f"{key}: {show(host)} is neither an IP address nor a host name")
    return host or "0.0.0.0", int(port)


def parse_upstream_url(url: str, key: str) -> str:
    """An http(s) base URL without credentials, query or fragment, trailing `/` removed.

    Any user information is refused, an empty user name too (`http://:secret@host`): a URL
    is copied into every client's hosts.toml and into logs, so it must never hold a secret,
    and an upstream with credentials must be the one `access` and `password_file` describe."""
    if "@" in url:
        raise ConfigError(f"{key}: must not contain '@' (no user or password in the URL); "
                          "set username and password_file instead")
    if not url.isascii() or not url.isprintable() or " " in url:
        raise ConfigError(f"{key}: expected an http(s) URL of printable ASCII without spaces")
    parts = _split(url)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key}: expected an http(s) URL, got {show(url)}")
    if not valid_host(parts.hostname):
        raise ConfigError(f"{key}: {show(parts.hostname)} is neither an IP address nor a host "
                          "name")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError(f"{key}: must not carry a query or fragment")
    return url.rstrip("/")


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return None
    return parts


def upstream_name(name: object, key: str) -> str:
    """A registry `host[:port]`, lower-cased: host names are case-insensitive, and the router
    lower-cases what clients send, so `GHCR.IO:` could otherwise never be reached. The name
    also names a directory (`certs.d/<name>/`) in the client configuration."""
    text = name if isinstance(name, str) else ""
    if not is_registry_name(text):
        raise ConfigError(f"{key}: upstream name must be a registry host[:port], "
                          f"got {show(name)}")
    return text.lower()
