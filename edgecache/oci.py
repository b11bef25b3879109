"""OCI distribution vocabulary: digests, repository names, tags, media types. No I/O.

The grammar is the distribution spec's; validating here, before any path is built or any upstream
is asked, is what keeps traversal and injection attempts from touching anything.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from edgecache import jsondoc
from edgecache.errors import (
    DigestInvalid,
    DigestMismatch,
    ManifestInvalid,
    NameInvalid,
    TagInvalid,
)

NAME_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{NAME_COMPONENT}(?:/{NAME_COMPONENT})*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
NAME_MAX = 255
# The most a manifest may be, everywhere one is read: upstream answers, bundles, the store.
MANIFEST_LIMIT = 4 * 1024 * 1024
# Steps of a walk over the manifest graph: index → manifest → blob is two; 8 bounds a hostile one.
GRAPH_DEPTH = 8
Node = TypeVar("Node", "Digest", str)  # what `reach` walks: digests, or their text

ALGORITHMS = {"sha256": 64, "sha512": 128}

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
MANIFEST_TYPES = (
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_V1_SIGNED,
    DOCKER_MANIFEST_V1,
)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
# What we send upstream: every manifest type, so a tag resolves to the same (richest) manifest
# whichever client asks, and the cached bytes are what the upstream publishes under that tag.
MANIFEST_ACCEPT = ", ".join(MANIFEST_TYPES)


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated `algorithm:hex` content digest."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        if not DIGEST_RE.fullmatch(text):
            raise DigestInvalid(f"invalid digest {text[:200]!r}")
        algorithm, _, hexpart = text.partition(":")
        length = ALGORITHMS.get(algorithm)
        if length is None:
            raise DigestInvalid(f"unsupported digest algorithm {algorithm!r}")
        if len(hexpart) != length or not re.fullmatch(r"[a-f0-9]+", hexpart):
            raise DigestInvalid(f"invalid {algorithm} digest {text[:200]!r}")
        return cls(algorithm, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> Any:
        """A fresh hashlib object for this digest's algorithm."""
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


class Hashing:
    """Bytes hashed on their way towards the digest that names them. Every check of content
    against its name (a fill's reader, a manifest, an import, an export, `verify`) is this
    one comparison, so they all agree on what a mismatch is and how it is reported."""

    __slots__ = ("_hasher", "expected")

    def __init__(self, expected: Digest) -> None:
        self.expected = expected
        self._hasher = expected.hasher()

    def update(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)

    def actual(self) -> Digest:
        return Digest(self.expected.algorithm, self._hasher.hexdigest())

    def matches(self) -> bool:
        return bool(self._hasher.hexdigest() == self.expected.hex)

    def check(self) -> None:
        """Raise DigestMismatch (expected, actual) unless the bytes so far match."""
        if not self.matches():
            raise DigestMismatch(str(self.expected), str(self.actual()))


DOCKER_HUB = "docker.io"
# Docker Hub answers to several host names; containerd sends `ns=docker.io`, others the API host.
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.ASCII)


def is_registry_name(text: str) -> bool:
    """Whether `text` is a registry `host[:port]` (a DNS name, a port 1-65535)."""
    host, sep, port = text.partition(":")
    return (HOSTNAME_RE.fullmatch(host) is not None and len(host) <= 253
            and (not sep or (port.isascii() and port.isdigit() and len(port) <= 5
                             and 0 < int(port) <= 65535)))


def names_registry(component: str) -> bool:
    """Docker's rule: a first path component with a dot, a port or `localhost` is a registry."""
    return "." in component or ":" in component or component == "localhost"


def canonical_registry(name: str, upstreams: Container[str]) -> str | None:
    """The configured upstream a registry name means (Docker Hub answers to three names)."""
    name = name.lower()
    if name in upstreams:
        return name
    if name in DOCKER_HUB_ALIASES and DOCKER_HUB in upstreams:
        return DOCKER_HUB
    return None


def official_repository(registry: str, repository: str) -> str:
    """Docker Hub's official images live under `library/`: `nginx` means `library/nginx`."""
    if registry == DOCKER_HUB and "/" not in repository:
        return f"library/{repository}"
    return repository


def validate_name(name: str) -> str:
    if len(name) > NAME_MAX or not NAME_RE.fullmatch(name):
        raise NameInvalid(f"invalid repository name {name[:300]!r}")
    return name


def is_tag(text: str) -> bool:
    """Whether `text` is a tag by the spec's grammar (at most 128 characters)."""
    return TAG_RE.fullmatch(text) is not None


def validate_tag(tag: str) -> str:
    if not is_tag(tag):
        raise TagInvalid(f"invalid tag {tag[:200]!r}")
    return tag


