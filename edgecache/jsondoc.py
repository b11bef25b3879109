"""Reading JSON that someone else wrote: an upstream, a bundle, a client's token, a file.

`json.loads` raises ValueError for garbage but RecursionError for nesting deeper than the
parser takes (`[[[[...]]]]` a few thousand deep, well inside any size bound), and a caller that
catches only ValueError turns that into a 500. Every external document goes through `parse`,
which bounds the size first and raises one exception for every way the text can be unreadable.
"""

from __future__ import annotations

import json
from typing import Any


class JsonUnreadable(ValueError):
    """Not a JSON text we will read: too large, not JSON, not UTF-8, or nested too deep."""


def parse(data: bytes | str, limit: int) -> object:
    """The document in `data`, or JsonUnreadable; the caller checks its shape."""
    if len(data) > limit:
        raise JsonUnreadable(f"over {limit} bytes")
    try:
        return json.loads(data)
    except RecursionError:
        raise JsonUnreadable("nested too deeply") from None
    except ValueError as exc:  # also UnicodeDecodeError, and a number over 4,300 digits
        raise JsonUnreadable(str(exc)[:200]) from None


def parse_object(data: bytes | str, limit: int) -> dict[str, Any]:
    """`parse`, for documents that must be a JSON object."""
    doc = parse(data, limit)
    if not isinstance(doc, dict):
        raise JsonUnreadable("not a JSON object")
    return doc
