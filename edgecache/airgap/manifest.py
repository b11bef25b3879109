"""A manifest read strictly: its kind and the descriptors it references, with their sizes.

The proxy trusts an upstream's manifest once its digest matches what the upstream named; a
bundle names nothing we asked for, so import reads every manifest against the spec's shape
(an index has `manifests`, an image has a `config` and `layers`, every descriptor a valid digest
and size) before it is believed. Warm and export read manifests the same way, for the sizes and
platforms that the index does not keep.

Digests are `Digest`s from here on (parsed once, with the descriptor); their text is made
only where it leaves: SQL, file names, JSON, messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgecache.errors import EdgecacheError, ManifestInvalid
from edgecache.oci import (
    DOCKER_MANIFEST_V1,
    DOCKER_MANIFEST_V1_SIGNED,
    INDEX_TYPES,
    MANIFEST_LIMIT,
    MANIFEST_TYPES,
    Digest,
    manifest_document,
    media_type_of,
    references_of,
)

SCHEMA1_TYPES = (DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED)


@dataclass(frozen=True, slots=True)
class Descriptor:
    digest: Digest
    size: int | None  # None only for Docker schema 1 layers, which carry no size
    media_type: str | None = None
    platform: Mapping[str, Any] | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    foreign: bool = False  # has `urls`: fetched from elsewhere, registries do not hold it

    @classmethod
    def parse(cls, raw: object, where: str) -> Descriptor:
        if not isinstance(raw, dict):
            raise ManifestInvalid(f"{where}: a descriptor is not a JSON object")
        text = raw.get("digest")
        size = raw.get("size")
        if not isinstance(text, str):
            raise ManifestInvalid(f"{where}: a descriptor has no digest")
        try:
            digest = Digest.parse(text)
        except EdgecacheError as exc:
            raise ManifestInvalid(f"{where}: {exc}") from None
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ManifestInvalid(f"{where}: descriptor {digest} has no valid size")
        media_type = raw.get("mediaType")
        if media_type is not None and not isinstance(media_type, str):
            raise ManifestInvalid(f"{where}: descriptor {digest} has a non-string mediaType")
        platform = raw.get("platform")
        annotations = raw.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
            raise ManifestInvalid(f"{where}: descriptor {digest} has malformed annotations")
        return cls(digest, size, media_type, platform if isinstance(platform, dict) else None,
                   annotations, foreign=bool(raw.get("urls")))


@dataclass(frozen=True, slots=True)
class Manifest:
    """`children` are the platform manifests of an index, or the config and layers of an image
    (config first)."""

    media_type: str
    is_index: bool
    children: tuple[Descriptor, ...]
    references: tuple[Digest, ...] = ()  # `references_of`: what the index records it references

    @classmethod
    def parse(cls, body: bytes, declared: str | None, where: str) -> Manifest:
        """Raise ManifestInvalid unless `body` is a manifest of a known kind and shape. A
        declared media type (a descriptor's or a Content-Type) must agree with the body's own."""
        if len(body) > MANIFEST_LIMIT:
            raise ManifestInvalid(f"{where}: a manifest over {MANIFEST_LIMIT} bytes")
        declared = declared if declared in MANIFEST_TYPES else None
        try:
            doc = manifest_document(body)
            media_type = media_type_of(doc, declared)
        except ManifestInvalid as exc:
            raise ManifestInvalid(f"{where}: not a manifest ({exc})") from None
        references = tuple(references_of(doc))
        embedded = doc.get("mediaType")
        if declared and isinstance(embedded, str) and embedded != declared:
            raise ManifestInvalid(f"{where}: declared as {declared} but says {embedded}")
        if media_type in SCHEMA1_TYPES:
            layers = doc.get("fsLayers")
            if not isinstance(layers, list):
                raise ManifestInvalid(f"{where}: a schema 1 manifest without fsLayers")
            sums: dict[Digest, Descriptor] = {}
            for item in layers:
                blob = item.get("blobSum") if isinstance(item, dict) else None
                try:
                    digest = Digest.parse(str(blob))
                except EdgecacheError:
                    raise ManifestInvalid(f"{where}: an invalid blobSum") from None
                sums.setdefault(digest, Descriptor(digest, None))
            return cls(media_type, False, tuple(sums.values()), references)
        if doc.get("schemaVersion") != 2:
            raise ManifestInvalid(f"{where}: schemaVersion is not 2")
        if media_type in INDEX_TYPES:
            items = doc.get("manifests")
            if not isinstance(items, list):
                raise ManifestInvalid(f"{where}: an index without a manifests list")
            return cls(media_type, True,
                       tuple(Descriptor.parse(item, where) for item in items), references)
        config, layers = doc.get("config"), doc.get("layers", [])
        if not isinstance(config, dict) or not isinstance(layers, list):
            raise ManifestInvalid(f"{where}: an image manifest without config and layers")
        descriptors = [Descriptor.parse(config, where)]
        descriptors += [Descriptor.parse(item, where) for item in layers]
        return cls(media_type, False, tuple(descriptors), references)

    def blobs(self) -> list[Descriptor]:
        """An image's config and layers, each once, without foreign layers (Windows base
        layers: the registry does not hold them, the client fetches them from their `urls`)."""
        if self.is_index:
            return []
        seen: dict[Digest, Descriptor] = {}
        for child in self.children:
            if not child.foreign:
                seen.setdefault(child.digest, child)
        return list(seen.values())
