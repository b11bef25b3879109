"""The local registry's content rules: what a push must satisfy to be stored, and what pulls,
mounts and deletes of local content see.

Local content is primary data held under the local registry's name (`links`), not per
repository: a blob or manifest pushed to one local repository is readable from every other
(as a cross-repository mount would make it anyway), tags are per repository. A manifest is
kept only when every blob and manifest it references is local content already
(MANIFEST_BLOB_UNKNOWN otherwise), within the manifest size limit, its digest matching the one
it is pushed under; its `subject` is recorded for the referrers API. Every write goes through
`Store.publish` (`put` for a manifest): verify, fsync, rename, rows and link in one transaction.
Deletes leave tombstones (`storage/tombstones.py`) and a push clears them: in a site of nodes
the newest event, push or delete, is what every node answers (`cluster/localcopy.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgecache.errors import (
    BlobUnknown,
    DigestInvalid,
    DigestMismatch,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestRejected,
    ManifestUnknown,
)
from edgecache.oci import INDEX_TYPES, Digest, children_of, manifest_document, media_type_of
from edgecache.storage.localindex import LocalIndex
from edgecache.storage.store import BlobWriter, Store, Stored


@dataclass(frozen=True, slots=True)
class Pushed:
    digest: Digest
    subject: str | None  # the `subject` recorded (the OCI-Subject header), if any


class LocalRegistry:
    def __init__(self, store: Store, index: LocalIndex) -> None:
        self.name = index.registry
        self._store = store
        self.index = index

    # ---- reads ---------------------------------------------------------------------------------

    def blob(self, digest: Digest) -> Stored | None:
        if not self.index.holds(str(digest)):
            return None
        return self._store.blob(digest)

    def resolve(self, repository: str, reference: str, digest: Digest | None) -> Digest:
        """The digest a manifest reference names here (ManifestUnknown if none)."""
        if digest is None:
            tag = self._store.tag(self.name, repository, reference)
            if tag is None:
                raise ManifestUnknown(f"manifest unknown: no tag {reference!r} in {repository}")
            digest = tag.digest
        if not self.index.holds(str(digest)):
            raise ManifestUnknown(f"manifest unknown: {digest} is not in {repository}")
        return digest

    def manifest(self, digest: Digest) -> Stored:
        stored = self._store.manifest(digest)
        if stored is None or stored.media_type is None:
            raise ManifestUnknown(f"manifest unknown: {digest}")
        return stored

    def tags(self, repository: str) -> list[str]:
        return self._store.tags(self.name, repository)

    def referrer_rows(self, subject: Digest) -> list[tuple[Digest, str | None, bytes]]:
        """(digest, artifact type, body) of each local manifest whose subject is `subject`."""
        found = []
        for row in self.index.referrers(str(subject)):
            digest = Digest.parse(row.digest)
            body = self._store.read(digest)
            if body is not None:
                found.append((digest, row.artifact_type, body))
        return found

    def media_type(self, digest: Digest) -> str | None:
        return self._store.media_type(digest)

    # ---- writes --------------------------------------------------------------------------------

    def mount(self, digest: Digest) -> bool:
        """A blob already held here: nothing to upload (automatic discovery covers a missing
        `from` too). Content cached from an upstream is never mounted: a push cannot widen who
        may read private content."""
        return self.blob(digest) is not None

    async def publish_blob(self, writer: BlobWriter, digest: Digest) -> None:
        """Name an upload's writer and publish it as local content; DigestInvalid (400) when
        the bytes are not `digest` (the file is then removed)."""
        try:
            writer.name(digest)
            await self._store.publish(writer, upstreams=(self.name,))
        except DigestMismatch as exc:
            writer.abort()
            raise DigestInvalid(f"the uploaded bytes do not match {digest}: {exc}") from None

    async def put_manifest(self, repository: str, reference: str, digest: Digest | None,
                           body: bytes, content_type: str | None) -> Pushed:
        actual = Digest.of(body, digest.algorithm if digest is not None else "sha256")
        if digest is not None and actual != digest:
            raise DigestInvalid(f"the manifest's digest is {actual}, not {digest}")
        try:
            doc = manifest_document(body)
            media_type = media_type_of(doc, content_type)
        except ManifestInvalid as exc:
            raise ManifestRejected(str(exc)) from None
        children = children_of(doc)
        self._check_references(doc, children, media_type)
        subject, artifact_type = subject_of(doc)
        await self._store.put(actual, body, media_type, children, upstreams=(self.name,))
        if subject is not None:
            self.index.record_subject(str(actual), subject, artifact_type)
        if digest is None:
            self._store.set_tag(self.name, repository, reference, actual)
        self.index.pushed(repository, reference if digest is None else None, str(actual))
        return Pushed(actual, subject)

    def _check_references(self, doc: dict[str, Any], children: list[str],
                          media_type: str) -> None:
        missing = [c for c in children if not self.index.holds(c)]
        if missing:
            raise ManifestBlobUnknown(f"manifest references unknown content: {missing[0]}"
                                      + (f" (and {len(missing) - 1} more)" if missing[1:] else ""))
        if media_type in INDEX_TYPES:
            for child in children:
                if self._store.media_type(Digest.parse(child)) is None:
                    raise ManifestBlobUnknown(f"index references {child}, not a manifest here")

    # ---- deletes -------------------------------------------------------------------------------

    def delete_manifest(self, repository: str, reference: str, digest: Digest | None,
                        at: float | None = None) -> None:
        """Delete a tag, or a manifest by digest with the tags naming it; `at`: when (a
        peer's delete carries its time), default now."""
        if digest is None:
            if not self.index.delete_tag(repository, reference, at):
                raise ManifestUnknown(f"manifest unknown: no tag {reference!r} in {repository}")
            return
        if self._store.media_type(digest) is None or not self.index.delete(
                str(digest), at, manifest=True):
            raise ManifestUnknown(f"manifest unknown: {digest}")

    def delete_blob(self, digest: Digest, at: float | None = None) -> None:
        if self._store.media_type(digest) is not None or not self.index.delete(
                str(digest), at):
            raise BlobUnknown(f"blob unknown: {digest}")

def subject_of(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    """The manifest's `subject` digest and its artifact type (`artifactType`, else an image
    manifest's config media type, as the spec's referrers list gives it)."""
    subject = doc.get("subject")
    if not isinstance(subject, dict) or not isinstance(subject.get("digest"), str):
        return None, None
    try:
        digest = str(Digest.parse(subject["digest"]))
    except DigestInvalid:
        raise ManifestRejected("the manifest's subject has an invalid digest") from None
    artifact = doc.get("artifactType")
    if not isinstance(artifact, str):
        config = doc.get("config")
        artifact = config.get("mediaType") if isinstance(config, dict) else None
    return digest, artifact if isinstance(artifact, str) else None
