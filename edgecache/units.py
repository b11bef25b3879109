"""Sizes and times as a person reads them (CLI lines, log lines, reports), and as scripts read
them (ISO 8601 UTC). One place, so every command says a size and a moment the same way."""

from __future__ import annotations

from datetime import UTC, datetime

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human(size: float) -> str:
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def when(moment: float | None) -> str:
    """A last use for a person: UTC to the minute."""
    text = iso(moment)
    return text[:16].replace("T", " ") if text else "-"
