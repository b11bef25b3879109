"""export and import in-process: round trip, determinism, partial indexes, names, and the
stream-level defences (member count, extended headers, truncation) that a CLI test would need
huge archives to reach.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import zstandard

from edgecache import config as config_mod
from edgecache.airgap.bundle import REF_NAME
from edgecache.airgap.export import export
from edgecache.airgap.importer import import_bundle
from edgecache.airgap.manifest import Manifest
from edgecache.airgap.platform import parse_platforms
from edgecache.airgap.progress import Progress
from edgecache.airgap.warm import warm
from edgecache.config import Config
from edgecache.errors import BundleInvalid, ManifestInvalid, NotCached, StorageError
from edgecache.oci import OCI_INDEX, OCI_MANIFEST
from edgecache.storage import pins as runtime_pins
from edgecache.storage.index import Index
from tests.fakes.registry import FakeRegistry
from tests.support.bundles import (
    Entry,
    blob_entry,
    descriptor,
    index_json,
    index_rows,
    layout_entries,
    storage_snapshot,
    tar_bytes,
    with_entry,
    zstd,
)
from tests.support.images import Image, make_image, make_index, make_layer
from tests.support.images import Index as ImageIndex
from tests.support.registry import free_port

UPSTREAM = "fake.test"
MiB = 1 << 20


def make_config(root: Path, upstream_url: str, tag_ttl: str | None = None) -> Config:
    return config_mod.from_mapping({
        "listen": {"http": f"127.0.0.1:{free_port()}", "https": None},
        "storage": {"path": str(root)},
        "upstreams": {UPSTREAM: {"url": upstream_url}},
        "default_upstream": UPSTREAM,
        "metrics": {"listen": None},
        **({"cache": {"tag_ttl": tag_ttl}} if tag_ttl else {}),
    })


def quiet(verb: str = "working") -> Progress:
    return Progress(verb, "items", io.StringIO(), tty=False)


def members(bundle: Path) -> list[tarfile.TarInfo]:
    with bundle.open("rb") as raw, \
            zstandard.ZstdDecompressor().stream_reader(raw) as plain, \
            tarfile.open(fileobj=plain, mode="r|") as tar:
        return list(tar)


@dataclass
class Upstream:
    """The fake upstream's content, and the config of a cache (storage `a`) in front of it."""

    config: Config
    image: Image
    multi: ImageIndex
    amd: Image
    arm: Image


