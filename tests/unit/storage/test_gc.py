"""Garbage collection of local repositories: what is marked, what is swept, what is kept, built
with the store's own publish and a real index and files (no mocks)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecache.config import Size, StorageConfig
from edgecache.metrics import Metrics
from edgecache.oci import OCI_INDEX, OCI_MANIFEST, Digest
from edgecache.storage import gc
from edgecache.storage.blobs import BlobStore
from edgecache.storage.index import Index
from edgecache.storage.layout import Layout
from edgecache.storage.localindex import LocalIndex
from edgecache.storage.quota import DiskUsage, Quota
from edgecache.storage.store import Store

LOCAL = "registry.local"
REPO = "site/app"
GRACE = 3600.0
LATER = GRACE * 2  # seconds from now at which everything published now is past the grace


class Site:
    """A store with a local registry, published into as a push would (rows, links, tags)."""

    def __init__(self, root: Path) -> None:
        self.layout = Layout(root)
        blobs = BlobStore(self.layout)
        blobs.prepare()
        self.index = Index(self.layout.index_file)
        config = StorageConfig(path=root, max_size=Size(bytes=1 << 30), min_free=Size(bytes=0))
        quota = Quota(config, blobs, self.index, (), Metrics(),
                      probe=lambda _: DiskUsage(1 << 40, 1 << 40))
        self.store = Store(blobs, self.index, quota)

    async def blob(self, data: bytes, upstreams: tuple[str, ...] = (LOCAL,)) -> str:
        digest = Digest.of(data)
        await self.store.put(digest, data, upstreams=upstreams)
        return str(digest)

    async def manifest(self, seed: int, layers: int = 1, shared: list[str] | None = None,
                       subject: str | None = None) -> tuple[str, list[str]]:
        """An image manifest with its config and layers: (its digest, its blobs' digests)."""
        blobs = [await self.blob(f"config {seed}".encode())]
        blobs += [await self.blob(f"layer {seed}.{n}".encode() * 100) for n in range(layers)]
        blobs += shared or []
        doc: dict[str, object] = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": blobs[0], "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d,
                        "size": 1} for d in blobs[1:]]}
        if subject is not None:
            doc["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1}
        return await self.put_manifest(doc, OCI_MANIFEST, blobs, subject), blobs

    async def put_manifest(self, doc: dict[str, object], media_type: str, children: list[str],
                           subject: str | None = None) -> str:
        body = json.dumps(doc).encode()
        digest = Digest.of(body)
        await self.store.put(digest, body, media_type, children, [LOCAL])
        if subject is not None:  # what the push API records beside a manifest with a subject
            LocalIndex(self.index, LOCAL).record_subject(
                str(digest), subject, "application/vnd.example.signature.v1")
        return str(digest)

    def tag(self, tag: str, digest: str) -> None:
        self.store.set_tag(LOCAL, REPO, tag, Digest.parse(digest))

    def collect(self, dry_run: bool = False, later: float = LATER) -> gc.Collected:
        return gc.collect(self.index, self.layout, LOCAL, GRACE, dry_run,
                          now=time.time() + later)

    def present(self, digest: str) -> bool:
        return self.layout.blob(Digest.parse(digest)).exists()

    def consistent(self) -> None:
        """No index row without its file."""
        for digest, _ in self.index.digests():
            assert self.present(digest), digest


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = Site(tmp_path / "store")
    try:
        yield made
    finally:
        made.index.close()


async def test_a_moved_tag_leaves_exactly_the_old_manifest_and_its_own_blobs(site: Site) -> None:
    shared = await site.blob(b"base layer" * 100)
    old, old_blobs = await site.manifest(1, layers=2, shared=[shared])
    new, new_blobs = await site.manifest(2, layers=1, shared=[shared])
    site.tag("latest", old)
    site.tag("latest", new)

    planned = site.collect(dry_run=True)
    gone = {old, *old_blobs[:-1]}  # the shared layer stays: the new manifest has it too
    assert {g.digest for g in planned.found} == gone
    assert planned.found[0].digest == old and "manifest" in planned.found[0].why
    assert all(site.present(d) for d in gone)  # a dry run changes nothing

    done = site.collect()
    assert (done.removed, done.kept, done.unlinked) == (len(gone), 0, 0)
    assert done.freed == sum(g.size for g in planned.found)
    assert not any(site.present(d) for d in gone)
    assert all(site.present(d) for d in (new, *new_blobs))
    assert site.index.media_type(old) is None and site.index.links(old) == set()
    site.consistent()


async def test_the_grace_period_keeps_what_was_just_pushed(site: Site) -> None:
    """A push's blobs arrive before its manifest: unreferenced, but young."""
    orphan = await site.blob(b"uploaded, manifest still to come")
    untagged, _ = await site.manifest(3)

    assert site.collect(later=0).found == []
    assert {g.digest for g in site.collect(later=LATER).found} >= {orphan, untagged}


async def test_content_another_upstream_links_only_loses_its_local_link(site: Site) -> None:
    cached = await site.blob(b"also pulled from docker.io", upstreams=(LOCAL, "docker.io"))
    manifest, _ = await site.manifest(4, shared=[cached])  # untagged: garbage

    done = site.collect()
    assert done.unlinked == 1
    assert site.present(cached) and site.index.links(cached) == {"docker.io"}
    assert not site.present(manifest)


async def test_an_index_keeps_its_platform_manifests(site: Site) -> None:
    amd, amd_blobs = await site.manifest(5)
    arm, arm_blobs = await site.manifest(6)
    index = await site.put_manifest(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d, "size": 1} for d in (amd, arm)]},
        OCI_INDEX, [amd, arm])
    site.tag("v1", index)
    stray, _ = await site.manifest(7)

    found = {g.digest for g in site.collect().found}
    assert stray in found and not found & {index, amd, arm, *amd_blobs, *arm_blobs}


