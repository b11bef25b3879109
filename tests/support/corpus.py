"""The images the integration tests seed into their upstreams, generated from fixed seeds.

Two upstreams, as edgecache sees them:

- `docker.io` (a docker-registry; Docker Hub's single-component names live under `library/`):
  `library/alpha:1` and `library/beta:1` share one layer; `library/multi:1` is an OCI index
  (amd64 + arm64); `library/classic:1` is a Docker schema 2 image; `big` is one 32 MiB blob
  with no manifest, which the concurrency test pushes to `library/big` itself.
- `registry-b.test` (a second docker-registry): `team/app:1` and an index `team/multi:2`.

No blob is in both upstreams, so a request counted at one upstream can only have been routed
there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tests.support.images import Blob, Image, Index, make_image, make_index, make_layer
from tests.support.registry import DockerRegistry

MiB = 1 << 20
HUB = "docker.io"
REGISTRY_B = "registry-b.test"

Top = Image | Index


@dataclass(frozen=True)
class Seeded:
    """One tagged image or index as the upstream stores it (`repository` is the upstream's)."""

    repository: str
    tag: str
    top: Top

    @property
    def manifests(self) -> dict[str, bytes]:
        """digest -> bytes of the top manifest and, for an index, of every child manifest."""
        out = {self.top.digest: self.top.manifest}
        if isinstance(self.top, Index):
            for image in self.top.images:
                out[image.digest] = image.manifest
        return out

    @property
    def blobs(self) -> dict[str, bytes]:
        """digest -> bytes of every config and layer."""
        images = self.top.images if isinstance(self.top, Index) else [self.top]
        return {blob.digest: blob.data for image in images for blob in image.blobs}

    @property
    def content(self) -> dict[str, bytes]:
        """Everything a full pull (`--all`) transfers: manifests and blobs, by digest."""
        return {**self.manifests, **self.blobs}


@dataclass(frozen=True)
class Corpus:
    shared: Blob
    alpha: Seeded
    beta: Seeded
    multi: Seeded
    classic: Seeded
    big: Blob
    app: Seeded
    app_multi: Seeded
    hub: list[Seeded] = field(default_factory=list)
    registry_b: list[Seeded] = field(default_factory=list)


def build_corpus() -> Corpus:
    shared = make_layer(3 * MiB, 100)
    alpha = Seeded("library/alpha", "1",
                   make_image([make_layer(4 * MiB, 101), make_layer(2 * MiB, 102), shared]))
    beta = Seeded("library/beta", "1", make_image([shared, make_layer(2 * MiB, 103)]))
    multi = Seeded("library/multi", "1", make_index([
        make_image([make_layer(3 * MiB, 104)], "amd64"),
        make_image([make_layer(3 * MiB, 105)], "arm64"),
    ]))
    classic = Seeded("library/classic", "1",
                     make_image([make_layer(1 * MiB, 106)], docker=True))
    big = Blob(random.Random(107).randbytes(32 * MiB), "application/octet-stream")
    app = Seeded("team/app", "1",
                 make_image([make_layer(3 * MiB, 201), make_layer(2 * MiB, 202)]))
    app_multi = Seeded("team/multi", "2", make_index([
        make_image([make_layer(2 * MiB, 203)], "amd64"),
        make_image([make_layer(2 * MiB, 204)], "arm64"),
    ]))
    return Corpus(shared, alpha, beta, multi, classic, big, app, app_multi,
                  hub=[alpha, beta, multi, classic], registry_b=[app, app_multi])


def seed(registry: DockerRegistry, images: list[Seeded]) -> None:
    for item in images:
        if isinstance(item.top, Index):
            registry.push_index(item.repository, item.tag, item.top)
        else:
            registry.push_image(item.repository, item.tag, item.top)
