"""Reading one field of a configuration mapping: each reader raises ConfigError naming the key
path (`upstreams.ghcr.io.read_timeout: ...`); `section` records instead, so one unknown key
does not hide the next.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgecache.configvalues import Problems, key_name, parse_duration, parse_hostport, show
from edgecache.errors import ConfigError

MAX_COUNT = 1_000_000  # for counts and limits: far above any real value, far below trouble


def section(raw: object, key: str, allowed: set[str], p: Problems) -> dict[str, Any]:
    """The known keys of a mapping; each unknown key is a problem, not a silent no-op."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        p.add(f"{key}: expected a mapping, got {show(raw)}")
        return {}
    known: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(name, str) and name in allowed:
            known[name] = value
        else:
            where = f"{key}.{key_name(name)}" if key else key_name(name)
            p.add(f"{where}: unknown key (allowed: {', '.join(sorted(allowed))})")
    return known


def string(raw: Mapping[str, Any], name: str, key: str, default: str) -> str:
    value = raw.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{key}.{name}: expected a string, got {show(value)}")
    return value


def path(raw: Mapping[str, Any], name: str, key: str, default: str = "") -> str:
    value = string(raw, name, key, default)
    if "\x00" in value:
        raise ConfigError(f"{key}.{name}: a path must not contain a NUL byte")
    return value


def existing_file(section: Mapping[str, Any], name: str, key: str) -> str:
    value = path(section, name, key)
    if value and not Path(value).is_file():
        raise ConfigError(f"{key}.{name}: no such file {show(value)}")
    return value


def duration(raw: Mapping[str, Any], name: str, key: str, default: float) -> float:
    return parse_duration(raw.get(name, default), f"{key}.{name}")


def positive_duration(raw: Mapping[str, Any], name: str, key: str, default: float) -> float:
    """A timeout that 0 would turn into "never wait" (aiohttp) or "always fail" (asyncio)."""
    seconds = duration(raw, name, key, default)
    if seconds <= 0:
        raise ConfigError(f"{key}.{name}: must be above 0")
    return seconds


def count(section: Mapping[str, Any], name: str, key: str, default: int,
          most: int = MAX_COUNT) -> int:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ConfigError(f"{key}.{name}: expected a whole number from 1 to {most}, "
                          f"got {show(value)}")
    return value


def fraction(section: Mapping[str, Any], name: str, key: str, default: float) -> float:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(f"{key}.{name}: expected a fraction in (0, 1], got {show(value)}")
    return float(value)


def choice(section: Mapping[str, Any], name: str, key: str, default: str,
           choices: tuple[str, ...]) -> str:
    value = string(section, name, key, default).lower()
    if value not in choices:
        raise ConfigError(f"{key}.{name}: expected {', '.join(choices[:-1])} or {choices[-1]}, "
                          f"got {show(value)}")
    return value


def address(section: Mapping[str, Any], name: str, key: str, default: str | None
            ) -> str | None:
    """A `host:port` to listen on, or None (absent: the default; null or "": disabled)."""
    value = section.get(name, default)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key}.{name}: expected host:port, got {show(value)}")
    parse_hostport(value, f"{key}.{name}")
    return value


def distinct_listeners(p: Problems, addresses: Mapping[str, str | None]) -> None:
    """Two listeners on one port of one address: the second bind would fail at start."""
    wildcard = {"", "0.0.0.0", "::"}
    bound: list[tuple[str, str, int]] = []
    for key, value in addresses.items():
        if not value:
            continue
        try:
            host, port = parse_hostport(value, key)
        except ConfigError:
            continue  # reported where it was parsed
        for other, other_host, other_port in bound:
            if port and port == other_port and (
                    host == other_host or host in wildcard or other_host in wildcard):
                p.add(f"{key}: {value} takes the same port as {other}")
        bound.append((key, host, port))