async def test_referrers_of_kept_manifests_are_kept(site: Site) -> None:
    image, _ = await site.manifest(8)
    site.tag("v1", image)
    signature, signature_blobs = await site.manifest(9, subject=image)  # pushed by digest
    gone, _ = await site.manifest(10)
    orphan_signature, _ = await site.manifest(11, subject=gone)

    found = {g.digest for g in site.collect().found}
    assert not found & {image, signature, *signature_blobs}
    assert {gone, orphan_signature} <= found
    assert site.index.sql.execute("SELECT digest FROM subjects").fetchall() == [(signature,)]


async def test_what_a_push_finished_meanwhile_references_is_kept(site: Site) -> None:
    layer = await site.blob(b"left over, then used again")
    old, _ = await site.manifest(12, shared=[layer])
    planned = gc.plan(site.index, LOCAL, GRACE, now=time.time() + LATER)
    assert {old, layer} <= {g.digest for g in planned.found}

    new, _ = await site.manifest(13, shared=[layer])  # pushed after the plan, before the sweep
    site.tag("v2", new)
    done = gc.sweep(site.index, site.layout, LOCAL, planned, GRACE, now=time.time() + LATER)
    assert site.present(layer) and not site.present(old)
    assert done.kept >= 1
    site.consistent()


async def test_a_file_written_since_the_cutoff_is_never_removed(site: Site) -> None:
    """A publish of the same digest renames its file in before writing its rows: a file newer
    than the cutoff is put back (the rows of that publish follow)."""
    orphan = await site.blob(b"being uploaded again")
    planned = gc.plan(site.index, LOCAL, GRACE, now=time.time() + LATER)
    future = time.time() + LATER
    os.utime(site.layout.blob(Digest.parse(orphan)), (future, future))  # written "now"

    done = gc.sweep(site.index, site.layout, LOCAL, planned, GRACE, now=time.time() + LATER)
    assert site.present(orphan) and done.removed == 0 and done.kept == 1
    assert list(site.layout.tmp_dir.iterdir()) == []


async def test_what_young_or_cached_content_references_is_not_even_listed(site: Site) -> None:
    """The dry run shows what the sweep removes: an old layer a young manifest uses, or a
    cached upstream manifest uses, is not garbage."""
    layer = await site.blob(b"old layer, new manifest")
    await site.manifest(14, shared=[layer])  # untagged, but within the grace period
    later = GRACE / 2  # the manifest (published "now") is young, the layer is made old below
    site.index.sql.execute("UPDATE blobs SET added_at=0, last_access=0 WHERE digest=?",
                           (layer,))
    assert layer not in {g.digest for g in site.collect(dry_run=True, later=later).found}

    cached = await site.blob(b"in a cached upstream image too")
    body = json.dumps({"schemaVersion": 2, "layers": [{"digest": cached}]}).encode()
    await site.store.put(Digest.of(body), body, OCI_MANIFEST, [cached], ["docker.io"])
    assert cached not in {g.digest for g in site.collect(dry_run=True).found}
    done = site.collect()
    assert site.present(cached) and done.kept == 0


async def test_a_manifest_another_upstream_keeps_keeps_its_layers(site: Site) -> None:
    layer = await site.blob(b"pushed here, named by a manifest docker.io has too")
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "layers": [{"digest": layer}]}).encode()
    await site.store.put(Digest.of(body), body, OCI_MANIFEST, [layer], [LOCAL, "docker.io"])

    done = site.collect()
    assert done.unlinked == 1 and done.removed == 0
    assert site.present(layer) and site.present(str(Digest.of(body)))
    assert site.index.links(str(Digest.of(body))) == {"docker.io"}
