"""An exported image's referrers (signatures, SBOMs), carried as the referrers tag schema.

The bundle names them by the tag `<upstream>/<repository>:sha256-<hex of the image>`, pointing
at an index of the referrers: the upstream's referrers answer edgecache kept (`referrers`
table), else the upstream's own tag-schema tag if it is cached. Import records that tag like any
other, and on the far site the referrers API answers from it (`proxy/referrers.py` reads the tag
schema when the upstream cannot be asked): a signature verifies offline.
"""

from __future__ import annotations

from collections.abc import Container

from edgecache.airgap.bundle import Root
from edgecache.airgap.reference import full_name
from edgecache.errors import EdgecacheError
from edgecache.oci import Digest, ImageReference, canonical_registry, official_repository
from edgecache.proxy.referrers import schema_tag
from edgecache.storage.store import Store


def referrers_of(store: Store, upstreams: Container[str],
                 root: Root) -> tuple[str, Digest] | None:
    """(the tag-schema name, the digest of the index of referrers) for an exported root, when
    the cache holds a referrers answer for it."""
    if root.name is None:
        return None
    try:
        ref = ImageReference.parse(root.name)
    except EdgecacheError:
        return None
    subject = root.digest
    upstream = canonical_registry(ref.registry, upstreams)
    if upstream is None:
        return None
    repository = official_repository(upstream, ref.repository)
    tag = schema_tag(subject)
    kept = store.referrers(upstream, repository, subject)
    record = kept or store.tag(upstream, repository, tag)
    if record is None or not store.children(record.digest):
        return None  # none kept, or no referrers: nothing to carry
    return full_name(upstream, repository, tag), record.digest
