"""Local content (what was pushed into the local registry) across the air gap.

`export --all` walks every `tags` row, the local registry's among them; what tags do not name
is carried here: each exported local image's referrers (signatures, SBOMs pushed with a
`subject`, usually untagged), as roots named `<local>/<repository>@<digest>`. On import, a
root whose name is under the local registry (by tag or by digest) is linked to the local
registry's name, exactly as a push links it: never evicted, seen by pushes (mounts), GC and
the referrers API, whose `subjects` rows are recorded from the manifests themselves. The local
registry is a route name like an upstream's, so the names resolve by the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable

from edgecache import jsondoc
from edgecache.airgap.bundle import Root
from edgecache.config import Config
from edgecache.errors import EdgecacheError
from edgecache.local.registry import subject_of
from edgecache.oci import MANIFEST_LIMIT, Digest, ImageReference
from edgecache.storage.index import Index
from edgecache.storage.localindex import LocalIndex
from edgecache.storage.store import Store


def local_name(config: Config) -> str | None:
    return config.local.registry if config.local is not None else None


def routes(config: Config) -> tuple[str, ...]:
    """Every name a bundle's image may be tagged under: the upstreams and the local registry."""
    local = local_name(config)
    return (*config.upstreams, *((local,) if local else ()))


def local_route(name: str | None, local: str | None) -> str | None:
    """The local registry's name when `name` (an index.json ref.name) is under it."""
    if name is None or local is None:
        return None
    try:
        ref = ImageReference.parse(name)
    except EdgecacheError:
        return None
    return local if ref.registry.lower() == local else None


def referrer_roots(store: Store, local: str | None, root: Root) -> list[tuple[str, Digest]]:
    """(name, digest) of each local manifest whose `subject` is a local root's digest, named
    by digest in the root's repository."""
    if local_route(root.name, local) is None or local is None or root.name is None:
        return []
    repository = ImageReference.parse(root.name).repository
    return [(f"{local}/{repository}@{digest}", digest)
            for digest in store.local_referrers(local, root.digest)]


def record_subjects(index: Index, local: str, manifests: Iterable[tuple[Digest, bytes]]) -> None:
    """The `subjects` rows of imported local manifests, as their pushes recorded them. A
    manifest whose subject would not have been accepted by a push is simply not a referrer."""
    rows = LocalIndex(index, local)
    for digest, body in manifests:
        try:
            doc = jsondoc.parse(body, MANIFEST_LIMIT)
            subject, artifact_type = subject_of(doc) if isinstance(doc, dict) else (None, None)
        except (jsondoc.JsonUnreadable, EdgecacheError):
            continue
        if subject is not None:
            rows.record_subject(str(digest), subject, artifact_type)
