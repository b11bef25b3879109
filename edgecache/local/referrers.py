"""`GET /v2/<name>/referrers/<digest>` for local content: computed from the `subjects` rows
pushed manifests left (the subject need not exist: a signature may arrive before its image).

The answer is an OCI image index of descriptors (media type, digest, size, `artifactType`,
the manifest's `annotations`); `artifactType=` filters, and says so in `OCI-Filters-Applied`.
Always 200: no referrers is an empty list, not a 404. Cached upstream content is answered
elsewhere (`proxy/referrers.py`); only the local registry's route reaches this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgecache.errors import ManifestInvalid
from edgecache.local.registry import LocalRegistry
from edgecache.oci import OCI_INDEX, Digest, manifest_document

FILTER = "artifactType"


@dataclass(frozen=True, slots=True)
class LocalReferrers:
    body: bytes  # an OCI image index
    filters: str | None  # OCI-Filters-Applied


def local_referrers(registry: LocalRegistry, subject: Digest,
                    query: Mapping[str, str]) -> LocalReferrers:
    wanted = query.get(FILTER) or None
    descriptors: list[dict[str, Any]] = []
    for digest, artifact_type, body in registry.referrer_rows(subject):
        if wanted is not None and artifact_type != wanted:
            continue
        descriptor: dict[str, Any] = {
            "mediaType": registry.media_type(digest) or "", "digest": str(digest),
            "size": len(body)}
        if artifact_type:
            descriptor["artifactType"] = artifact_type
        try:
            annotations = manifest_document(body).get("annotations")
        except ManifestInvalid:  # stored after parsing; cannot be garbage, but costs nothing
            annotations = None
        if isinstance(annotations, dict) and annotations:
            descriptor["annotations"] = annotations
        descriptors.append(descriptor)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    return LocalReferrers(json.dumps(index, separators=(",", ":")).encode(),
                          FILTER if wanted is not None else None)
