"""What is on disk: shared content stored once, and a cache that outlives its process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.corpus import HUB, Corpus, seed
from tests.support.edgecache import StartEdgecache
from tests.support.registry import DockerRegistry
from tests.support.skopeo import Skopeo, verify_oci_layout

pytestmark = pytest.mark.integration

INDEX_FILES = ("index.db", "index.db-wal", "index.db-shm")


def test_a_layer_shared_by_two_images_is_stored_once(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, skopeo: Skopeo,
        tmp_path: Path) -> None:
    ec = edgecaches("edgecache", {HUB: hub.url}, default_upstream=HUB)
    mark = hub.mark()
    for seeded in (corpus.alpha, corpus.beta):
        out = tmp_path / f"oci-{seeded.tag}-{seeded.repository.replace('/', '-')}"
        skopeo.copy(f"docker://{ec.address}/{seeded.repository}:{seeded.tag}", f"oci:{out}",
                    tls_verify=False)
        verify_oci_layout(out, seeded)

    unique = {**corpus.alpha.content, **corpus.beta.content}
    assert corpus.shared.digest in corpus.alpha.blobs
    assert corpus.shared.digest in corpus.beta.blobs
    assert ec.stored_blobs() == {digest: len(data) for digest, data in unique.items()}

    # every file under storage: the shared layer has one file, one link, and the stored bytes
    # add up to the unique content exactly (the index holds no content)
    files = [path for path in ec.storage.rglob("*")
             if path.is_file() and path.name not in INDEX_FILES]
    names = [path.name for path in files]
    assert names.count(corpus.shared.digest.removeprefix("sha256:")) == 1
    assert len(names) == len(set(names)) == len(unique)
    shared_file = next(p for p in files if corpus.shared.digest.endswith(p.name))
    assert os.stat(shared_file).st_nlink == 1
    assert sum(path.stat().st_size for path in files) == sum(len(d) for d in unique.values())

    blob_gets = [r.path for r in hub.pulls_since(mark)
                 if r.method == "GET" and r.path.endswith(corpus.shared.digest)]
    assert len(blob_gets) == 1


def test_cache_survives_a_restart_without_its_upstream(
        docker_registry: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache,
        skopeo: Skopeo, tmp_path: Path) -> None:
    seeded = corpus.multi
    seed(docker_registry, [seeded])
    storage = tmp_path / "cache-storage"
    first = edgecaches("first", {HUB: docker_registry.url}, default_upstream=HUB, storage=storage)
    skopeo.copy(f"docker://{first.address}/{seeded.repository}:{seeded.tag}",
                f"oci:{tmp_path / 'before'}", tls_verify=False)
    verify_oci_layout(tmp_path / "before", seeded)
    first.close()
    docker_registry.close()
    assert first.proc.poll() is not None
    assert docker_registry.proc.poll() is not None

    second = edgecaches("second", {HUB: docker_registry.url}, default_upstream=HUB,
                        storage=storage)
    mark = second.mark()
    by_digest = f"docker://{second.address}/{seeded.repository}@{seeded.top.digest}"
    skopeo.copy(by_digest, f"oci:{tmp_path / 'after'}", tls_verify=False)
    verify_oci_layout(tmp_path / "after", seeded)
    # by tag too: the upstream cannot answer the tag check, so the cached digest is served
    skopeo.copy(f"docker://{second.address}/{seeded.repository}:{seeded.tag}",
                f"oci:{tmp_path / 'after-tag'}", tls_verify=False)
    verify_oci_layout(tmp_path / "after-tag", seeded)

    served = [r for r in second.requests_since(mark) if "/manifests/" in r.path
              or "/blobs/" in r.path]
    assert {r.path.rpartition("/")[2] for r in served} >= {*seeded.content, seeded.tag}
    assert all(r.status == 200 for r in served)
