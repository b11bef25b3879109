"""`edgecache export`: cached images into one bundle, read straight from the store.

It reads through the `Store` (`storage/store.py`, the seam the service uses: tags, media types,
children, the blob files) and writes nothing into the storage, so it is safe while a service
runs: a blob evicted mid-export is still read through the descriptor already open (an unlinked
file lives on while open), and one evicted before it was opened fails the export cleanly.
Every blob is re-hashed as it is written: a cache that rotted on disk makes the export fail
rather than ship a bundle the far side would refuse.

The bundle is streamed (tar `w|` into a zstd stream writer, `threads=-1` for every core) into a
temporary file beside the output, fsynced and renamed: never the whole bundle in memory, never
twice on disk, never a half-written file under the output's name. Members are written in a fixed
order with fixed metadata (mtime 0, uid 0), so the same images give the same bytes.
"""

from __future__ import annotations

import sys
import tarfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, cast

import zstandard

from edgecache.airgap.bundle import (
    INDEX_NAME,
    LAYOUT_NAME,
    Root,
    blob_name,
    index_document,
    layout_document,
)
from edgecache.airgap.localcontent import local_name, referrer_roots, routes
from edgecache.airgap.manifest import Manifest
from edgecache.airgap.platform import Platform, wanted
from edgecache.airgap.progress import Progress, plural, short_digest, table
from edgecache.airgap.reference import full_name
from edgecache.airgap.referrers import referrers_of
from edgecache.airgap.tarwrite import (
    Counting,
    Verifying,
    add_bytes,
    add_dir,
    member_info,
    write_atomically,
)
from edgecache.config import Config
from edgecache.errors import EdgecacheError, NotCached, StorageError
from edgecache.metrics import Metrics
from edgecache.oci import (
    INDEX_TYPES,
    Digest,
    ImageReference,
    canonical_registry,
    official_repository,
    reach,
)
from edgecache.storage.blobs import BlobStore
from edgecache.storage.index import Index
from edgecache.storage.layout import Layout
from edgecache.storage.quota import Quota
from edgecache.storage.store import Store
from edgecache.units import human

COPY_BUFSIZE = tarfile.RECORDSIZE  # tarfile copies its whole buffer on every write: small


@dataclass
class ExportItem:
    root: Root
    members: dict[Digest, int] = field(default_factory=dict)  # the closure: digest -> size

    @property
    def size(self) -> int:
        return sum(self.members.values())


@dataclass
class ExportReport:
    items: list[ExportItem]
    blobs: int = 0  # unique blobs written
    raw_bytes: int = 0  # their total size
    bundle_bytes: int = 0  # what was written to the output
    skipped: list[str] = field(default_factory=list)  # --all: tags whose content is gone
    seconds: float = 0.0

    def lines(self, output: str) -> list[str]:
        rows = [[item.root.name or str(item.root.digest), short_digest(item.root.digest),
                 human(item.size), "exported"] for item in self.items]
        out = table(["IMAGE", "DIGEST", "SIZE", "STATUS"], rows, right=[2])
        ratio = self.bundle_bytes / self.raw_bytes if self.raw_bytes else 1.0
        rate = self.raw_bytes / self.seconds if self.seconds > 0 else 0.0
        out.append(f"exported {plural(len(self.items), 'image')}, {plural(self.blobs, 'blob')}, "
                   f"{human(self.raw_bytes)} to {output}: {human(self.bundle_bytes)} "
                   f"({ratio:.0%} of raw) in {self.seconds:.1f}s ({human(rate)}/s)")
        out += [f"skipped {name}: its content is no longer cached" for name in self.skipped]
        return out


