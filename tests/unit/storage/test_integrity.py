"""The index agreeing with the files, and the files being what their names say.

`reconcile` (at start after an unclean stop) and `verify` (the `edgecache verify` command) over
a real blob tree and index; the start-up decision (clean-shutdown marker, tmp/ sweep); and
edgecache's real app restarted on a store that a crash left inconsistent.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecache import cli
from edgecache import config as config_mod
from edgecache.metrics import Metrics
from edgecache.oci import Digest
from edgecache.storage.blobs import BlobStore
from edgecache.storage.index import Index
from edgecache.storage.integrity import reconcile, verify
from edgecache.storage.layout import Layout
from edgecache.storage.opening import open_storage
from tests.fakes.registry import FakeRegistry
from tests.support.images import OCI_INDEX, OCI_MANIFEST, make_image, make_index, make_layer
from tests.unit.conftest import UPSTREAM
from tests.unit.storage.test_quota import content_of, published, pull, serving


class Store:
    def __init__(self, root: Path) -> None:
        self.layout = Layout(root)
        self.blobs = BlobStore(self.layout)
        self.blobs.prepare()
        self.index = Index(self.layout.index_file)

    async def publish(self, data: bytes, indexed: bool = True) -> str:
        """A verified, published file; indexed as edgecache would (or not: a crash between
        the rename and the index write)."""
        digest = Digest.of(data)
        writer = self.blobs.writer(digest)
        writer.write(data)
        await writer.place()  # the file alone (what `Store.publish` does before the row)
        if indexed:
            self.index.record_blob(str(digest), len(data))
        return str(digest)

    def path(self, digest: str) -> Path:
        return self.blobs.path(Digest.parse(digest))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    made = Store(tmp_path / "store")
    try:
        yield made
    finally:
        made.index.close()


def flip_a_byte(path: Path, offset: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ---- reconcile ----------------------------------------------------------------------------------


async def test_a_published_blob_missing_from_the_index_is_adopted(store: Store) -> None:
    known = await store.publish(b"known" * 100)
    orphan = await store.publish(b"orphan" * 100, indexed=False)
    report = reconcile(store.blobs, store.index)
    assert report.adopted == [orphan]
    assert report.forgotten == [] and report.removed == []
    assert store.index.size(orphan) == 600
    assert store.index.size(known) == 500
    assert reconcile(store.blobs, store.index).clean  # and a second pass finds nothing


async def test_an_adopted_manifest_keeps_its_media_type_and_references(store: Store) -> None:
    """So evicting one of its layers takes it along, as if it had never been lost."""
    image = make_image([make_layer(10_000, 501)])
    index = make_index([image])
    for blob in image.blobs:
        await store.publish(blob.data)
    await store.publish(image.manifest, indexed=False)
    await store.publish(index.manifest, indexed=False)

    report = reconcile(store.blobs, store.index)

    assert sorted(report.adopted) == sorted([image.digest, index.digest])
    assert store.index.media_type(image.digest) == OCI_MANIFEST
    assert store.index.media_type(index.digest) == OCI_INDEX
    assert sorted(store.index.children(image.digest)) == sorted(b.digest for b in image.blobs)
    assert store.index.children(index.digest) == [image.digest]
    assert store.index.parents(image.layers[0].digest) == [image.digest]
    assert store.index.media_type(image.layers[0].digest) is None  # a layer stays a layer


async def test_an_index_row_whose_file_is_gone_is_forgotten(store: Store) -> None:
    kept = await store.publish(b"kept" * 100)
    lost = await store.publish(b"lost" * 100)
    store.path(lost).unlink()
    report = reconcile(store.blobs, store.index)
    assert report.forgotten == [lost]
    assert store.index.size(lost) is None
    assert store.index.size(kept) == 400


async def test_files_not_named_by_their_digest_are_removed(store: Store) -> None:
    good = await store.publish(b"good" * 100)
    hexpart = Digest.parse(good).hex
    misplaced = store.layout.blobs_dir / "sha256" / "00" / hexpart  # wrong fan-out directory
    stray = store.layout.blobs_dir / "sha256" / hexpart[:2] / "not-a-digest"
    for path in (misplaced, stray):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"junk")
    report = reconcile(store.blobs, store.index)
    assert sorted(report.removed) == sorted([str(misplaced), str(stray)])
    assert not misplaced.exists() and not stray.exists()
    assert store.path(good).exists()
    assert report.adopted == [] and report.forgotten == []


# ---- verify -------------------------------------------------------------------------------------


async def test_verify_names_a_corrupt_blob_and_repair_removes_it(store: Store) -> None:
    good = await store.publish(b"good" * 1000)
    bad = await store.publish(b"bad!" * 1000)
    flip_a_byte(store.path(bad))

    report = verify(store.blobs, store.index, repair=False)
    assert report.corrupt == [bad]
    assert report.checked == 2
    assert not report.clean
    assert store.path(bad).exists() and store.index.size(bad) == 4000  # only reported

    repaired = verify(store.blobs, store.index, repair=True)
    assert repaired.corrupt == [bad]
    assert not store.path(bad).exists() and store.index.size(bad) is None
    assert store.path(good).exists()
    assert verify(store.blobs, store.index, repair=False).clean


async def test_repair_takes_the_manifests_of_a_corrupt_layer_along(store: Store) -> None:
    """The index must not claim an image it can no longer serve whole."""
    layer = make_layer(10_000, 502)
    other = make_layer(10_000, 503)
    image = make_image([layer])
    untouched = make_image([other])
    index = make_index([image])
    for blob in (*image.blobs, *untouched.blobs):
        await store.publish(blob.data)
    for manifest in (image.manifest, untouched.manifest, index.manifest):
        await store.publish(manifest, indexed=False)
    reconcile(store.blobs, store.index)  # adopts the manifests with their references
    flip_a_byte(store.path(layer.digest))

    report = verify(store.blobs, store.index, repair=True)

    assert report.corrupt == [layer.digest]
    for gone in (layer.digest, image.digest, index.digest):
        assert not store.path(gone).exists() and store.index.size(gone) is None
    for kept in (untouched.digest, other.digest, image.config.digest):
        assert store.path(kept).exists() and store.index.size(kept) is not None
    assert verify(store.blobs, store.index, repair=False).clean


async def test_verify_without_repair_reports_disagreements_and_changes_nothing(
        store: Store) -> None:
    lost = await store.publish(b"lost" * 100)
    orphan = await store.publish(b"orphan" * 100, indexed=False)
    store.path(lost).unlink()
    report = verify(store.blobs, store.index, repair=False)
    assert report.forgotten == [lost] and report.adopted == [orphan]
    assert store.index.size(lost) == 400 and store.index.size(orphan) is None


# ---- the command line ---------------------------------------------------------------------------


def config_file(tmp_path: Path, storage: Path, upstream_url: str = "http://127.0.0.1:1") -> Path:
    path = tmp_path / "edgecache.yaml"
    path.write_text(json.dumps({
        "listen": {"http": "127.0.0.1:0", "https": None},
        "storage": {"path": str(storage)},
        "upstreams": {UPSTREAM: {"url": upstream_url}},
        "default_upstream": UPSTREAM,
    }))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


async def test_the_verify_command_exit_codes(store: Store, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    good = await store.publish(b"good" * 1000)
    bad = await store.publish(b"bad!" * 1000)
    store.index.close()
    config = str(config_file(tmp_path, store.layout.root))

    code, out = run(capsys, "verify", "--config", config)
    assert (code, out.splitlines()[-1]) == (0, "checked 2 blobs: 0 corrupt, 0 missing, "
                                               "0 not indexed")

    flip_a_byte(store.path(bad))
    code, out = run(capsys, "verify", "--config", config)
    assert code == 1
    assert f"corrupt: {bad}\n" in out
    assert good not in out
    assert store.path(bad).exists()

    code, out = run(capsys, "verify", "--config", config, "--repair")
    assert code == 0
    assert f"corrupt: {bad} (removed)" in out
    assert not store.path(bad).exists()

    code, out = run(capsys, "verify", "--config", config)
    assert (code, out.splitlines()[-1]) == (0, "checked 1 blobs: 0 corrupt, 0 missing, "
                                               "0 not indexed")
    store.index = Index(store.layout.index_file)  # for the fixture to close


# ---- starting on what the last process left -----------------------------------------------------


def open_for_serving(root: Path) -> Index:
    storage = open_storage(config_mod.from_mapping({"storage": {"path": str(root)}}), Metrics())
    return storage.index


async def test_start_after_a_clean_stop_trusts_the_index(store: Store) -> None:
    orphan = await store.publish(b"orphan" * 100, indexed=False)
    part = store.layout.tmp_dir / "abc.part"
    part.write_bytes(b"half a download")
    store.index.close()
    store.layout.clean_marker.touch()

    index = open_for_serving(store.layout.root)
    try:
        assert index.size(orphan) is None  # no reconciliation: the stop was clean
        assert not part.exists()  # unfinished downloads are swept at every start
        assert not store.layout.clean_marker.exists()  # a crash from now on is unclean
    finally:
        index.close()
    store.index = Index(store.layout.index_file)


async def test_start_after_a_crash_reconciles(store: Store) -> None:
    orphan = await store.publish(b"orphan" * 100, indexed=False)
    lost = await store.publish(b"lost" * 100)
    store.path(lost).unlink()
    part = store.layout.tmp_dir / "abc.part"
    part.write_bytes(b"half a download")
    store.index.close()

    index = open_for_serving(store.layout.root)
    try:
        assert index.size(orphan) == 600
        assert index.size(lost) is None
        assert not part.exists()
    finally:
        index.close()
    store.index = Index(store.layout.index_file)


async def test_after_an_unclean_stop_the_app_adopts_forgets_and_serves_right_bytes(
        fake: FakeRegistry, tmp_path: Path) -> None:
    """A crash between a blob's rename and its index row, and a file lost underneath: after
    the restart the adopted blob is served from the cache and the lost one fetched again."""
    image = make_image([make_layer(100_000, 511), make_layer(100_000, 512)])
    fake.add_image("team/app", image, tags=["1"])
    content = content_of(image)
    adopted, lost = image.layers[0].digest, image.layers[1].digest
    storage = tmp_path / "cache"
    async with serving(fake.url, storage) as edge:
        await pull(edge, "team/app", "1", content)
    with contextlib.closing(sqlite3.connect(storage / "index.db")) as db:
        db.execute("DELETE FROM blobs WHERE digest IN (?, ?)", (adopted, image.digest))
        db.execute("DELETE FROM refs WHERE parent=?", (image.digest,))
        db.commit()
    edge.blob_path(lost).unlink()
    (storage / "clean-shutdown").unlink()  # the stop was not clean

    async with serving(fake.url, storage) as edge:
        with contextlib.closing(sqlite3.connect(storage / "index.db")) as db:
            rows = dict(db.execute("SELECT digest, size FROM blobs"))
            refs = {c for (c,) in db.execute("SELECT child FROM refs WHERE parent=?",
                                             (image.digest,))}
        assert rows[adopted] == len(content[adopted])
        assert rows[image.digest] == len(image.manifest)
        assert refs == {b.digest for b in image.blobs}
        assert lost not in rows

        before = dict(fake.completed)
        await pull(edge, "team/app", image.digest, content)
        assert fake.completed.get(adopted, 0) == before.get(adopted, 0)  # from the cache
        assert fake.completed[lost] == before[lost] + 1  # fetched again
        assert published(storage) == {d: len(b) for d, b in content.items()}
