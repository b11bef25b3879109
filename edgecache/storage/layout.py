"""Every on-disk path, in one pure module. Paths are built only from validated `Digest`s.

```
<storage.path>/
  blobs/<algorithm>/<hex[0:2]>/<hex>   verified content: layers, configs and manifests alike
  tmp/<random>.part                    downloads in progress; swept at start
  tmp/upload-<id>.part                 push sessions: kept at start while their row lives
  index.db (+ -wal, -shm)              SQLite: manifests' media types, tags, sizes, access times
  clean-shutdown                       present only between a clean stop and the next start
```
Manifests live in the same content-addressed tree as blobs: they are byte-exact blobs whose media
type the index remembers, so an image and its layers share one store and one eviction policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecache.oci import Digest


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def upload(self, session: str) -> Path:
        """A push session's partial file (`session`: our own hex id, never a client's text)."""
        return self.tmp_dir / f"upload-{session}.part"

    @property
    def index_file(self) -> Path:
        return self.root / "index.db"

    @property
    def clean_marker(self) -> Path:
        return self.root / "clean-shutdown"

    def blob(self, digest: Digest) -> Path:
        return Path(self.blob_name(digest))

    def blob_name(self, digest: Digest) -> str:
        """`blob` as a string, built in one step: the cached-blob path of every request stats
        and opens it, and four pathlib joins cost more than the syscalls."""
        return f"{self.root}/blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"
