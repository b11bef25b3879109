"""Deletes of local content leave tombstones (what a site's nodes compare with their pushes):
a tag delete, a manifest delete by digest with the tags naming it; a push clears them; a
delete older than the tag's push deletes nothing; tombstones expire."""

from __future__ import annotations

import time
from pathlib import Path

from edgecache.storage.index import Index
from edgecache.storage.localindex import LocalIndex
from edgecache.storage.tombstones import DIGESTS, Tombstones

LOCAL = "registry.local"
DIGEST = "sha256:" + "a" * 64


def _index(tmp_path: Path) -> tuple[Index, LocalIndex]:
    index = Index(tmp_path / "index.db")
    index.record_blob(DIGEST, 10, media_type="application/vnd.oci.image.manifest.v1+json",
                      upstreams=(LOCAL,))
    return index, LocalIndex(index, LOCAL)


def test_a_tag_delete_leaves_a_tombstone_and_a_push_clears_it(tmp_path: Path) -> None:
    index, local = _index(tmp_path)
    index.set_tag(LOCAL, "team/app", "v1", DIGEST, 1000.0)
    assert not local.delete_tag("team/app", "v1", 999.0)  # older than the push: nothing
    assert local.tag_times("team/app") == {"v1": 1000.0}
    assert local.tombstones.at("team/app", "v1") is None

    now = time.time()
    assert local.delete_tag("team/app", "v1", now)
    assert local.tag_times("team/app") == {}
    assert local.tombstones.at("team/app", "v1") == now
    assert local.tombstones.of("team/app") == {"v1": now}
    local.tombstones.record("team/app", "v1", now - 5)  # an older delete keeps the newest
    assert local.tombstones.at("team/app", "v1") == now

    local.pushed("team/app", "v1", DIGEST)
    assert local.tombstones.of("team/app") == {}
    index.close()


def test_a_manifest_deleted_by_digest_tombstones_its_tags_and_itself(tmp_path: Path) -> None:
    index, local = _index(tmp_path)
    index.set_tag(LOCAL, "team/app", "v1", DIGEST)
    index.set_tag(LOCAL, "other", "latest", DIGEST)
    at = time.time()
    assert local.delete(DIGEST, at, manifest=True)
    assert not local.holds(DIGEST)
    assert local.tombstones.of("team/app") == {"v1": at}
    assert local.tombstones.of("other") == {"latest": at}
    assert local.tombstones.at(DIGESTS, DIGEST) == at
    assert not local.delete(DIGEST, at, manifest=True)  # not local content any more
    local.pushed("team/app", None, DIGEST)  # pushed again by digest: its tombstone goes
    assert local.tombstones.at(DIGESTS, DIGEST) is None
    assert local.tombstones.of("team/app") == {"v1": at}  # the tag stays deleted
    index.close()


def test_tombstones_expire_and_are_swept(tmp_path: Path) -> None:
    index, _ = _index(tmp_path)
    tombstones = Tombstones(index, keep=60.0)
    tombstones.record("team/app", "old", time.time() - 120)
    assert tombstones.at("team/app", "old") is None  # expired: no longer evidence
    assert tombstones.of("team/app") == {}
    assert index.sql.execute("SELECT COUNT(*) FROM tombstones").fetchone()[0] == 1
    tombstones.record("team/app", "new", time.time())  # a write sweeps the expired
    assert list(tombstones.of("team/app")) == ["new"]
    assert index.sql.execute("SELECT COUNT(*) FROM tombstones").fetchone()[0] == 1
    assert tombstones.sweep() == 0
    index.close()
