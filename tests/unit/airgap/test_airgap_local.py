"""Importing local content (images under the local registry's name): linked to the local
registry, its pushed referrers recorded for the referrers API, and never evicted to make room
for what an import brings."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from edgecache import config as config_mod
from edgecache.airgap.export import export
from edgecache.airgap.importer import import_bundle
from edgecache.airgap.progress import Progress
from edgecache.config import Config
from edgecache.errors import StorageError
from edgecache.storage.index import Index
from edgecache.storage.localindex import LocalIndex
from tests.support.bundles import (
    Entry,
    blob_entry,
    descriptor,
    index_json,
    layout_entries,
    tar_bytes,
)
from tests.support.images import OCI_MANIFEST, make_image, make_layer
from tests.support.registry import free_port

LOCAL, UPSTREAM = "registry.local", "fake.test"
MiB = 1 << 20


def _config(root: Path) -> Config:
    return config_mod.from_mapping({
        "listen": {"http": f"127.0.0.1:{free_port()}", "https": None},
        "storage": {"path": str(root), "max_size": "4MiB", "min_free": "1MiB"},
        "upstreams": {UPSTREAM: {"url": "http://127.0.0.1:9"}},
        "local": {"registry": LOCAL, "push": "anonymous"},
        "metrics": {"listen": None},
    })


def _quiet() -> Progress:
    return Progress("importing", "items", io.StringIO(), tty=False)


def _links(config: Config, digest: str) -> set[str]:
    index = Index(config.storage.path / "index.db")
    try:
        return index.links(digest)
    finally:
        index.close()


async def test_a_local_image_and_its_referrer_by_digest_are_imported_as_local_content(
        tmp_path: Path) -> None:
    config = _config(tmp_path / "c")
    image = make_image([make_layer(4096, 1)])
    signature = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                 "artifactType": "application/vnd.example.sig",
                 "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                            "digest": image.config.digest, "size": len(image.config.data)},
                 "layers": [],
                 "subject": {"mediaType": OCI_MANIFEST, "digest": image.digest,
                             "size": len(image.manifest)}}
    body = json.dumps(signature).encode()
    entries = layout_entries(image, f"{LOCAL}/team/a:1")[:-1]  # index.json comes below
    entries.append(blob_entry(body))
    referrer = descriptor(body, OCI_MANIFEST, f"{LOCAL}/team/a@" + str(descriptor(body)["digest"]))
    entries.append(Entry("index.json", index_json([
        descriptor(image.manifest, image.media_type, f"{LOCAL}/team/a:1"), referrer])))
    path = tmp_path / "local.tar"
    path.write_bytes(tar_bytes(entries))
    report = await import_bundle(config, str(path), _quiet())
    assert str(report.images[0].tag) == f"{LOCAL}/team/a:1" and report.warnings == []
    for digest in (image.digest, *(b.digest for b in image.blobs), referrer["digest"]):
        assert LOCAL in _links(config, str(digest))
    index = Index(config.storage.path / "index.db")
    try:
        found = LocalIndex(index, LOCAL).referrers(image.digest)
        assert [(r.digest, r.artifact_type) for r in found] == [
            (referrer["digest"], "application/vnd.example.sig")]
        assert index.tag(LOCAL, "team/a", "1") is not None
    finally:
        index.close()
    # exported again by its name, the pushed referrer goes along (named by digest)
    again = export(config, [f"{LOCAL}/team/a:1"], str(tmp_path / "again.tar.zst"), _quiet())
    assert [i.root.name for i in again.items] == [
        f"{LOCAL}/team/a:1", f"{LOCAL}/team/a@{referrer['digest']}"]


async def test_an_import_never_evicts_local_content_to_make_room(tmp_path: Path) -> None:
    config = _config(tmp_path / "c")
    local = make_image([make_layer(int(2.5 * MiB), 2)])
    path = tmp_path / "local.tar"
    path.write_bytes(tar_bytes(layout_entries(local, f"{LOCAL}/team/a:1")))
    await import_bundle(config, str(path), _quiet())

    cached = make_image([make_layer(int(2.5 * MiB), 3)])
    path.write_bytes(tar_bytes(layout_entries(cached, f"{UPSTREAM}/team/b:1")))
    with pytest.raises(StorageError, match="no room"):
        await import_bundle(config, str(path), _quiet())
    for blob in local.blobs:  # still there, still local
        assert LOCAL in _links(config, blob.digest)
        assert (config.storage.path / "blobs" / "sha256" / blob.digest[7:9]
                / blob.digest[7:]).is_file()
