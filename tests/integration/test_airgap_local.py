"""Local content across the air gap: pushed with skopeo into one node's local registry,
`export --all`, imported on a fresh store, pulled back from the far node as local content
(linked to the local registry's name: never evicted, seen by pushes and GC)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_airgap import edgecache, ok
from tests.integration.test_push import (
    LOCAL,
    _auth,
    assert_complete,
    skopeo_push,
    start_local,
)
from tests.support.corpus import Corpus
from tests.support.edgecache import StartEdgecache
from tests.support.httpclient import fetch
from tests.support.images import OCI_MANIFEST, Index
from tests.support.registry import DockerRegistry
from tests.support.skopeo import Skopeo

pytestmark = pytest.mark.integration


def _local_links(storage: Path) -> set[str]:
    with sqlite3.connect(storage / "index.db") as db:
        return {row[0] for row in db.execute("SELECT digest FROM links WHERE upstream=?",
                                             (LOCAL,))}


def _send(method: str, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={**_auth(), **headers})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def _referrer(url: str, subject: dict[str, object]) -> str:
    """Push a small signature-like artifact whose subject is `subject`: its digest."""
    empty = b"{}"
    empty_digest = "sha256:" + hashlib.sha256(empty).hexdigest()
    base = f"{url}/v2/{LOCAL}/team/multi"
    status, answer = _send("POST", f"{base}/blobs/uploads/?digest={empty_digest}", empty,
                           {"Content-Type": "application/octet-stream"})
    assert status == 201, answer
    empty_desc = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest,
                  "size": 2}
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "artifactType": "application/vnd.example.signature",
           "config": empty_desc, "layers": [empty_desc], "subject": subject}
    body = json.dumps(doc).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    status, answer = _send("PUT", f"{base}/manifests/{digest}", body,
                           {"Content-Type": OCI_MANIFEST})
    assert status == 201, answer
    return digest


def test_pushed_content_is_exported_with_all_and_imported_as_local_content(
        registry_b: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache,
        skopeo: Skopeo, tmp_path: Path) -> None:
    near = start_local(edgecaches, registry_b, tmp_path, storage=tmp_path / "near")
    source = f"docker://{registry_b.url.removeprefix('http://')}/{corpus.app_multi.repository}:2"
    pushed = skopeo_push(skopeo, source, f"docker://{near.address}/{LOCAL}/team/multi:2")
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    top = corpus.app_multi.top.digest
    signature = _referrer(near.url, {"mediaType": corpus.app_multi.top.media_type,
                                     "digest": top, "size": len(corpus.app_multi.top.manifest)})
    held = _local_links(tmp_path / "near")

    bundle = tmp_path / "local.tar.zst"
    exported = ok(edgecache("export", "--config", str(near.config_path), "--all",
                            "--output", str(bundle)))
    assert f"{LOCAL}/team/multi:2" in exported
    near.close()

    # the far node: a fresh store, the same local registry name
    far_storage = tmp_path / "far"
    far = start_local(edgecaches, registry_b, tmp_path, storage=far_storage, name="far")
    far.close()  # its config is written; import into its store with the service stopped
    imported = ok(edgecache("import", "--config", str(far.config_path), str(bundle)))
    assert f"{LOCAL}/team/multi:2" in imported
    assert _local_links(far_storage) == held  # every pushed digest is local content there

    far = start_local(edgecaches, registry_b, tmp_path, storage=far_storage, name="far2")
    assert assert_complete(far, "team/multi", "2") == top
    tags = fetch(f"{far.url}/v2/{LOCAL}/team/multi/tags/list")
    assert json.loads(tags.body)["tags"] == ["2"]
    listed = json.loads(fetch(f"{far.url}/v2/{LOCAL}/team/multi/referrers/{top}").body)
    assert [d["digest"] for d in listed["manifests"]] == [signature]
    # pushes see it: a mount of an imported blob needs no upload
    multi = corpus.app_multi.top
    assert isinstance(multi, Index)
    layer = multi.images[0].layers[0].digest
    status, answer = _send("POST", f"{far.url}/v2/{LOCAL}/other/blobs/uploads/?mount={layer}",
                           b"", {})
    assert status == 201, answer
