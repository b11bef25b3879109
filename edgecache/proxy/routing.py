"""Which upstream and repository a request means: three routing styles on one port.

1. containerd (and k3s) append `?ns=<registry>` to every request;
2. podman, CRI-O and containerd's `override_path` put the registry first in the path:
   `/v2/<registry>/<repository>/...`;
3. Docker's `registry-mirrors` name no registry: the request goes to `default_upstream`.

A registry name that is not configured is refused here, before any connection: edgecache never
contacts a host that is not in its configuration. So is everything that cannot name content:
a manifest reference that is neither a digest nor a tag is a manifest that does not exist (the
spec's 404 MANIFEST_UNKNOWN), answered without asking anyone; a malformed digest is a 400.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from edgecache.errors import (
    BlobUploadUnknown,
    DigestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    NotOffered,
)
from edgecache.oci import (
    Digest,
    canonical_registry,
    is_tag,
    names_registry,
    official_repository,
    validate_name,
)

Kind = Literal["manifests", "blobs", "tags", "referrers", "uploads"]

_UPLOAD_RE = re.compile(r"^(?P<name>.+)/blobs/uploads(?:/(?P<ref>[^/]*))?$")
_PATH_RE = re.compile(r"^(?P<name>.+)/(?P<kind>manifests|blobs|tags|referrers)/(?P<ref>[^/]+)$")


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed, validated registry request."""

    upstream: str
    repository: str
    kind: Kind
    reference: str  # a tag or digest for manifests, a digest for blobs and referrers, "list"
    # the reference parsed, when it is a digest: parsed once here, carried to the store
    digest: Digest | None = field(default=None, compare=False)
    # a cluster peer's request: "owner" or "local" (`cluster/proof.py`); "" for a client's
    peer: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.digest is None and ":" in self.reference:  # a tag has no ':'
            object.__setattr__(self, "digest", Digest.parse(self.reference))

    @property
    def is_digest(self) -> bool:
        return self.digest is not None

    def content_digest(self) -> Digest:
        """The digest a blob (or digest-named manifest) request names."""
        if self.digest is None:
            raise DigestInvalid(f"{self.reference[:200]!r} is not a digest")
        return self.digest


@dataclass(frozen=True, slots=True)
class CatalogRoute:
    """`/v2/_catalog` of one upstream (named by `?ns=` or a path prefix), or of all (None)."""

    upstream: str | None


class Router:
    def __init__(self, upstreams: Iterable[str], default: str | None,
                 local: str | None = None) -> None:
        """`local`: the local registry's name (edgecache/local/), a route like an upstream's,
        the default when no upstream is, and the only one with upload sessions."""
        self._upstreams = frozenset(upstreams) | ({local} if local else set())
        self._default = default if default is not None else local
        self._local = local

    def _canonical(self, registry: str) -> str | None:
        return canonical_registry(registry, self._upstreams)

    def resolve(self, path: str, ns: str | None) -> Target:
        """Parse the part of the URL path after `/v2/` (still percent-encoded) and `?ns=`, for a
        GET or HEAD (the caller refuses other methods first)."""
        if "%" in path or "\\" in path or "\x00" in path:
            raise NameInvalid("encoded or escaped characters are not allowed in registry paths")
        if {".", ".."} & set(path.split("/")):
            raise NameInvalid("path segments '.' and '..' are not allowed in registry paths")
        if "/blobs/uploads" in f"/{path}":
            return self._upload(path, ns)
        match = _PATH_RE.match(path)
        if match is None:
            if path.rstrip("/") == "_catalog":
                raise NotOffered("the catalog is not offered by this mirror")
            raise NotOffered(f"not a registry API endpoint: /v2/{path[:200]}")
        name, kind, ref = match.group("name"), match.group("kind"), match.group("ref")
        if kind == "tags" and ref != "list":
            raise NotOffered(f"not a registry API endpoint: /v2/{path[:200]}")
        upstream, repository = self._split(name, ns)
        repository = official_repository(upstream, validate_name(repository))
        digest = None
        if kind in ("blobs", "referrers") or (kind == "manifests" and ":" in ref):
            digest = Digest.parse(ref)  # a tag has no ':', so this one means a digest
            ref = str(digest)
        elif kind == "manifests" and not is_tag(ref):
            raise ManifestUnknown(f"manifest unknown: {ref[:200]!r} is neither a tag nor a digest")
        return Target(upstream, repository, kind, ref, digest)  # type: ignore[arg-type]

    def catalog(self, path: str, ns: str | None) -> CatalogRoute | None:
        """The catalog a path after `/v2/` asks for (`_catalog`, `<registry>/_catalog`, either
        with `?ns=`), or None when it is not a catalog request."""
        head, _, tail = path.rstrip("/").rpartition("/")
        if tail != "_catalog" or "%" in path or "\\" in path or "\x00" in path:
            return None
        named = ns if ns is not None else (head or None)
        if named is None:
            return CatalogRoute(None)
        upstream = self._canonical(named)
        if upstream is None or (ns is not None and head and self._canonical(head) != upstream):
            raise NameUnknown(f"registry {named[:100]!r} is not configured on this mirror")
        return CatalogRoute(upstream)

    def _upload(self, path: str, ns: str | None) -> Target:
        """An upload session's path: only the local registry has them."""
        match = _UPLOAD_RE.match(path)
        upstream = repository = ""
        if match is not None and self._local is not None:
            upstream, repository = self._split(match.group("name"), ns)
        if upstream != self._local or match is None:
            raise BlobUploadUnknown("no uploads: pushing is not supported by a pull-through cache")
        return Target(upstream, validate_name(repository), "uploads", match.group("ref") or "")

    def _split(self, name: str, ns: str | None) -> tuple[str, str]:
        head, sep, rest = name.partition("/")
        if ns is not None:
            upstream = self._canonical(ns)
            if upstream is None:
                raise NameUnknown(f"registry {ns[:100]!r} is not configured on this mirror")
            # containerd with override_path sends both: /v2/<registry>/<repo>?ns=<registry>
            if sep and self._canonical(head) == upstream:
                return upstream, rest
            return upstream, name
        if sep and (names_registry(head) or self._canonical(head) is not None):
            upstream = self._canonical(head)
            if upstream is None:
                raise NameUnknown(f"registry {head[:100]!r} is not configured on this mirror")
            return upstream, rest
        if self._default is None:
            raise NameUnknown("no registry named (use ?ns= or a path prefix) and no default")
        return self._default, name
