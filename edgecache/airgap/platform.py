"""`--platform linux/amd64,linux/arm64/v8`: which entries of an image index to take.

An edge site usually runs one or two architectures; an index often lists six or more, plus
attestation entries (`unknown/unknown`). Filtering at warm and export time is what keeps a bundle
for a Raspberry Pi fleet from carrying s390x layers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgecache.errors import ConfigError

_PART = re.compile(r"[a-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(_PART.fullmatch(p) for p in parts):
            raise ConfigError(f"--platform: expected os/arch[/variant], got {text.strip()!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, platform: Mapping[str, Any] | None) -> bool:
        """Whether an index entry's `platform` object is this one. A filter without a variant
        takes every variant (linux/arm matches v6 and v7); an entry without a platform matches
        no filter."""
        if not platform:
            return False
        if platform.get("os") != self.os or platform.get("architecture") != self.architecture:
            return False
        return self.variant is None or platform.get("variant") == self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def parse_platforms(text: str | None) -> tuple[Platform, ...]:
    """A comma-separated list; empty or None means every platform."""
    if not text:
        return ()
    return tuple(Platform.parse(part) for part in text.split(",") if part.strip())


def wanted(platforms: Iterable[Platform], entry: Mapping[str, Any] | None) -> bool:
    """No filter takes everything, attestations included."""
    filters = tuple(platforms)
    return not filters or any(p.matches(entry) for p in filters)
