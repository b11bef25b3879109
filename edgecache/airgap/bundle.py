"""The bundle format: a tar of an OCI image layout, usually zstd-compressed.

```
oci-layout                  {"imageLayoutVersion": "1.0.0"}
blobs/<alg>/<hex>           every manifest, config and layer, once, named by its digest
index.json                  the roots, each with org.opencontainers.image.ref.name
```
An OCI layout rather than a format of our own because the far side may not run edgecache:
`skopeo copy oci-archive:`, `oras` and `ctr import` read it, and `skopeo copy ...
oci-archive:` writes one we import. Our exporter writes `index.json` last, so a bundle cut
short never carries a complete index; other producers write it anywhere, so import reads it
wherever it is.

What a member may be is decided here, from its header alone, before a byte of it is read:
only these names, only regular files (and the two directory levels), nothing that could point
outside the layout. Docker's `manifest.json` and `repositories` (written by `docker save`
next to the layout) are tolerated and ignored.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edgecache import jsondoc
from edgecache.airgap.manifest import Descriptor
from edgecache.errors import BundleInvalid, EdgecacheError, ManifestInvalid
from edgecache.oci import ALGORITHMS, MANIFEST_LIMIT, MANIFEST_TYPES, OCI_INDEX, Digest

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
LAYOUT_NAME = "oci-layout"
INDEX_NAME = "index.json"
LAYOUT_VERSION = "1.0.0"
LAYOUT_LIMIT = 4096
INDEX_LIMIT = MANIFEST_LIMIT
INDEX_ENTRIES_LIMIT = 10_000
IGNORED_NAMES = frozenset({"manifest.json", "repositories"})
IGNORED_LIMIT = MANIFEST_LIMIT
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

Kind = Literal["layout", "index", "blob", "dir", "ignored"]
_TYPE_NAMES = {
    tarfile.SYMTYPE: "a symlink", tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo", tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}


@dataclass(frozen=True, slots=True)
class Member:
    kind: Kind
    name: str  # normalised: no `./`, no trailing `/`
    digest: Digest | None = None


def _normalise(raw: str) -> str:
    shown = raw[:120]
    if not raw or raw.startswith("/") or "\\" in raw or "\x00" in raw:
        raise BundleInvalid(f"member {shown!r}: absolute or malformed name")
    parts = raw.split("/")
    while parts and parts[0] == ".":
        parts.pop(0)
    if parts and parts[-1] == "":
        parts.pop()
    if any(part in ("", ".", "..") for part in parts):
        raise BundleInvalid(f"member {shown!r}: a path with '..', '.' or '//' is not allowed")
    return "/".join(parts)


def classify(info: tarfile.TarInfo) -> Member:
    """What a tar member is, or BundleInvalid. Decided from the header only."""
    name = _normalise(info.name)
    shown = name[:120]
    if info.type == tarfile.DIRTYPE:
        parts = name.split("/")
        if name == "" or name == "blobs" or (len(parts) == 2 and parts[0] == "blobs"
                                             and parts[1] in ALGORITHMS):
            return Member("dir", name)
        raise BundleInvalid(f"member {shown!r}: an unexpected directory")
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        what = _TYPE_NAMES.get(info.type, f"of tar type {info.type!r}")
        raise BundleInvalid(f"member {shown!r} is {what}: only regular files are accepted")
    if name == LAYOUT_NAME:
        _limit(info, LAYOUT_LIMIT)
        return Member("layout", name)
    if name == INDEX_NAME:
        _limit(info, INDEX_LIMIT)
        return Member("index", name)
    if name in IGNORED_NAMES:
        _limit(info, IGNORED_LIMIT)
        return Member("ignored", name)
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "blobs":
        raise BundleInvalid(f"member {shown!r}: not a name an OCI image layout holds")
    try:
        digest = Digest.parse(f"{parts[1]}:{parts[2]}")
    except EdgecacheError:
        raise BundleInvalid(f"member {shown!r}: a blob name that is not a valid digest") from None
    return Member("blob", name, digest)


def _limit(info: tarfile.TarInfo, limit: int) -> None:
    if info.size > limit:
        raise BundleInvalid(f"{info.name[:120]!r} is {info.size} bytes; at most {limit} allowed")


def blob_name(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


def layout_document() -> bytes:
    return json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode()


def check_layout(data: bytes) -> None:
    try:
        doc = jsondoc.parse(data, LAYOUT_LIMIT)
    except jsondoc.JsonUnreadable:
        raise BundleInvalid("oci-layout is not JSON") from None
    version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
    if not isinstance(version, str) or not version.startswith("1."):
        raise BundleInvalid(f"oci-layout: unsupported imageLayoutVersion {version!r}")


@dataclass(frozen=True, slots=True)
class Root:
    """One entry of index.json: an image (or index) and the name it is known by."""

    name: str | None  # the full reference, e.g. docker.io/library/alpine:3.20
    digest: Digest
    media_type: str
    size: int


def index_document(roots: Sequence[Root]) -> bytes:
    manifests: list[dict[str, Any]] = []
    for root in roots:
        entry: dict[str, Any] = {"mediaType": root.media_type, "digest": str(root.digest),
                                 "size": root.size}
        if root.name:
            entry["annotations"] = {REF_NAME: root.name}
        manifests.append(entry)
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return json.dumps(doc, indent=2).encode() + b"\n"


def parse_index(data: bytes) -> list[Descriptor]:
    """index.json's entries; each must name a manifest by a valid digest and size."""
    try:
        doc = jsondoc.parse(data, INDEX_LIMIT)
    except jsondoc.JsonUnreadable:
        raise BundleInvalid("index.json is not JSON") from None
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise BundleInvalid("index.json is not an OCI image index (schemaVersion 2)")
    items = doc.get("manifests")
    if not isinstance(items, list) or not items:
        raise BundleInvalid("index.json lists no manifests")
    if len(items) > INDEX_ENTRIES_LIMIT:
        raise BundleInvalid(f"index.json lists {len(items)} manifests; at most "
                            f"{INDEX_ENTRIES_LIMIT} allowed")
    roots = []
    for item in items:
        try:
            descriptor = Descriptor.parse(item, "index.json")
        except ManifestInvalid as exc:
            raise BundleInvalid(str(exc)) from None
        if descriptor.media_type not in MANIFEST_TYPES:
            raise BundleInvalid(f"index.json: {descriptor.digest} is declared as "
                                f"{descriptor.media_type!r}, not a manifest type")
        roots.append(descriptor)
    return roots
