"""`edgecache import`: a bundle into the cache, in two phases, so a bad one changes nothing.

1. Stage. Each blob member is written through a `BlobWriter` into `tmp/` and its digest checked
   as it arrives; it stays there, unpublished. Blobs the cache already holds are skipped: not
   read when the cache serves them to every route anyway; hashed (not written) when they are
   restricted (linked to a private upstream, or adopted with an unknown owner), because this
   import links them to the bundle's upstream: a member of the right size under a private digest
   must prove it holds the bytes, or it would open them to that upstream's clients. `index.json`
   and `oci-layout` are kept in memory (both are small, capped). Nothing else touches the
   storage in this phase: not the blob tree; the index is only read.
2. Check, once the whole archive has been read (a plain OCI tar may carry `index.json` first or
   last): the layout file, index.json, and for every root the closure, read strictly: each
   manifest parses as the kind its descriptor declares, every config and layer is present with
   the declared size. An index may lack some platform manifests (an export with `--platform`),
   never all of them.
3. Publish: reserve the new bytes with the quota (evicting as a pull would; refused when they
   cannot fit), then blobs before the manifests that reference them, children before parents,
   each renamed into place and recorded with its links in one transaction; tags last. A
   running service reads the index and the files per request, so it serves the imported
   images at once.

Any refusal before phase 3 removes every staged file: the blob tree, the index and `tmp/` are
as they were. Pins are configuration, not state, so `--pin` prints the lines to add.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import BinaryIO

from edgecache.airgap.bundle import REF_NAME, check_layout, parse_index
from edgecache.airgap.imported import ImportedImage, ImportReport
from edgecache.airgap.localcontent import local_name, local_route, record_subjects, routes
from edgecache.airgap.manifest import Descriptor, Manifest
from edgecache.airgap.progress import Progress, short_digest
from edgecache.airgap.reference import TagTarget, tag_for
from edgecache.airgap.staging import MAX_MEMBERS, Staging
from edgecache.config import Config
from edgecache.errors import BundleInvalid, ManifestInvalid, StorageError
from edgecache.metrics import Metrics
from edgecache.oci import MANIFEST_LIMIT, Digest
from edgecache.storage.index import Index
from edgecache.storage.quota import DiskUsage, Quota, disk_usage
from edgecache.storage.store import Record, Store
from edgecache.units import human

MAX_DEPTH = 4  # index → index → manifest is already unusual


@dataclass
class _Plan:
    roots: list[tuple[Descriptor, ImportedImage]]
    manifests: dict[Digest, tuple[str, list[Digest]]]  # -> (media type, children); post-order
    blobs: dict[Digest, int]  # configs and layers: digest -> size


class Importer(Staging):
    """The check and publish phases, over what `Staging` read (phase 1)."""

    async def run(self, source: BinaryIO) -> ImportReport:
        try:
            self._blobs.prepare(sweep=False)
        except OSError as exc:
            raise StorageError(f"storage.path {self._layout.root}: {exc.strerror or exc}") \
                from exc
        try:
            self._stage(source)
            plan = self._check()
            await self._publish(plan)
        finally:
            self._discard()
            if self._reading is not None:
                self._reading.close()
        return self.report

    # ---- 2. check -----------------------------------------------------------------------------

    def _check(self) -> _Plan:
        if self._layout_json is None:
            raise BundleInvalid("not an OCI image layout: the bundle has no oci-layout file")
        check_layout(self._layout_json)
        if self._index_json is None:
            raise BundleInvalid("the bundle has no index.json (truncated, or not an OCI layout)")
        plan = _Plan([], {}, {})
        for descriptor in parse_index(self._index_json):
            image = ImportedImage(descriptor.annotations.get(REF_NAME) or str(descriptor.digest),
                                  descriptor.digest)
            members: dict[Digest, int] = {}
            self._visit(descriptor, "index.json", 0, plan, members, image)
            image.size = sum(members.values())
            image.members = tuple(members)
            image.new = sum(size for digest, size in members.items() if digest in self._staged)
            image.tag, warning = tag_for(descriptor.annotations, descriptor.digest,
                                         routes(self._config), self._repository)
            if warning:
                self._warn(warning)
            plan.roots.append((descriptor, image))
        for digest in plan.manifests:
            plan.blobs.pop(digest, None)
        return plan

    def _visit(self, descriptor: Descriptor, where: str, depth: int, plan: _Plan,
               members: dict[Digest, int], image: ImportedImage) -> None:
        digest = descriptor.digest
        size = self._size(digest)
        if size is None:
            raise BundleInvalid(f"{where} references {digest}, which is not in the bundle")
        if descriptor.size is not None and descriptor.size != size:
            raise BundleInvalid(f"{where} says {digest} is {descriptor.size} bytes; it is {size}")
        members[digest] = size
        if digest in plan.manifests:
            self._collect(digest, plan, members)
            return
        if depth > MAX_DEPTH:
            raise BundleInvalid(f"{digest}: manifests nested deeper than {MAX_DEPTH} levels")
        if size > MANIFEST_LIMIT:
            raise BundleInvalid(f"{where} references {digest} as a manifest, but it is "
                                f"{size} bytes")
        body = self._body(digest)
        try:
            manifest = Manifest.parse(body, descriptor.media_type, str(digest))
        except ManifestInvalid as exc:
            raise BundleInvalid(f"{where} references {digest} as a manifest, but it is not "
                                f"one: {exc}") from None
        if manifest.is_index:
            present = [c for c in manifest.children if self._size(c.digest) is not None]
            if manifest.children and not present:
                raise BundleInvalid(f"index {digest}: none of its {len(manifest.children)} "
                                    "manifests are in the bundle")
            if len(present) < len(manifest.children):
                image.partial = f"{len(present)} of {len(manifest.children)} platforms"
            for child in present:
                self._visit(child, f"index {digest}", depth + 1, plan, members, image)
        else:
            for blob in manifest.blobs():
                blob_size = self._size(blob.digest)
                if blob_size is None:
                    raise BundleInvalid(f"image {digest}: {blob.digest} is not in the bundle")
                if blob.size is not None and blob.size != blob_size:
                    raise BundleInvalid(f"image {digest} says {blob.digest} is {blob.size} "
                                        f"bytes; it is {blob_size}")
                members[blob.digest] = blob_size
                plan.blobs[blob.digest] = blob_size
        plan.manifests[digest] = (manifest.media_type, list(manifest.references))

    def _collect(self, digest: Digest, plan: _Plan, members: dict[Digest, int]) -> None:
        """A manifest already checked under another root: count its closure for this one."""
        frontier = [digest]
        for _ in range(MAX_DEPTH + 2):
            nxt: list[Digest] = []
            for parent in frontier:
                for child in plan.manifests.get(parent, ("", []))[1]:
                    size = self._size(child)
                    if size is not None and child not in members:
                        members[child] = size
                        nxt.append(child)
            frontier = nxt

    # ---- 3. publish ---------------------------------------------------------------------------

    def _probe(self, path: str) -> DiskUsage:
        """Staged bytes are already on the disk and become cache bytes by a rename: count them
        as free, or the quota would see them twice and refuse a bundle that fits."""
        usage = disk_usage(path)
        return DiskUsage(usage.total,
                         usage.free + sum(s.size for s in self._staged.values()))

    async def _publish(self, plan: _Plan) -> None:
        index = Index(self._layout.index_file)
        try:
            await self._publish_into(plan, index)
        finally:
            index.close()

    async def _publish_into(self, plan: _Plan, index: Index) -> None:
        config = self._config
        local = local_name(config)  # local content is never evicted, as in the service
        quota = Quota(config.storage, self._blobs, index, config.pins, Metrics(), self._probe,
                      local=local)
        store = Store(self._blobs, index, quota)
        order = [*plan.blobs.items(),
                 *((digest, self._size(digest) or 0) for digest in plan.manifests)]
        new_bytes = sum(size for digest, size in order if digest in self._staged)
        # what the bundle shares with the cache is in use now: eviction must not pick it
        for digest, _ in order:
            if digest not in self._staged:
                index.touch(str(digest))
        index.flush_access()
        if new_bytes and not await store.reserve(new_bytes):
            raise StorageError(f"no room: the bundle adds {human(new_bytes)} and the cache "
                               f"budget is {human(quota.budget())} with {human(quota.used)} "
                               "in use that cannot be evicted (pinned or being read)")
        owners = self._owners(plan, index)
        missing = [d for d, _ in order
                   if d not in self._staged and self._blobs.size(d) is None]
        if missing:
            store.release(new_bytes)
            raise StorageError(f"{missing[0]} left the cache during the import (evicted to "
                               "make room?); run the import again")
        batch = []  # children before parents; a failure abandons the writers not yet published
        for digest, size in order:
            staged = self._staged.pop(digest, None)
            media_type, children = plan.manifests.get(digest, (None, []))
            batch.append((staged.writer if staged is not None else None,
                          Record(digest, size, media_type, [str(c) for c in children],
                                 owners.get(digest, ()))))
        await store.publish_all(batch, reserved=new_bytes)
        self.report.blobs += sum(writer is not None for writer, _ in batch)
        self.report.new_bytes = new_bytes
        self.report.cached_bytes = sum(size for d, size in order) - new_bytes
        tagged: dict[TagTarget, Digest] = {}
        for descriptor, image in plan.roots:
            if image.tag is not None:
                if tagged.get(image.tag, descriptor.digest) != descriptor.digest:
                    self._warn(f"{image.tag} is named twice in index.json; the last one wins")
                tagged[image.tag] = descriptor.digest
            self.report.images.append(image)
        for target, digest in tagged.items():
            index.set_tag(target.upstream, target.repository, target.tag, str(digest))
        if local is not None:  # the referrers API of local content reads `subjects`
            record_subjects(index, local, ((d, self._blobs.read(d) or b"")
                                           for d in plan.manifests if local in owners.get(d, ())))

    def _owners(self, plan: _Plan, index: Index) -> dict[Digest, set[str]]:
        """digest -> the upstreams a tagged image links it to, as a pull links what it fetched
        (private content stays scoped). A cached blob whose bytes this bundle did not carry
        gains a link only if every route could read it already (checked again here: the
        service may have linked it since the stage)."""
        owners: dict[Digest, set[str]] = {}
        local = local_name(self._config)
        for _, image in plan.roots:
            # a local image named by digest (a pushed referrer) is local content all the same
            route = image.tag.upstream if image.tag is not None else local_route(image.name, local)
            if route is None:
                continue
            for digest in image.members:
                if (digest in self._staged or digest in self._verified
                        or self._open_to_all(digest, index)):
                    owners.setdefault(digest, set()).add(route)
                else:
                    self._warn(f"{short_digest(digest)} is cached for another upstream and the "
                               f"bundle did not carry it: not linked to {route}")
        return owners


async def import_bundle(config: Config, path: str, progress: Progress, *,
                        repository: str | None = None,
                        max_members: int = MAX_MEMBERS) -> ImportReport:
    """Import the bundle at `path` (`-`: stdin)."""
    importer = Importer(config, progress, repository=repository, max_members=max_members)
    started = time.monotonic()
    if path == "-":
        report = await importer.run(sys.stdin.buffer)
    else:
        try:
            source = open(path, "rb")  # noqa: SIM115 - closed below, after the await
        except OSError as exc:
            raise StorageError(f"{path}: {exc.strerror or exc}") from exc
        with source:
            progress.add_total(os.fstat(source.fileno()).st_size)
            report = await importer.run(source)
    report.seconds = time.monotonic() - started
    progress.finish()
    return report
