from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecache import oci
from edgecache.errors import DigestInvalid, ManifestInvalid, NameInvalid, TagInvalid


def test_digest_roundtrip_and_hasher() -> None:
    data = b"hello"
    digest = oci.Digest.of(data)
    assert str(digest) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert oci.Digest.parse(str(digest)) == digest
    hasher = digest.hasher()
    hasher.update(data)
    assert hasher.hexdigest() == digest.hex
    assert oci.Digest.parse("sha512:" + "a" * 128).algorithm == "sha512"


@pytest.mark.parametrize("text", [
    "sha256:xyz", "sha256:" + "a" * 63, "sha256:" + "A" * 64, "md5:" + "a" * 32,
    "sha256", ":abc", "sha256:" + "a" * 64 + "/..", "sha512:" + "a" * 64, "",
])
def test_bad_digests_are_refused(text: str) -> None:
    with pytest.raises(DigestInvalid):
        oci.Digest.parse(text)


@pytest.mark.parametrize("name", ["library/nginx", "a", "a-b/c.d/e__f", "x0/y-1"])
def test_valid_names(name: str) -> None:
    assert oci.validate_name(name) == name


@pytest.mark.parametrize("name", ["Nginx", "..", "a/../b", "a//b", "/a", "a/", "-a", "a:b",
                                  "a" * 256, "a\x00b", "a b"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(NameInvalid):
        oci.validate_name(name)


@pytest.mark.parametrize("tag", ["latest", "1.27", "v1_2-3", "A" * 128])
def test_valid_tags(tag: str) -> None:
    assert oci.validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".hidden", "-x", "a" * 129, "a/b", "a:b"])
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(TagInvalid):
        oci.validate_tag(tag)


@given(st.text(max_size=80))
def test_digest_parse_never_raises_anything_else(text: str) -> None:
    try:
        digest = oci.Digest.parse(text)
    except DigestInvalid:
        return
    assert str(digest) == text


def test_manifest_media_type_prefers_known_content_type() -> None:
    body = json.dumps({"schemaVersion": 2, "config": {}, "layers": []}).encode()
    assert oci.manifest_media_type(body, oci.DOCKER_MANIFEST) == oci.DOCKER_MANIFEST
    assert oci.manifest_media_type(body, "application/json") == oci.OCI_MANIFEST
    index = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    assert oci.manifest_media_type(index, None) == oci.OCI_INDEX
    embedded = json.dumps({"schemaVersion": 2, "mediaType": oci.DOCKER_MANIFEST_LIST,
                           "manifests": []}).encode()
    assert oci.manifest_media_type(embedded, "text/plain") == oci.DOCKER_MANIFEST_LIST


@pytest.mark.parametrize("body", [b"<html>captive portal</html>", b"[1, 2]", b"\xff\xfe",
                                  b'{"schemaVersion": 3}'])
def test_manifest_media_type_rejects_non_manifests(body: bytes) -> None:
    with pytest.raises(ManifestInvalid):
        oci.manifest_media_type(body, "text/html")


def test_a_manifests_own_media_type_decides() -> None:
    docker = json.dumps({"schemaVersion": 2, "mediaType": oci.DOCKER_MANIFEST, "config": {},
                         "layers": []}).encode()
    for content_type in (None, "application/json", "text/plain",
                         f"{oci.DOCKER_MANIFEST}; charset=utf-8", oci.DOCKER_MANIFEST.upper()):
        assert oci.manifest_media_type(docker, content_type) == oci.DOCKER_MANIFEST
    bare = json.dumps({"schemaVersion": 2, "config": {}, "layers": []}).encode()
    assert oci.manifest_media_type(bare, oci.DOCKER_MANIFEST) == oci.DOCKER_MANIFEST


@pytest.mark.parametrize(("embedded", "content_type"), [
    (oci.DOCKER_MANIFEST, oci.OCI_MANIFEST),
    (oci.OCI_INDEX, oci.DOCKER_MANIFEST_LIST),
    (oci.DOCKER_MANIFEST_LIST, oci.OCI_MANIFEST),
    ("application/vnd.example.not-a-manifest", oci.OCI_MANIFEST),
    (42, oci.OCI_MANIFEST),
])
def test_a_content_type_that_contradicts_the_body_is_refused(embedded: object,
                                                             content_type: str) -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": embedded, "config": {},
                       "manifests": [], "layers": []}).encode()
    with pytest.raises(ManifestInvalid):
        oci.manifest_media_type(body, content_type)
