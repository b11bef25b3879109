"""Numbers in an upstream's response headers, read with bounds.

An upstream is untrusted input like a client: `str.isdigit` accepts '²' (which int() refuses)
and digits of other scripts, and int() refuses more than 4,300 digits (Python's conversion
limit), each a ValueError that would escape as a traceback from deep inside a download. Every
numeric header is read here: RFC 9110 DIGITs only, at most `MAX_DIGITS` of them (no blob or
counter has more than 18), else it is treated as absent or malformed.
"""

from __future__ import annotations

MAX_DIGITS = 18  # 10**18 bytes is an exabyte: anything longer is not a size


def number(value: str | None) -> int | None:
    """A non-negative decimal header value, or None if it is missing or not one."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_DIGITS or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def content_range(value: str | None) -> tuple[int | None, int | None]:
    """`bytes 100-199/1000` → (100, 1000); the total may be `*` (None). (None, None) when the
    header is missing or not a byte range."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    first, _, _ = span.partition("-")
    return number(first), number(total)


def leading_count(value: str | None) -> int | None:
    """The count before any `;` parameters (`RateLimit-Remaining: 76;w=21600`), bounded."""
    if not value:
        return None
    return number(value.split(";", 1)[0])
