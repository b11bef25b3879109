"""The store's one publish: verify -> fsync -> rename -> index row and links -> quota, for a
single writer and for a batch (an import), and what is left behind when it cannot. Real files,
a real index and a real quota under tmp_path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecache.config import Size, StorageConfig
from edgecache.errors import DigestMismatch
from edgecache.metrics import Metrics
from edgecache.oci import Digest
from edgecache.storage.blobs import BlobStore
from edgecache.storage.index import Index
from edgecache.storage.layout import Layout
from edgecache.storage.quota import DiskUsage, Quota
from edgecache.storage.store import BlobWriter, Record, Store

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Parts:
    def __init__(self, root: Path) -> None:
        self.layout = Layout(root)
        self.blobs = BlobStore(self.layout)
        self.blobs.prepare()
        self.index = Index(self.layout.index_file)
        config = StorageConfig(path=root, max_size=Size(bytes=1 << 30), min_free=Size(bytes=0))
        self.quota = Quota(config, self.blobs, self.index, (), Metrics(),
                           probe=lambda _: DiskUsage(1 << 40, 1 << 40))
        self.store = Store(self.blobs, self.index, self.quota)

    def writer(self, data: bytes, claimed: bytes | None = None) -> BlobWriter:
        """A writer of `data` for the digest of `claimed` (default: of `data` itself)."""
        writer = self.store.begin(Digest.of(claimed if claimed is not None else data))
        writer.write(data)
        return writer

    def tmp(self) -> list[Path]:
        return sorted(self.layout.tmp_dir.iterdir())


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    made = Parts(tmp_path / "store")
    try:
        yield made
    finally:
        made.index.close()


async def test_publish_places_indexes_links_and_counts(parts: Parts) -> None:
    data = b"layer bytes" * 1000
    writer = parts.writer(data)
    reader = writer.reader()  # a reader of the download in progress, opened before publishing
    assert await parts.store.reserve(len(data))
    await parts.store.publish(writer, upstreams=("up.test",), reserved=len(data))
    digest = Digest.of(data)
    stored = parts.store.blob(digest)
    assert stored is not None and stored.size == len(data) and stored.media_type is None
    opened = stored.open()
    assert opened is not None
    with opened:
        assert opened.pread(len(data), 0) == data
    assert opened.closed
    with reader:  # keeps reading after the rename
        assert reader.pread(5, 0) == data[:5]
    assert reader.closed
    assert parts.index.size(str(digest)) == len(data)
    assert parts.store.links(digest) == {"up.test"}
    assert parts.quota.used == len(data) and parts.quota.reserved == 0
    assert parts.tmp() == []


async def test_wrong_bytes_publish_nothing_and_settle_the_reservation(parts: Parts) -> None:
    writer = parts.writer(b"what came", claimed=b"what was asked for")
    assert await parts.store.reserve(9)
    with pytest.raises(DigestMismatch):
        await parts.store.publish(writer, upstreams=("up.test",), reserved=9)
    assert parts.store.blob(writer.digest) is None
    assert parts.index.size(str(writer.digest)) is None
    assert parts.store.links(writer.digest) == set()
    assert parts.quota.used == 0 and parts.quota.reserved == 0
    assert parts.tmp() == []


async def test_a_batch_publishes_in_order_and_abandons_what_follows_a_failure(
        parts: Parts) -> None:
    good, bad, after = b"first" * 10, b"second", b"third" * 10
    batch = [(parts.writer(good), Record(Digest.of(good), len(good))),
             (parts.writer(bad, claimed=b"not it"), Record(Digest.of(b"not it"), len(bad))),
             (parts.writer(after), Record(Digest.of(after), len(after)))]
    total = len(good) + len(bad) + len(after)
    assert await parts.store.reserve(total)
    with pytest.raises(DigestMismatch):
        await parts.store.publish_all(batch, reserved=total)
    assert parts.store.blob(Digest.of(good)) is not None  # published before the failure
    assert parts.store.blob(Digest.of(after)) is None
    assert parts.index.size(str(Digest.of(after))) is None
    assert parts.tmp() == []  # the failed writer and the one after it are abandoned
    assert parts.quota.used == len(good) and parts.quota.reserved == 0


async def test_a_batch_indexes_content_already_in_place_without_a_writer(parts: Parts) -> None:
    layer = b"layer" * 100
    await parts.store.publish(parts.writer(layer))
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "layers": [{"digest": str(Digest.of(layer)), "size": len(layer)}]}).encode()
    published = await parts.store.publish_all([
        (None, Record(Digest.of(layer), len(layer), upstreams=("up.test",))),
        (parts.writer(body), Record(Digest.of(body), len(body), OCI_MANIFEST,
                                    [str(Digest.of(layer))], ("up.test",)))])
    assert published == len(body)
    manifest = parts.store.manifest(Digest.of(body))
    assert manifest is not None and manifest.media_type == OCI_MANIFEST
    assert parts.index.children(str(Digest.of(body))) == [str(Digest.of(layer))]
    assert parts.store.links(Digest.of(layer)) == {"up.test"}
    assert parts.quota.used == len(layer) + len(body)


async def test_a_removed_blob_opens_as_none(parts: Parts) -> None:
    data = b"evicted soon"
    await parts.store.put(Digest.of(data), data)
    stored = parts.store.blob(Digest.of(data))
    assert stored is not None
    parts.blobs.remove(Digest.of(data))
    assert stored.open() is None


async def test_what_export_reads_comes_back_as_digests(parts: Parts) -> None:
    """Every tag (held or not), a manifest's children, runtime pins and local referrers: read
    through the store, digests parsed where they leave SQL."""
    from edgecache.storage import pins
    from edgecache.storage.localindex import LocalIndex

    layer = b"layer" * 100
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "layers": [{"digest": str(Digest.of(layer)), "size": len(layer)}]}).encode()
    await parts.store.publish(parts.writer(layer), upstreams=("registry.local",))
    await parts.store.put(Digest.of(body), body, OCI_MANIFEST, [str(Digest.of(layer))],
                          upstreams=("registry.local",))
    gone = Digest.of(b"evicted long ago")
    parts.store.set_tag("up.test", "team/a", "1", gone)
    parts.store.set_tag("registry.local", "team/b", "2", Digest.of(body))
    assert parts.store.every_tag() == [("registry.local", "team/b", "2", Digest.of(body)),
                                       ("up.test", "team/a", "1", gone)]
    assert parts.store.children(Digest.of(body)) == [Digest.of(layer)]
    assert parts.store.children(Digest.of(layer)) == []
    pins.add(parts.index, ["up.test/team/a:1"])
    assert parts.store.runtime_pins() == ("up.test/team/a:1",)
    LocalIndex(parts.index, "registry.local").record_subject(
        str(Digest.of(body)), str(gone), None)
    assert parts.store.local_referrers("registry.local", gone) == [Digest.of(body)]
    assert parts.store.local_referrers("other.local", gone) == []