class Exporter:
    def __init__(self, config: Config, store: Store,
                 platforms: Sequence[Platform] = ()) -> None:
        self._config = config
        self._store = store
        self._platforms = tuple(platforms)

    # ---- what goes in -------------------------------------------------------------------------

    def plan(self, references: Iterable[str], *, every_tag: bool = False,
             pinned: bool = False) -> ExportReport:
        """Resolve names to roots and collect each closure; NotCached names the first gap."""
        items: list[ExportItem] = []
        skipped: list[str] = []
        texts = list(references)
        if pinned:  # the config's and the runtime ones (`edgecache pin`)
            texts += [*self._config.pins, *self._store.runtime_pins()]
        for text in dict.fromkeys(texts):
            root = self._resolve(text)
            items.append(ExportItem(root, self._closure(root)))
        if every_tag:
            for upstream, repository, tag, digest in self._store.every_tag():
                name = full_name(upstream, repository, tag)
                if any(item.root.name == name for item in items):
                    continue
                try:
                    root = self._root(name, digest)
                    items.append(ExportItem(root, self._closure(root)))
                except NotCached:
                    skipped.append(name)  # a tag whose images were evicted: not an image now
        if not items:
            raise NotCached("nothing to export: no image named, and no tag cached")
        for item in list(items):  # each image's referrers go along (airgap/referrers.py)
            found = referrers_of(self._store, self._config.upstreams, item.root)
            if found is not None and not any(i.root.name == found[0] for i in items):
                try:
                    root = self._root(*found)
                    items.append(ExportItem(root, self._closure(root)))
                except NotCached:
                    skipped.append(found[0])  # referrers not all cached: warm the image again
            for name, digest in referrer_roots(self._store, local_name(self._config), item.root):
                if not any(i.root.digest == digest for i in items):  # pushed referrers
                    try:
                        root = self._root(name, digest)
                        items.append(ExportItem(root, self._closure(root)))
                    except NotCached:
                        skipped.append(name)
        return ExportReport(items, skipped=skipped)

    def _resolve(self, text: str) -> Root:
        ref = ImageReference.parse(text)
        upstream = canonical_registry(ref.registry, routes(self._config))
        if upstream is None:
            raise NotCached(f"{text}: registry {ref.registry!r} is not a configured upstream")
        repository = official_repository(upstream, ref.repository)
        name = full_name(upstream, repository, ref.tag, ref.digest)
        if ref.digest is not None:
            return self._root(name, Digest.parse(ref.digest))
        assert ref.tag is not None
        record = self._store.tag(upstream, repository, ref.tag)
        if record is None:
            raise NotCached(f"{name} is not cached; warm it first")
        return self._root(name, record.digest)

    def _root(self, name: str, digest: Digest) -> Root:
        media_type = self._store.media_type(digest)
        held = self._store.blob(digest)
        if media_type is None or held is None:
            raise NotCached(f"{name} ({digest}) is not cached; warm it first")
        return Root(name, digest, media_type, held.size)

    def _closure(self, root: Root) -> dict[Digest, int]:
        """Manifest → children through the index, level by level (bounded). With --platform,
        an index's entries for other platforms are left out."""
        members: dict[Digest, int] = {}
        missing: list[Digest] = []

        def step(digest: Digest) -> list[Digest]:
            if digest in members:
                return []
            held = self._store.blob(digest)
            if held is None:
                missing.append(digest)
                return []
            members[digest] = held.size
            return self._children(root, digest)

        reach([root.digest], step)
        if missing:
            hint = "" if self._platforms else " (or export only some platforms: --platform)"
            raise NotCached(f"{root.name}: {len(missing)} of its blobs are not cached "
                            f"(first: {missing[0]}); warm it first{hint}")
        return members

    def _children(self, root: Root, digest: Digest) -> list[Digest]:
        children = self._store.children(digest)
        media_type = self._store.media_type(digest)
        if not self._platforms or media_type not in INDEX_TYPES:
            return children
        body = self._store.read(digest) or b""
        try:
            manifest = Manifest.parse(body, media_type, str(digest))
        except EdgecacheError as exc:
            raise NotCached(f"{root.name}: cached index {digest} is unreadable: {exc}") from None
        keep = {c.digest for c in manifest.children if wanted(self._platforms, c.platform)}
        if not keep:
            shown = ",".join(str(p) for p in self._platforms)
            raise NotCached(f"{root.name}: its index has no manifest for {shown}")
        return [child for child in children if child in keep]

    # ---- writing ------------------------------------------------------------------------------

    def write(self, report: ExportReport, out: BinaryIO, level: int, progress: Progress) -> None:
        counter = Counting(out)
        compressor = zstandard.ZstdCompressor(level=level, threads=-1)
        written: set[Digest] = set()
        with compressor.stream_writer(cast(IO[bytes], counter), closefd=False) as zstd, \
                tarfile.open(fileobj=zstd, mode="w|", format=tarfile.PAX_FORMAT,
                             bufsize=COPY_BUFSIZE) as tar:
            add_bytes(tar, LAYOUT_NAME, layout_document())
            add_dir(tar, "blobs")
            for algorithm in sorted({d.algorithm for item in report.items for d in item.members}):
                add_dir(tar, f"blobs/{algorithm}")
            for item in report.items:
                for digest in sorted(item.members, key=str):
                    if digest in written:
                        continue
                    self._add_blob(tar, digest, item.members[digest], progress)
                    written.add(digest)
                    report.blobs += 1
                    report.raw_bytes += item.members[digest]
                progress.item_done()
            add_bytes(tar, INDEX_NAME, index_document([item.root for item in report.items]))
        report.bundle_bytes = counter.count

    def _add_blob(self, tar: tarfile.TarFile, digest: Digest, size: int,
                  progress: Progress) -> None:
        held = self._store.blob(digest)
        handle = held.open() if held is not None else None
        if held is None or handle is None:
            raise NotCached(f"{digest} was evicted during the export; run it again")
        with handle:
            if held.size != size:
                raise StorageError(f"cached {digest} changed size during the export")
            reader = Verifying(handle, digest, progress)
            tar.addfile(member_info(blob_name(digest), size), reader)
            reader.check()


def export(config: Config, references: Sequence[str], output: str, progress: Progress, *,
           level: int = 3, platforms: Sequence[Platform] = (), every_tag: bool = False,
           pinned: bool = False) -> ExportReport:
    """Plan, then stream the bundle to `output` (`-`: stdout). Reads the storage only."""
    layout = Layout(config.storage.path)
    if not layout.index_file.is_file():
        raise NotCached(f"no cache at {layout.root} (storage.path)")
    index = Index(layout.index_file)
    try:
        blobs = BlobStore(layout)
        quota = Quota(config.storage, blobs, index, config.pins, Metrics(),
                      local=local_name(config))  # a Store's part; export never publishes
        exporter = Exporter(config, Store(blobs, index, quota), platforms)
        report = exporter.plan(references, every_tag=every_tag, pinned=pinned)
        unique: dict[Digest, int] = {}
        for item in report.items:
            unique.update(item.members)
        progress.add_total(sum(unique.values()), items=len(report.items))
        started = time.monotonic()
        if output == "-":
            exporter.write(report, sys.stdout.buffer, level, progress)
            sys.stdout.buffer.flush()
        else:
            write_atomically(Path(output),
                             lambda handle: exporter.write(report, handle, level, progress))
        report.seconds = time.monotonic() - started
    finally:
        index.close()
    progress.finish()
    return report
