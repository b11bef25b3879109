"""What the cache holds, image by image, for the commands that read it whole (`ls`, `du`,
`verify --repair`): queries beside `index.py`, on its connection.

One read of the blobs, refs and tags tables into memory, then closures in Python: a command
run walks every tag anyway, and 100,000 blobs are a few MiB of dicts for the life of a
command, against one query per manifest per tag. The service never builds this (the status
page pages through the index instead).

An image is a tag; its size is what its closure holds (index → platform manifests → configs
and layers, each digest once; shared layers count in every image that uses them); its last
use is its manifest's access time as last flushed (the service writes them every
`storage.access_flush_interval`); it is pinned when the config's `pins:` or the runtime pins
(the `pins` table, storage/pins.py) protect its manifest.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from edgecache.errors import StorageError
from edgecache.policy import closure
from edgecache.storage import pins as runtime_pins
from edgecache.storage.eviction import pinned_digests
from edgecache.storage.index import Index


@dataclass(frozen=True, slots=True)
class Image:
    upstream: str
    repository: str
    tag: str
    digest: str
    size: int  # bytes held of its closure
    last_use: float  # its manifest's last access (Unix time)
    pinned: bool

    @property
    def name(self) -> str:
        return f"{self.upstream}/{self.repository}:{self.tag}"


class Inventory:
    """A snapshot of the index: sizes, access times, references and tags."""

    def __init__(self, index: Index, pins: Iterable[str] = ()) -> None:
        db = index.sql
        try:
            self._blobs: dict[str, tuple[int, float]] = {
                digest: (size, last_access) for digest, size, last_access in
                db.execute("SELECT digest, size, last_access FROM blobs")}
            self._children: dict[str, list[str]] = defaultdict(list)
            for parent, child in db.execute("SELECT parent, child FROM refs"):
                self._children[parent].append(child)
            self._tags: list[tuple[str, str, str, str]] = db.execute(
                "SELECT upstream, repository, tag, digest FROM tags ORDER BY 1, 2, 3").fetchall()
            pinned = pinned_digests(index, (*pins, *runtime_pins.references(index)))
        except sqlite3.DatabaseError as exc:  # locked past the timeout, damaged
            raise StorageError(f"cannot read the index: {exc}") from exc
        self.pinned = pinned & self._blobs.keys()

    @property
    def sizes(self) -> dict[str, int]:
        return {digest: size for digest, (size, _) in self._blobs.items()}

    def held(self, roots: Iterable[str]) -> set[str]:
        """The closure of `roots`, what of it the cache holds."""
        return closure(roots, lambda d: self._children.get(d, ())) & self._blobs.keys()

    def images(self) -> list[Image]:
        """Every tag whose manifest is held (a tag row outlives an evicted manifest)."""
        out = []
        for upstream, repository, tag, digest in self._tags:
            root = self._blobs.get(digest)
            if root is None:
                continue
            size = sum(self._blobs[d][0] for d in self.held([digest]))
            out.append(Image(upstream, repository, tag, digest, size, root[1],
                             digest in self.pinned))
        return out

    def using(self, digests: Iterable[str]) -> list[Image]:
        """The images whose closure holds any of `digests`: what removing them breaks."""
        wanted = set(digests)
        if not wanted:
            return []
        return [image for image in self.images()
                if wanted & closure([image.digest], lambda d: self._children.get(d, ()))]
