"""The Range header of a blob request: one `bytes=` range, as RFC 9110 defines it.

Positions are bounded before int() (which refuses more than 4,300 digits, a 500 once): a
position of more than 18 significant digits is beyond any blob, and the RFC's own rules say what
that means. Multi-part ranges are refused (416): no registry client asks for them.
"""

from __future__ import annotations

from edgecache.errors import RangeNotSatisfiable

_HUGE = 1 << 62  # beyond any blob: what a Range position of more than 18 digits means
_MAX_DIGITS = 18


def _ascii_digits(text: str) -> bool:
    """RFC 9110 DIGIT: str.isdigit alone accepts '²' (which int() refuses) and other scripts."""
    return text.isascii() and text.isdigit()


def _position(digits: str) -> int:
    """A Range position, bounded before int() (which refuses more than 4,300 digits): past 18
    significant digits it is beyond any blob, which the RFC's rules already handle (a first
    position past the end is unsatisfiable, a last one is clamped, a suffix means the whole)."""
    digits = digits.lstrip("0")
    return int(digits or "0") if len(digits) <= _MAX_DIGITS else _HUGE


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range as [start, end) within `size`, or None for the whole blob."""
    if header is None:
        return None
    unit, eq, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if (unit.strip().lower() != "bytes" or not eq or not dash or "," in spec
            or not (first or last) or not (_ascii_digits(first) or not first)
            or not (_ascii_digits(last) or not last)):
        raise RangeNotSatisfiable(f"unsupported Range {header[:100]!r} (one bytes range only)",
                                  size)
    if not first:
        suffix = _position(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable("empty suffix range", size)
        return max(0, size - suffix), size
    start = _position(first)
    end = min(_position(last) + 1, size) if last else size
    if start >= size or start >= end:
        raise RangeNotSatisfiable(f"range {header[:100]!r} outside a blob of {size} bytes", size)
    return start, end
