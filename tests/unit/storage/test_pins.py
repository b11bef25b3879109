"""The runtime pins' table, and eviction protecting the union of config and runtime pins."""

from __future__ import annotations

from pathlib import Path

from edgecache.storage import pins as rows
from edgecache.storage.eviction import pinned_digests
from edgecache.storage.index import Index

TOP = "sha256:" + "1" * 64
LAYER = "sha256:" + "2" * 64
OTHER = "sha256:" + "3" * 64
MEDIA = "application/vnd.oci.image.manifest.v1+json"


def test_the_table_keeps_each_pin_once(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    try:
        assert rows.add(index, ["a/b:1", "a/c:1"], now=5.0) == ["a/b:1", "a/c:1"]
        assert rows.add(index, ["a/b:1"]) == []
        assert rows.references(index) == ("a/b:1", "a/c:1")
        assert rows.rows(index)[0].added_at == 5.0
        assert rows.remove(index, ["a/b:1", "a/x:1"]) == ["a/b:1"]
        assert rows.references(index) == ("a/c:1",)
    finally:
        index.close()


def test_eviction_protects_runtime_pins_beside_the_config_ones(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    try:
        index.record_blob(LAYER, 10)
        index.record_blob(TOP, 1, MEDIA, children=[LAYER])
        index.set_tag("docker.io", "library/a", "1", TOP)
        index.record_blob(OTHER, 5, MEDIA)
        assert pinned_digests(index, ()) == set()
        rows.add(index, ["docker.io/a:1"])  # Hub's short name: library/a
        assert pinned_digests(index, ()) == {TOP, LAYER}
        assert pinned_digests(index, (f"docker.io/library/b@{OTHER}",)) == {TOP, LAYER, OTHER}
        rows.remove(index, ["docker.io/a:1"])
        assert pinned_digests(index, ()) == set()
    finally:
        index.close()
