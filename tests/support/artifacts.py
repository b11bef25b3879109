"""Referrers as a signer pushes them: an artifact manifest whose `subject` is an image, and the
referrers tag schema's index (`sha256-<hex>`) for a registry without the referrers API."""

from __future__ import annotations

import json

from tests.support.images import OCI_INDEX, OCI_MANIFEST, Blob, Image, make_image, make_layer
from tests.support.registry import DockerRegistry

EMPTY_CONFIG = Blob(b"{}", "application/vnd.oci.empty.v1+json")
SIGNATURE = "application/vnd.example.signature.v1"
SBOM = "application/vnd.example.sbom.v1"


def make_artifact(subject: Image, artifact_type: str, payload: bytes) -> Image:
    """An OCI 1.1 artifact manifest (empty config, one layer) that refers to `subject`."""
    layer = Blob(payload, artifact_type + "+json")
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": EMPTY_CONFIG.descriptor(),
        "layers": [layer.descriptor()],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest,
                    "size": len(subject.manifest)},
    }
    return Image(json.dumps(doc).encode(), OCI_MANIFEST, EMPTY_CONFIG, [layer])


def descriptor(artifact: Image) -> dict[str, object]:
    """The referrers entry for `artifact`, as the referrers API lists it."""
    artifact_type = json.loads(artifact.manifest)["artifactType"]
    return {"mediaType": artifact.media_type, "digest": artifact.digest,
            "size": len(artifact.manifest), "artifactType": artifact_type}


def schema_tag(subject: Image) -> str:
    return "sha256-" + subject.digest.removeprefix("sha256:")


def schema_index(artifacts: list[Image]) -> bytes:
    """The index the `sha256-<hex>` tag names: one descriptor per referrer."""
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                       "manifests": [descriptor(a) for a in artifacts]}).encode()


def push_signed(registry: DockerRegistry, repo: str, tag: str, seed: int) -> tuple[Image,
                                                                                 list[Image]]:
    """An image with a signature and an SBOM, pushed as a signer does to a registry without the
    referrers API (Distribution 2.8): the artifacts by digest, then the `sha256-<hex>` tag."""
    image = make_image([make_layer(2000, seed)])
    registry.push_image(repo, tag, image)
    artifacts = [make_artifact(image, SIGNATURE, b'{"signed": "%d"}' % seed),
                 make_artifact(image, SBOM, b'{"packages": [%d]}' % seed)]
    for artifact in artifacts:
        registry.push_image(repo, artifact.digest, artifact)
    registry.push_manifest(repo, schema_tag(image), schema_index(artifacts), OCI_INDEX)
    return image, artifacts
