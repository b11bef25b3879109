"""`edgecache du`: where the bytes are, by upstream and by image, in units a person reads, or
as JSON for scripts (`--json`, with each image's last use)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgecache.storage.index import Index
from edgecache.storage.inventory import Image, Inventory
from edgecache.storage.quota import Quota

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human(size: float) -> str:
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class UsageReport:
    used: int
    budget: int
    fs_free: int
    pinned: int
    by_upstream: dict[str, int]
    images: list[Image]
    untagged: int

    def lines(self) -> list[str]:
        out = [
            f"cache used   {human(self.used):>12}",
            f"budget       {human(self.budget):>12}",
            f"pinned       {human(self.pinned):>12}",
            f"disk free    {human(self.fs_free):>12}",
            "",
            "by upstream:",
        ]
        out += [f"  {name:<40} {human(size):>12}"
                for name, size in sorted(self.by_upstream.items())]
        out += [f"  {'(not reachable from any tag)':<40} {human(self.untagged):>12}", "",
                "by image:"]
        # last use is in `ls` and `du --json`: these lines stay "name size" for their readers
        out += [f"  {image.name:<60} {human(image.size):>12}"
                for image in sorted(self.images, key=lambda i: i.name)]
        return out

    def document(self) -> dict[str, Any]:
        """`du --json`: bytes as integers, times as ISO 8601 UTC."""
        return {
            "used_bytes": self.used, "budget_bytes": self.budget, "pinned_bytes": self.pinned,
            "filesystem_free_bytes": self.fs_free, "untagged_bytes": self.untagged,
            "upstreams": [{"upstream": name, "bytes": size}
                          for name, size in sorted(self.by_upstream.items())],
            "images": [image_document(image) for image in self.images],
        }


def image_document(image: Image) -> dict[str, Any]:
    return {"image": image.name, "upstream": image.upstream, "repository": image.repository,
            "tag": image.tag, "digest": image.digest, "bytes": image.size,
            "last_use": iso(image.last_use), "pinned": image.pinned}


def iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def when(moment: float | None) -> str:
    """A last use for a person: UTC to the minute."""
    text = iso(moment)
    return text[:16].replace("T", " ") if text else "-"


def usage_report(index: Index, quota: Quota, pins: tuple[str, ...]) -> UsageReport:
    inventory = Inventory(index, pins)
    sizes = inventory.sizes
    _, usage = quota.limits()
    by_upstream: dict[str, set[str]] = defaultdict(set)
    reachable: set[str] = set()
    images = inventory.images()
    for image in images:
        members = inventory.held([image.digest])
        by_upstream[image.upstream] |= members
        reachable |= members
    return UsageReport(
        used=sum(sizes.values()),
        budget=quota.budget(),
        fs_free=usage.fs_free,
        pinned=sum(sizes[d] for d in inventory.pinned),
        by_upstream={name: sum(sizes[d] for d in members) for name, members in by_upstream.items()},
        images=images,
        untagged=sum(size for digest, size in sizes.items() if digest not in reachable),
    )
