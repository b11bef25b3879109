"""What `edgecache warm` reports: one row per image, and a line for the run."""

from __future__ import annotations

from dataclasses import dataclass

from edgecache.airgap.progress import plural, short_digest, table
from edgecache.oci import Digest
from edgecache.units import human


@dataclass
class ImageResult:
    reference: str
    digest: Digest | None = None
    size: int = 0  # manifests, configs and layers of the platforms warmed
    fetched: int = 0  # blob bytes this run downloaded
    cached: int = 0  # blob bytes that were already cached
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error:
            return f"failed: {self.error}"
        return "fetched" if self.fetched else "cached"


@dataclass
class WarmReport:
    results: list[ImageResult]
    endpoint: str
    seconds: float = 0.0
    fetched: int = 0  # unique blob bytes downloaded

    @property
    def failed(self) -> bool:
        return any(r.error for r in self.results)

    def lines(self) -> list[str]:
        rows = [[r.reference, short_digest(r.digest), human(r.size), human(r.fetched),
                 human(r.cached), r.status] for r in self.results]
        out = table(["IMAGE", "DIGEST", "SIZE", "FETCHED", "CACHED", "STATUS"], rows,
                    right=[2, 3, 4])
        ok = sum(1 for r in self.results if not r.error)
        rate = self.fetched / self.seconds if self.seconds > 0 else 0.0
        out.append(f"warmed {ok} of {plural(len(self.results), 'image')} through "
                   f"{self.endpoint}: "
                   f"{human(self.fetched)} fetched in {self.seconds:.1f}s ({human(rate)}/s)")
        return out
