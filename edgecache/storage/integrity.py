"""Making the index agree with the files, and proving the files are what their names say.

`reconcile` runs at start unless the previous process stopped cleanly (it leaves a marker):
index rows whose file is gone are forgotten, published files the index does not know (a crash
between rename and index write) are adopted with their size and, for manifests, their media type
and references; anything in the blob tree that is not named by a digest is removed. Published
files were verified before their rename, so adopting their bytes is safe; adopting their
audience is not: the writer (a fill, a manifest fetch, an import) records which upstream the
content came from in the same transaction as the row, and a crash before it leaves a private
upstream's file with no owner, which would read as public. So an adopted file is linked to
`UNKNOWN_OWNER`, which the claim check treats as private: each route's upstream must confirm the
digest (a HEAD, then linked) before the file answers there; an import that carries the bytes
confirms it too. Why not record the owner before the rename instead (a pending row): that
takes a durable index write per publish (synchronous=NORMAL loses the last commits on power
loss while the renamed file survives), and a file whose pending row was lost is the same
unknown. The cost here falls only on the few files a crash caught: one HEAD per route.

`verify` re-hashes every blob (the `edgecache verify` command) and reports what does not match
its name, rows without files and files without rows. With repair it reconciles first (as
above), then removes each corrupt blob with the manifests that reference it and their rows: the
index never claims an image it cannot serve whole.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edgecache.errors import EdgecacheError
from edgecache.oci import (
    ALGORITHMS,
    MANIFEST_LIMIT,
    Digest,
    Hashing,
    manifest_children,
    manifest_media_type,
)
from edgecache.policy import with_parents
from edgecache.storage.blobs import BlobStore
from edgecache.storage.index import Index
from edgecache.storage.schema import UNKNOWN_OWNER

log = logging.getLogger(__name__)

HASH_CHUNK = 1 << 20


@dataclass
class Report:
    forgotten: list[str] = field(default_factory=list)  # indexed, file missing
    adopted: list[str] = field(default_factory=list)  # file present, not indexed
    removed: list[str] = field(default_factory=list)  # not a digest-named file
    corrupt: list[str] = field(default_factory=list)  # content does not match the name
    checked: int = 0

    @property
    def clean(self) -> bool:
        return not (self.forgotten or self.adopted or self.removed or self.corrupt)


_HEX = re.compile(r"[0-9a-f]+")


def _published(blobs: BlobStore) -> Iterator[tuple[str, str | None]]:
    """(path, "algorithm:hex") for every file of the blob tree; None where the file is not a
    digest in its place (`blobs/<algorithm>/<hex[:2]>/<hex>`). os.scandir and string checks:
    after a crash this walks every file before edgecache answers (100k blobs: ~0.1 s, against
    ~1.7 s with pathlib and a full digest parse per file)."""
    root = str(blobs.layout.blobs_dir)
    if not os.path.isdir(root):
        return
    for level1 in os.scandir(root):
        if not level1.is_dir(follow_symlinks=False):
            yield level1.path, None
            continue
        length = ALGORITHMS.get(level1.name)
        for level2 in os.scandir(level1.path):
            if not level2.is_dir(follow_symlinks=False):
                yield level2.path, None
                continue
            prefix = level2.name
            for entry in os.scandir(level2.path):
                if entry.is_dir(follow_symlinks=False):
                    for below, _, files in os.walk(entry.path):  # not a place for anything
                        for name in files:
                            yield os.path.join(below, name), None
                    continue
                name = entry.name
                ok = (length is not None and len(name) == length and name[:2] == prefix
                      and _HEX.fullmatch(name) is not None and entry.is_file(follow_symlinks=False))
                yield entry.path, f"{level1.name}:{name}" if ok else None


def _adopt(blobs: BlobStore, index: Index, path: Path, digest: Digest) -> None:
    size = path.stat().st_size
    media_type, children = None, []
    if size <= MANIFEST_LIMIT:
        with path.open("rb") as handle:
            head = handle.read(1)
        if head == b"{":
            body = path.read_bytes()
            try:
                media_type = manifest_media_type(body, None)
                children = manifest_children(body)
            except EdgecacheError:
                media_type = None
    index.record_blob(str(digest), size, media_type, children, upstreams=(UNKNOWN_OWNER,))


def reconcile(blobs: BlobStore, index: Index) -> Report:
    report = Report()
    indexed = dict(index.digests())
    for path, key in _published(blobs):
        if key is None:
            Path(path).unlink(missing_ok=True)
            report.removed.append(path)
            continue
        if key in indexed:
            del indexed[key]
            continue
        _adopt(blobs, index, Path(path), Digest.parse(key))
        report.adopted.append(key)
    report.forgotten = sorted(indexed)
    index.forget(report.forgotten)
    if not report.clean:
        log.warning("storage reconciled: %d forgotten, %d adopted, %d removed",
                    len(report.forgotten), len(report.adopted), len(report.removed))
    return report


def verify(blobs: BlobStore, index: Index, repair: bool,
           progress: Callable[[str, bool], None] | None = None) -> Report:
    """Re-hash every published blob; with `repair`, remove the corrupt ones."""
    report = reconcile(blobs, index) if repair else Report()
    for path, key in _published(blobs):
        if key is None:
            report.removed.append(path)
            continue
        report.checked += 1
        hashing = Hashing(Digest.parse(key))  # `key` is already canonical: reported as is
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                hashing.update(chunk)
        ok = hashing.matches()
        if progress is not None:
            progress(key, ok)
        if ok:
            continue
        report.corrupt.append(key)
        if repair:
            # the manifests that reference it go too: the index must never claim an image it
            # cannot serve whole (a later pull fetches them again)
            group = sorted(with_parents(key, index.parents))
            for member in group:
                blobs.remove(Digest.parse(member))
            index.forget(group)
    if not repair:
        indexed = {d for d, _ in index.digests()}
        present = {key for _, key in _published(blobs) if key is not None}
        report.forgotten = sorted(indexed - present)
        report.adopted = sorted(present - indexed)
    return report
