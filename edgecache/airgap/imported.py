"""What `edgecache import` did, per image and in total: the table and summary it prints, and the
pin lines `--pin` suggests."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgecache.airgap.progress import plural, short_digest, table
from edgecache.airgap.reference import TagTarget
from edgecache.oci import Digest
from edgecache.units import human


@dataclass
class ImportedImage:
    name: str  # what index.json called it, or the digest
    digest: Digest
    size: int = 0  # the closure's bytes
    new: int = 0  # bytes this import added (the rest was cached already)
    tag: TagTarget | None = None
    partial: str = ""  # "1 of 3 platforms" when an index came without some of its manifests
    members: tuple[Digest, ...] = ()  # the closure's digests


@dataclass
class ImportReport:
    images: list[ImportedImage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    new_bytes: int = 0
    cached_bytes: int = 0
    blobs: int = 0
    compressed: bool = False
    seconds: float = 0.0

    def lines(self) -> list[str]:
        rows = []
        for image in self.images:
            status = "imported"
            if image.partial:
                status += f" ({image.partial})"
            status += f", tagged {image.tag}" if image.tag else ", not tagged"
            rows.append([image.name, short_digest(image.digest), human(image.size),
                         human(image.new), status])
        out = table(["IMAGE", "DIGEST", "SIZE", "NEW", "STATUS"], rows, right=[2, 3])
        total = self.new_bytes + self.cached_bytes
        rate = total / self.seconds if self.seconds > 0 else 0.0
        out.append(f"imported {plural(len(self.images), 'image')}: {human(self.new_bytes)} new "
                   f"in {plural(self.blobs, 'blob')}, {human(self.cached_bytes)} already "
                   f"cached, in {self.seconds:.1f}s ({human(rate)}/s)")
        return out

    def pins(self) -> list[str]:
        """Pin lines by tag and digest: exact content, and readable."""
        out = []
        for image in self.images:
            if image.tag is not None:
                out.append(f"{image.tag}@{image.digest}")
        return out
