"""`edgecache du`: where the bytes are, by upstream and by image, in units a person reads."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from edgecache.policy import closure
from edgecache.storage.eviction import pinned_digests
from edgecache.storage.index import Index
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
    by_image: dict[str, int]
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
        out += [f"  {name:<60} {human(size):>12}" for name, size in sorted(self.by_image.items())]
        return out


def usage_report(index: Index, quota: Quota, pins: tuple[str, ...]) -> UsageReport:
    sizes = index.sizes()
    _, usage = quota.limits()
    by_upstream: dict[str, set[str]] = defaultdict(set)
    by_image: dict[str, int] = {}
    reachable: set[str] = set()
    for row in index.all_tags():
        if row.digest not in sizes:
            continue
        members = closure([row.digest], index.children) & sizes.keys()
        by_image[f"{row.upstream}/{row.repository}:{row.tag}"] = sum(sizes[d] for d in members)
        by_upstream[row.upstream] |= members
        reachable |= members
    pinned = pinned_digests(index, pins) & sizes.keys()
    return UsageReport(
        used=sum(sizes.values()),
        budget=quota.budget(),
        fs_free=usage.fs_free,
        pinned=sum(sizes[d] for d in pinned),
        by_upstream={name: sum(sizes[d] for d in members) for name, members in by_upstream.items()},
        by_image=by_image,
        untagged=sum(size for digest, size in sizes.items() if digest not in reachable),
    )
