"""Generated, real image content: uncompressed tar layers, image configs, manifests, indexes.

Layers are real tar archives (so containerd can unpack them) of seeded random bytes (so they do
not compress and every test gets the same digests for the same seed).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str = OCI_LAYER

    @property
    def digest(self) -> str:
        return sha256(self.data)

    def descriptor(self, media_type: str | None = None) -> dict[str, object]:
        return {"mediaType": media_type or self.media_type, "digest": self.digest,
                "size": len(self.data)}


@dataclass(frozen=True)
class Image:
    manifest: bytes
    media_type: str
    config: Blob
    layers: list[Blob] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def blobs(self) -> list[Blob]:
        return [self.config, *self.layers]


@dataclass(frozen=True)
class Index:
    manifest: bytes
    media_type: str
    images: list[Image]

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def make_layer(size: int, seed: int) -> Blob:
    payload = random.Random(seed).randbytes(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"data-{seed}.bin")
        info.size = len(payload)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload))
    return Blob(buf.getvalue(), OCI_LAYER)


def make_image(layers: list[Blob], arch: str = "amd64", docker: bool = False) -> Image:
    config_doc = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
    }
    config = Blob(json.dumps(config_doc, sort_keys=True).encode(),
                  DOCKER_CONFIG if docker else OCI_CONFIG)
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    layer_type = DOCKER_LAYER if docker else OCI_LAYER
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": [layer.descriptor(layer_type) for layer in layers],
    }
    body = json.dumps(doc, indent=3).encode()  # not canonical on purpose: bytes must be kept
    return Image(body, media_type, config, layers)


def make_index(images: list[Image]) -> Index:
    manifests = []
    for image in images:
        arch = json.loads(image.config.data)["architecture"]
        manifests.append({"mediaType": image.media_type, "digest": image.digest,
                          "size": len(image.manifest),
                          "platform": {"architecture": arch, "os": "linux"}})
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return Index(json.dumps(doc, indent=2).encode(), OCI_INDEX, images)