def manifest_document(body: bytes) -> dict[str, Any]:
    """A manifest's JSON object, read once for every question asked of it."""
    try:
        doc = jsondoc.parse(body, MANIFEST_LIMIT)
    except jsondoc.JsonUnreadable as exc:
        raise ManifestInvalid("manifest is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest is not a JSON object")
    return doc


def manifest_media_type(body: bytes, content_type: str | None) -> str:
    """`media_type_of` the body's document."""
    return media_type_of(manifest_document(body), content_type)


def media_type_of(doc: dict[str, Any], content_type: str | None) -> str:
    """The media type to store a manifest under, checking the body really is a manifest.

    The body's own `mediaType`, when it has one, decides: it is covered by the digest, so every
    upstream serving these bytes agrees on it, and the first one to serve a digest cannot give
    it another type for everyone. A Content-Type naming another manifest type contradicts the
    body (a broken or poisoned upstream): refused. Without one, the upstream's Content-Type
    decides when it names a manifest type, else (`application/json`) the body's shape.
    """
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    embedded = doc.get("mediaType")
    if embedded is not None:
        if not isinstance(embedded, str) or embedded not in MANIFEST_TYPES:
            raise ManifestInvalid(f"unsupported manifest media type {str(embedded)[:100]!r}")
        if declared in MANIFEST_TYPES and declared != embedded:
            raise ManifestInvalid(f"manifest declared as {declared} but says {embedded}")
        return embedded
    if declared in MANIFEST_TYPES:
        return declared
    if doc.get("schemaVersion") == 2:
        if isinstance(doc.get("manifests"), list):
            return OCI_INDEX
        if isinstance(doc.get("config"), dict):
            return OCI_MANIFEST
    if doc.get("schemaVersion") == 1:
        return DOCKER_MANIFEST_V1_SIGNED if "signatures" in doc else DOCKER_MANIFEST_V1
    raise ManifestInvalid(f"unsupported manifest media type {declared[:100]!r}")


def manifest_children(body: bytes) -> list[str]:
    """`children_of` the body's document. A stored manifest has already been parsed once, so
    garbage yields nothing."""
    try:
        return children_of(manifest_document(body))
    except ManifestInvalid:
        return []


def references_of(doc: dict[str, Any]) -> list[Digest]:
    """The lenient reading: every valid digest the manifest references (config, layers, blobs
    and, for an index, its manifests), whatever its kind and shape, each once, in order."""
    descriptors: list[Any] = [doc.get("config")]
    for key in ("layers", "manifests", "blobs"):
        items = doc.get(key)
        if isinstance(items, list):
            descriptors.extend(items)
    found: list[str] = [item["digest"] for item in descriptors
                        if isinstance(item, dict) and isinstance(item.get("digest"), str)]
    layers = doc.get("fsLayers")  # Docker schema 1
    if isinstance(layers, list):
        found.extend(i["blobSum"] for i in layers
                     if isinstance(i, dict) and isinstance(i.get("blobSum"), str))
    valid: list[Digest] = []
    for digest in dict.fromkeys(found):
        try:
            valid.append(Digest.parse(digest))
        except DigestInvalid:
            continue
    return valid


def children_of(doc: dict[str, Any]) -> list[str]:
    """`references_of` as text: `Store.put` and `Record.children` take a manifest's children
    as the index's `refs` rows spell them."""
    return [str(digest) for digest in references_of(doc)]


def reach(roots: Iterable[Node], step: Callable[[Node], Iterable[Node]],
          depth: int = GRAPH_DEPTH) -> set[Node]:
    """Every digest within `depth` steps of `roots`, breadth first. `step` gives a digest's
    neighbours: its children to walk down (a closure), its parents to walk up (what goes with
    a blob); each digest is stepped from once, on the level it is first reached (`Digest`s, or
    strings in the index's own walks)."""
    found = set(roots)
    frontier = list(found)
    for _ in range(depth):
        frontier = list(dict.fromkeys(n for d in frontier for n in step(d) if n not in found))
        if not frontier:
            break
        found.update(frontier)
    return found


@dataclass(frozen=True, slots=True)
class ImageReference:
    """`registry/repository[:tag][@digest]`, as operators write images in pins and lists."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        registry, sep, rest = text.strip().partition("/")
        if not sep or not rest:
            raise NameInvalid(f"image reference {text[:200]!r} must start with a registry name")
        rest, at, digest = rest.partition("@")
        name, tag = rest, None
        last = rest.rsplit("/", 1)[-1]
        if ":" in last:
            name, _, tag = rest.rpartition(":")
            validate_tag(tag)
        validate_name(name)
        parsed = str(Digest.parse(digest)) if at else None
        if tag is None and parsed is None:
            tag = "latest"
        return cls(registry.lower(), name, tag, parsed)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
