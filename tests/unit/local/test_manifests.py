"""Manifests in the local registry: PUT by tag and digest, references that must exist, the
size limit, `subject` (OCI-Subject, referrers), deletes, and tag lists in lexical pages."""

from __future__ import annotations

import io
import json
from typing import Any

from tests.support.images import OCI_MANIFEST, make_image, make_layer, sha256
from tests.unit.local.conftest import LOCAL, Pusher

EMPTY = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"


def artifact(subject: dict[str, Any], artifact_type: str, note: str) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": EMPTY_TYPE, "digest": sha256(EMPTY), "size": 2},
            "layers": [{"mediaType": EMPTY_TYPE, "digest": sha256(EMPTY), "size": 2}],
            "subject": subject, "annotations": {"note": note}}


async def test_pushed_image_is_pulled_by_tag_and_digest(pusher: Pusher) -> None:
    image = make_image([make_layer(2000, 1)])
    resp = await pusher.image(image, "v1")
    assert resp.status == 201
    assert resp.headers["Docker-Content-Digest"] == image.digest
    assert resp.headers["Location"] == f"/v2/{LOCAL}/team/app/manifests/{image.digest}"
    for ref in ("v1", image.digest):
        got = await pusher.edge.client.get(pusher.url(f"manifests/{ref}"))
        assert got.status == 200 and await got.read() == image.manifest
        assert got.headers["Content-Type"] == image.media_type
    by_digest = await pusher.request("PUT", pusher.url(f"manifests/{image.digest}"),
                                     data=image.manifest,
                                     headers={"Content-Type": image.media_type})
    assert by_digest.status == 201


async def test_manifest_naming_unknown_blobs_is_refused(pusher: Pusher) -> None:
    image = make_image([make_layer(500, 2)])
    await pusher.blob(image.config.data)  # the layer is never pushed
    resp = await pusher.request("PUT", pusher.url("manifests/v1"), data=image.manifest,
                                headers={"Content-Type": image.media_type})
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert (await pusher.edge.client.get(pusher.url("manifests/v1"))).status == 404


async def test_manifest_digest_mismatch_garbage_and_size_limit(pusher: Pusher) -> None:
    image = make_image([make_layer(500, 3)])
    for blob in image.blobs:
        await pusher.blob(blob.data)
    wrong = await pusher.request("PUT", pusher.url(f"manifests/{sha256(b'x')}"),
                                 data=image.manifest)
    assert wrong.status == 400 and (await wrong.json())["errors"][0]["code"] == "DIGEST_INVALID"
    garbage = await pusher.request("PUT", pusher.url("manifests/v1"), data=b"not json")
    assert garbage.status == 400
    assert (await garbage.json())["errors"][0]["code"] == "MANIFEST_INVALID"
    huge = await pusher.request("PUT", pusher.url("manifests/v1"),
                                data=io.BytesIO(b" " * (4 * 2**20 + 1)))
    assert huge.status == 413


async def test_subject_is_answered_by_the_referrers_api(pusher: Pusher) -> None:
    image = make_image([make_layer(500, 4)])
    await pusher.image(image, "v1")
    await pusher.blob(EMPTY)
    subject = {"mediaType": image.media_type, "digest": image.digest,
               "size": len(image.manifest)}
    sig = artifact(subject, "application/vnd.example.signature", "sig")
    sbom = artifact(subject, "application/vnd.example.sbom", "sbom")
    for doc in (sig, sbom):
        body = json.dumps(doc).encode()
        resp = await pusher.manifest(doc, sha256(body))
        assert resp.status == 201 and resp.headers["OCI-Subject"] == image.digest

    client = pusher.edge.client
    all_refs = await client.get(pusher.url(f"referrers/{image.digest}"))
    assert all_refs.status == 200
    index = await all_refs.json(content_type=None)
    assert {m["artifactType"] for m in index["manifests"]} == {
        "application/vnd.example.signature", "application/vnd.example.sbom"}
    assert {m["annotations"]["note"] for m in index["manifests"]} == {"sig", "sbom"}
    filtered = await client.get(pusher.url(f"referrers/{image.digest}"),
                                params={"artifactType": "application/vnd.example.sbom"})
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["annotations"]["note"] for m in (await filtered.json(content_type=None))[
        "manifests"]] == ["sbom"]
    none = await client.get(pusher.url(f"referrers/{sha256(b'nothing')}"))
    assert none.status == 200 and (await none.json(content_type=None))["manifests"] == []


async def test_deletes_of_tag_manifest_and_blob(pusher: Pusher) -> None:
    image = make_image([make_layer(700, 5)])
    await pusher.image(image, "v1")
    await pusher.request("PUT", pusher.url("manifests/v2"), data=image.manifest,
                         headers={"Content-Type": image.media_type})
    client = pusher.edge.client
    assert (await pusher.request("DELETE", pusher.url("manifests/v2"))).status == 202
    assert (await client.get(pusher.url("manifests/v2"))).status == 404
    assert (await client.get(pusher.url("manifests/v1"))).status == 200
    assert (await pusher.request("DELETE", pusher.url(f"manifests/{image.digest}"))).status == 202
    assert (await client.get(pusher.url(f"manifests/{image.digest}"))).status == 404
    assert (await client.get(pusher.url("manifests/v1"))).status == 404  # its tags went too
    layer = image.layers[0].digest
    assert (await pusher.request("DELETE", pusher.url(f"blobs/{layer}"))).status == 202
    assert (await client.get(pusher.url(f"blobs/{layer}"))).status == 404
    assert (await pusher.request("DELETE", pusher.url(f"blobs/{layer}"))).status == 404
    # deleting needs the push right too
    assert (await client.delete(pusher.url(f"blobs/{image.config.digest}"))).status == 401


async def test_tag_list_pages_in_lexical_order(pusher: Pusher) -> None:
    image = make_image([make_layer(300, 6)])
    for tag in ("b", "a", "C", "c"):
        await pusher.image(image, tag)
    client = pusher.edge.client
    whole = await (await client.get(pusher.url("tags/list"))).json()
    assert whole == {"name": "team/app", "tags": ["C", "a", "b", "c"]}
    first = await client.get(pusher.url("tags/list"), params={"n": "2"})
    assert (await first.json())["tags"] == ["C", "a"]
    assert "last=a" in first.headers["Link"]
    rest = await client.get(pusher.url("tags/list"), params={"n": "2", "last": "a"})
    assert (await rest.json())["tags"] == ["b", "c"] and "Link" not in rest.headers
