"""`edgecache du`: where the bytes are, by upstream and by image, in units a person reads, or
as JSON for scripts (`--json`, with each image's last use). Images, their sizes and pins are
`storage/images.py`'s (as `ls` and the status page have them); local (pushed) content is
counted against the disk, pinned implicitly, and marked local: its registry's line, its
images, and `local` in all (tagged or not)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgecache.storage.images import Image, Images, reading
from edgecache.storage.index import Index
from edgecache.storage.quota import Quota
from edgecache.units import human, iso


@dataclass(frozen=True)
class UsageReport:
    used: int
    budget: int
    fs_free: int
    pinned: int  # what eviction protects: the pins' closures and local content
    by_upstream: dict[str, int]
    images: list[Image]
    untagged: int
    local: int = 0  # every local digest, tagged or not
    registry: str | None = None  # the local registry's name (`local.registry`)

    def lines(self) -> list[str]:
        out = [
            f"cache used   {human(self.used):>12}",
            f"budget       {human(self.budget):>12}",
            f"pinned       {human(self.pinned):>12}",
            *([f"local        {human(self.local):>12}"] if self.registry else []),
            f"disk free    {human(self.fs_free):>12}",
            "",
            "by upstream:",
        ]
        out += [f"  {name:<40} {human(size):>12}" + ("  local" if name == self.registry else "")
                for name, size in sorted(self.by_upstream.items())]
        out += [f"  {'(not reachable from any tag)':<40} {human(self.untagged):>12}", "",
                "by image:"]
        # last use is in `ls` and `du --json`: these lines stay "name size" for their readers
        out += [f"  {image.name:<60} {human(image.size):>12}" + ("  local" if image.local else "")
                for image in sorted(self.images, key=lambda i: i.name)]
        return out

    def document(self) -> dict[str, Any]:
        """`du --json`: bytes as integers, times as ISO 8601 UTC."""
        return {
            "used_bytes": self.used, "budget_bytes": self.budget, "pinned_bytes": self.pinned,
            "filesystem_free_bytes": self.fs_free, "untagged_bytes": self.untagged,
            "local_bytes": self.local, "local_registry": self.registry,
            "upstreams": [{"upstream": name, "bytes": size, "local": name == self.registry}
                          for name, size in sorted(self.by_upstream.items())],
            "images": [image_document(image) for image in self.images],
        }


def image_document(image: Image) -> dict[str, Any]:
    return {"image": image.name, "upstream": image.upstream, "repository": image.repository,
            "tag": image.tag, "digest": image.digest, "bytes": image.size,
            "last_use": iso(image.last_use), "pinned": image.pinned, "local": image.local}


def usage_report(index: Index, quota: Quota, pins: tuple[str, ...],
                 local: str | None = None) -> UsageReport:
    images = Images(index, pins, local)
    listed = images.every()
    with reading():
        sizes = dict(index.digests())
        protected = images.protected()
        upstreams = [row[0] for row in index.sql.execute(
            "SELECT DISTINCT t.upstream FROM tags t JOIN blobs b ON b.digest=t.digest")]
        local_bytes = int(index.sql.execute(
            "SELECT COALESCE(SUM(b.size), 0) FROM blobs b JOIN links l ON l.digest=b.digest"
            " AND l.upstream=?", (local,)).fetchone()[0]) if local else 0
    _, usage = quota.limits()
    used = sum(sizes.values())
    return UsageReport(
        used=used,
        budget=quota.budget(),
        fs_free=usage.fs_free,
        pinned=sum(sizes.get(d, 0) for d in protected),
        by_upstream={name: images.held_bytes("SELECT digest FROM tags WHERE upstream=?", (name,))
                     for name in upstreams},
        images=listed,
        untagged=used - images.held_bytes("SELECT digest FROM tags"),
        local=local_bytes,
        registry=local,
    )
