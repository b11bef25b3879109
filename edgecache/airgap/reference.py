"""Image names as the air-gap commands meet them, mapped onto the cache's upstream names.

The index keys tags by the configured upstream name (`docker.io`), while people and tools write
`index.docker.io/alpine`, `docker.io/library/alpine`, or (in a bundle's ref.name) a bare
`3.20`. One mapping, the router's, so a name warmed, exported and imported lands on the tag a
client pull would use; and one place deciding which tag an imported root gets.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass

from edgecache.airgap.bundle import CONTAINERD_NAME, REF_NAME
from edgecache.errors import ConfigError, EdgecacheError
from edgecache.oci import (
    TAG_RE,
    Digest,
    ImageReference,
    canonical_registry,
    names_registry,
    official_repository,
)


def names_a_registry(text: str) -> bool:
    """Whether an image name starts with a registry (`names_registry`, Docker's rule)."""
    head, sep, _ = text.partition("/")
    return bool(sep) and names_registry(head)


def full_name(upstream: str, repository: str, tag: str | None = None,
              digest: str | None = None) -> str:
    """`docker.io/library/alpine:3.20`: what index.json's ref.name and the tables show."""
    text = f"{upstream}/{official_repository(upstream, repository)}"
    if tag:
        text += f":{tag}"
    if digest and not tag:
        text += f"@{digest}"
    return text



@dataclass(frozen=True)
class TagTarget:
    """A tag row of the index: (upstream, repository, tag)."""

    upstream: str
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.upstream}/{self.repository}:{self.tag}"


def parse_repository(text: str, upstreams: Container[str]) -> tuple[str, str]:
    """`--repository registry/repository`, for bundle entries named by a bare tag."""
    try:
        if "@" in text or ":" in text.rpartition("/")[2]:
            raise ConfigError("give registry/repository, without a tag or digest")
        ref = ImageReference.parse(text)
    except EdgecacheError as exc:
        raise ConfigError(f"--repository {text!r}: {exc}") from None
    upstream = canonical_registry(ref.registry, upstreams)
    if upstream is None:
        raise ConfigError(f"--repository {text!r}: {ref.registry!r} is not a configured "
                          "upstream")
    return upstream, official_repository(upstream, ref.repository)


def tag_for(annotations: Mapping[str, str], digest: Digest, upstreams: Container[str],
            repository: tuple[str, str] | None) -> tuple[TagTarget | None, str | None]:
    """The tag an imported root gets, and a warning when it gets none. Tools name roots
    differently: skopeo writes the reference it was given (`docker.io/library/alpine:3.20`, or
    just `3.20`), docker and containerd a bare tag in ref.name and the full name in
    `io.containerd.image.name`. A root without a usable name is still imported: it can be pulled
    by digest."""
    ref_name = annotations.get(REF_NAME, "")
    shown = ref_name or str(digest)
    by_digest = f"pull it by digest: {digest}"
    for text in (ref_name, annotations.get(CONTAINERD_NAME, "")):
        if not text or not names_a_registry(text):
            continue
        try:
            ref = ImageReference.parse(text)
        except EdgecacheError as exc:
            return None, f"{shown}: {exc}; not tagged ({by_digest})"
        if ref.digest is not None and ref.digest != str(digest):
            return None, f"{shown}: names {ref.digest} but is {digest}; not tagged"
        if ref.tag is None:
            return None, None  # a digest reference: nothing to tag
        upstream = canonical_registry(ref.registry, upstreams)
        if upstream is None:
            return None, (f"{shown}: registry {ref.registry!r} is not a configured upstream; "
                          f"not tagged ({by_digest})")
        return TagTarget(upstream, official_repository(upstream, ref.repository), ref.tag), None
    if ref_name and TAG_RE.fullmatch(ref_name):
        if repository is not None:
            return TagTarget(*repository, ref_name), None
        return None, (f"ref.name {ref_name!r} is only a tag; not tagged (give --repository "
                      f"registry/repository; or {by_digest})")
    return None, f"{shown}: no registry/repository:tag name; not tagged ({by_digest})"
