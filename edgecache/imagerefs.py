"""Image references an operator names to edgecache (`pins:`, `prefetch.images`, `edgecache pin`),
and the one rule they all follow: `registry/repository[:tag][@digest]` whose registry is a
configured upstream. A reference that cannot resolve would protect or fetch nothing, silently.
"""

from __future__ import annotations

from collections.abc import Container

from edgecache.configvalues import Problems, show
from edgecache.errors import EdgecacheError
from edgecache.oci import ImageReference


def reference_problem(text: object, upstreams: Container[str]) -> str | None:
    """Why `text` is not a usable reference (one line, naming it), or None."""
    if not isinstance(text, str):
        return f"{show(text)} is not an image reference"
    try:
        ref = ImageReference.parse(text)
    except EdgecacheError as exc:
        return f"{show(text)} is not an image reference: {exc}"
    if ref.registry not in upstreams:
        return f"{show(text)} must start with a configured upstream name"
    return None


def parse_pins(raw: object, names: set[str], p: Problems) -> tuple[str, ...]:
    """The `pins:` section: image references, parsed as the pin resolver will."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        p.add("pins: expected a list of image references")
        return ()
    for i, text in enumerate(raw):
        problem = reference_problem(text, names)
        if problem is not None:
            p.add(f"pins[{i}]: {problem}")
    return tuple(raw)
