"""A small TOML writer for documents read with tomllib: merging into a client's existing file
means writing back every key we do not own, whatever its type.

Tables named in `inline` have each entry written as one inline table on its own line
(`"https://[::1]:5000" = { ... }`): containerd 1.6's TOML parser (go-toml v1) rejects a table
header whose key holds `]` (an IPv6 URL), and orders hosts by the line each entry starts on.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping

_BARE = re.compile(r"[A-Za-z0-9_-]+")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
            "\f": "\\f", "\r": "\\r"}


def string(text: str) -> str:
    """A TOML basic string: control characters (and DEL) escaped, the rest as it is (JSON's
    surrogate-pair escapes are not TOML)."""
    return '"' + "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if c < " " or c == "\x7f"
                                             else c) for c in text) + '"'


def key(name: str) -> str:
    return name if _BARE.fullmatch(name) else string(name)


def value(item: object) -> str:
    """One TOML value, inline."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, str):
        return string(item)
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        if math.isnan(item):
            return "nan"
        if math.isinf(item):
            return "inf" if item > 0 else "-inf"
        return repr(item)
    if isinstance(item, datetime.date | datetime.time):
        return item.isoformat()
    if isinstance(item, list | tuple):
        return "[" + ", ".join(value(v) for v in item) + "]"
    if isinstance(item, Mapping):
        inner = ", ".join(f"{key(k)} = {value(v)}" for k, v in item.items())
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"no TOML form for {type(item).__name__}")


def dumps(doc: Mapping[str, object], inline: frozenset[str] = frozenset(),
          header: str = "") -> str:
    """`doc` as TOML text; `header` (comment lines) goes first."""
    lines = [header.rstrip("\n")] if header else []
    _table(doc, [], inline, lines)
    return "\n".join(lines).strip("\n") + "\n"


def _table(doc: Mapping[str, object], path: list[str], inline: frozenset[str],
           lines: list[str]) -> None:
    dotted = ".".join(path)
    plain = {k: v for k, v in doc.items() if not isinstance(v, Mapping) or dotted in inline}
    tables = {k: v for k, v in doc.items() if k not in plain}
    if path and (plain or not tables):
        lines += ["", f"[{'.'.join(key(p) for p in path)}]"]
    indent = "  " if path else ""
    lines += [f"{indent}{key(k)} = {value(v)}" for k, v in plain.items()]
    for name, sub in tables.items():
        assert isinstance(sub, Mapping)
        _table(sub, [*path, name], inline, lines)