@pytest.fixture
def seeded(fake: FakeRegistry, tmp_path: Path) -> Upstream:
    """An image and a two-platform index at the fake upstream, not yet warmed."""
    image = make_image([make_layer(MiB, 21), make_layer(MiB // 2, 22)])
    amd = make_image([make_layer(MiB, 23)], "amd64")
    arm = make_image([make_layer(MiB, 24)], "arm64")
    multi = make_index([amd, arm])
    fake.add_image("team/app", image, tags=["1"])
    fake.add_index("team/multi", multi, tags=["2"])
    return Upstream(make_config(tmp_path / "a", fake.url), image, multi, amd, arm)


async def test_round_trip_is_byte_exact_deterministic_and_index_json_last(
        seeded: Upstream, tmp_path: Path) -> None:
    config_a = seeded.config
    refs = [f"{UPSTREAM}/team/app:1", f"{UPSTREAM}/team/multi:2"]
    assert not (await warm(config_a, refs, quiet())).failed
    bundle = tmp_path / "bundle.tar.zst"
    report = export(config_a, refs, str(bundle), quiet(), level=3)
    assert [i.root.name for i in report.items] == [f"{UPSTREAM}/team/app:1",
                                                   f"{UPSTREAM}/team/multi:2"]
    assert bundle.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    names = [m.name for m in members(bundle)]
    assert names[0] == "oci-layout" and names[-1] == "index.json"
    assert not list(tmp_path.glob(".bundle*"))  # the temporary file was renamed
    again = tmp_path / "again.tar.zst"
    export(config_a, refs, str(again), quiet())
    assert again.read_bytes() == bundle.read_bytes()

    config_b = make_config(tmp_path / "b", "http://127.0.0.1:9")
    imported = await import_bundle(config_b, str(bundle), quiet())
    assert imported.warnings == []
    a_files = storage_snapshot(tmp_path / "a" / "blobs")
    assert storage_snapshot(tmp_path / "b" / "blobs") == a_files
    assert list((tmp_path / "b" / "tmp").iterdir()) == []
    rows_a, rows_b = index_rows(tmp_path / "a"), index_rows(tmp_path / "b")
    assert rows_b["refs"] == rows_a["refs"]
    assert rows_b["links"] == rows_a["links"]  # scoped to the upstream, as the pulls were
    assert [r[:3] for r in rows_b["tags"]] == [r[:3] for r in rows_a["tags"]]
    assert {(r[0], r[1], r[2]) for r in rows_b["blobs"]} == {(r[0], r[1], r[2])
                                                            for r in rows_a["blobs"]}

    # a second import finds everything cached: nothing new is staged or published
    second = await import_bundle(config_b, str(bundle), quiet())
    assert second.new_bytes == 0 and second.blobs == 0
    assert storage_snapshot(tmp_path / "b" / "blobs") == a_files


async def test_a_partly_cached_index_exports_only_with_platform_and_imports_as_partial(
        seeded: Upstream, tmp_path: Path) -> None:
    config_a = seeded.config
    ref = f"{UPSTREAM}/team/multi:2"
    assert not (await warm(config_a, [ref], quiet(), parse_platforms("linux/arm64"))).failed
    with pytest.raises(NotCached, match="--platform"):
        export(config_a, [ref], str(tmp_path / "all.tar.zst"), quiet())
    assert not (tmp_path / "all.tar.zst").exists()
    with pytest.raises(NotCached, match="warm it first"):
        export(config_a, [f"{UPSTREAM}/team/app:1"], str(tmp_path / "x.tar.zst"), quiet())

    bundle = tmp_path / "arm.tar.zst"
    export(config_a, [ref], str(bundle), quiet(), platforms=parse_platforms("linux/arm64"))
    imported = await import_bundle(make_config(tmp_path / "b", "http://127.0.0.1:9"),
                                   str(bundle), quiet())
    assert imported.images[0].partial == "1 of 2 platforms"
    have = set(storage_snapshot(tmp_path / "b" / "blobs"))
    assert any(seeded.arm.digest.removeprefix("sha256:") in p for p in have)
    assert not any(seeded.amd.digest.removeprefix("sha256:") in p for p in have)


async def test_export_all_tags_and_pins_skipping_what_was_evicted(
        seeded: Upstream, tmp_path: Path) -> None:
    config_a = seeded.config
    app, multi = f"{UPSTREAM}/team/app:1", f"{UPSTREAM}/team/multi:2"
    assert not (await warm(config_a, [app, multi], quiet())).failed
    every = export(config_a, [], str(tmp_path / "all.tar.zst"), quiet(), every_tag=True)
    assert sorted(str(i.root.name) for i in every.items) == [app, multi]
    pinned = export(replace(config_a, pins=(multi,)), [], str(tmp_path / "pins.tar.zst"),
                    quiet(), pinned=True)
    assert [i.root.name for i in pinned.items] == [multi]
    index = Index(config_a.storage.path / "index.db")
    try:
        runtime_pins.add(index, [app])  # `edgecache pin`: exported beside the config's
    finally:
        index.close()
    both = export(replace(config_a, pins=(multi,)), [], str(tmp_path / "pins2.tar.zst"),
                  quiet(), pinned=True)
    assert sorted(str(i.root.name) for i in both.items) == [app, multi]
    images = seeded.multi.images
    assert pinned.items[0].size == len(seeded.multi.manifest) + sum(
        len(i.manifest) + sum(len(b.data) for b in i.blobs) for i in images)

    digest = seeded.image.digest
    index = Index(config_a.storage.path / "index.db")  # as an eviction would leave it
    try:
        index.forget([digest])
    finally:
        index.close()
    (config_a.storage.path / "blobs" / "sha256" / digest[7:9] / digest[7:]).unlink()
    every = export(config_a, [], str(tmp_path / "all2.tar.zst"), quiet(), every_tag=True)
    assert [i.root.name for i in every.items] == [multi] and every.skipped == [app]
    with pytest.raises(NotCached, match="warm it first"):
        export(config_a, [app], str(tmp_path / "gone.tar.zst"), quiet())


async def test_names_full_tag_only_and_containerd(tmp_path: Path) -> None:
    image = make_image([make_layer(4096, 25)])
    manifests = [
        descriptor(image.manifest, ref_name="3.20"),
    ]
    config = make_config(tmp_path / "c", "http://127.0.0.1:9")
    entries = with_entry(layout_entries(image, None), "index.json", data=index_json(manifests))
    path = tmp_path / "tag-only.tar"
    path.write_bytes(tar_bytes(entries))
    report = await import_bundle(config, str(path), quiet())
    assert report.images[0].tag is None
    assert "only a tag" in report.warnings[0]

    report = await import_bundle(config, str(path), quiet(), repository=f"{UPSTREAM}/team/base")
    assert str(report.images[0].tag) == f"{UPSTREAM}/team/base:3.20"
    assert report.pins() == [f"{UPSTREAM}/team/base:3.20@{image.digest}"]

    containerd = descriptor(image.manifest, ref_name="3.20")
    containerd["annotations"] = {REF_NAME: "3.20",
                                 "io.containerd.image.name": f"{UPSTREAM}/team/ctr:7"}
    unknown = descriptor(image.manifest, ref_name="elsewhere.example/team/x:1")
    path.write_bytes(tar_bytes(with_entry(entries, "index.json",
                                          data=index_json([containerd, unknown]))))
    report = await import_bundle(config, str(path), quiet())
    assert str(report.images[0].tag) == f"{UPSTREAM}/team/ctr:7"
    assert report.images[1].tag is None and "not a configured upstream" in report.warnings[0]
    index = Index(tmp_path / "c" / "index.db")
    try:
        assert index.tag(UPSTREAM, "team/ctr", "7") is not None
        assert index.tag(UPSTREAM, "team/base", "3.20") is not None
    finally:
        index.close()


async def test_index_json_first_and_no_end_blocks_missing(tmp_path: Path) -> None:
    image = make_image([make_layer(4096, 26)])
    entries = layout_entries(image, f"{UPSTREAM}/team/first:1")
    first = [entries[-1], *entries[:-1]]  # as some tools write it
    config = make_config(tmp_path / "d", "http://127.0.0.1:9")
    path = tmp_path / "first.tar"
    path.write_bytes(tar_bytes(first))
    report = await import_bundle(config, str(path), quiet())
    assert str(report.images[0].tag) == f"{UPSTREAM}/team/first:1"


async def test_a_bundle_that_cannot_fit_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "small"
    config = config_mod.from_mapping({
        "listen": {"http": f"127.0.0.1:{free_port()}", "https": None},
        "storage": {"path": str(root), "max_size": "256KiB"},
        "upstreams": {UPSTREAM: {"url": "http://127.0.0.1:9"}},
        "metrics": {"listen": None},
    })
    path = tmp_path / "big.tar"
    path.write_bytes(tar_bytes(layout_entries(make_image([make_layer(MiB, 30)]),
                                              f"{UPSTREAM}/team/big:1")))
    with pytest.raises(StorageError, match="no room"):
        await import_bundle(config, str(path), quiet())
    assert [p for p in root.rglob("*") if p.is_file() and p.parent.name != root.name] == []
    assert index_rows(root)["blobs"] == []


def hostile_cases() -> list[tuple[str, bytes, str]]:
    image = make_image([make_layer(4096, 27)])
    good = layout_entries(image, f"{UPSTREAM}/team/h:1")
    big_pax = [Entry("oci-layout", b'{"imageLayoutVersion": "1.0.0"}',
                     pax={"comment": "x" * (2 * MiB)}), *good[1:]]
    raw = tar_bytes(good)
    header_at = raw.index(b"blobs/sha256/") - 0  # the first blob member's header
    corrupt = bytearray(raw)
    start = (header_at // 512) * 512
    corrupt[start + 148:start + 156] = b"0000000\x00"  # a wrong checksum mid-way
    return [
        ("too-many-members", tar_bytes(good + [Entry("blobs", type=tarfile.DIRTYPE)] * 30),
         "more than 20 members"),
        ("huge-pax-header", tar_bytes(big_pax), "extended tar header"),
        ("no-end-marker", tar_bytes(good, end=False), "truncated"),
        ("corrupt-header", bytes(corrupt), "truncated or corrupt"),
        ("zstd-cut", zstd(raw)[: len(zstd(raw)) // 2], "truncated"),
        ("index-lists-nothing", tar_bytes(with_entry(good, "index.json", data=index_json([]))),
         "lists no manifests"),
        ("not-tar", b"hello, this is not an archive" * 40, "not a tar archive"),
        ("dup-member", tar_bytes([*good[:-1], blob_entry(image.config.data), good[-1]]),
         "appears twice"),
    ]


@pytest.mark.parametrize(("name", "data", "message"), hostile_cases(),
                         ids=[c[0] for c in hostile_cases()])
async def test_stream_defences_refuse_and_leave_nothing(tmp_path: Path, name: str, data: bytes,
                                                        message: str) -> None:
    root = tmp_path / "e"
    config = make_config(root, "http://127.0.0.1:9")
    ok = tmp_path / "ok.tar"
    ok.write_bytes(tar_bytes(layout_entries(make_image([make_layer(4096, 28)]),
                                            f"{UPSTREAM}/team/ok:1")))
    await import_bundle(config, str(ok), quiet())
    before, rows = storage_snapshot(root), index_rows(root)
    path = tmp_path / f"{name}.bundle"
    path.write_bytes(data)
    with pytest.raises(BundleInvalid) as caught:
        await import_bundle(config, str(path), quiet(), max_members=20)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert storage_snapshot(root) == before
    assert index_rows(root) == rows


def test_manifest_reading_is_strict() -> None:
    image = make_image([make_layer(1024, 29)])
    Manifest.parse(image.manifest, OCI_MANIFEST, "m")
    doc = json.loads(image.manifest)
    cases = [
        (b"not json", OCI_MANIFEST, "not a manifest"),
        (json.dumps({"mediaType": OCI_INDEX, "schemaVersion": 2, "manifests": []}).encode(),
         OCI_MANIFEST, "declared as"),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode(),
         OCI_MANIFEST, "without config"),
        (json.dumps({**doc, "layers": [{"digest": "sha256:zz", "size": 1}]}).encode(),
         OCI_MANIFEST, "invalid"),
        (json.dumps({**doc, "layers": [{**doc["layers"][0], "size": -1}]}).encode(),
         OCI_MANIFEST, "no valid size"),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX}).encode(), OCI_INDEX,
         "without a manifests list"),
    ]
    for body, declared, message in cases:
        with pytest.raises(ManifestInvalid, match=message):
            Manifest.parse(body, declared, "m")
