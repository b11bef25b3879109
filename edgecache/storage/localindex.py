"""The index's queries about local repositories (pushed content), beside `index.py`.

Local content is every digest linked to the local registry's name (`links.upstream`), its tags
the `tags` rows with that upstream, exactly as for an upstream's; what only pushes have is the
`subjects` table (a pushed manifest's `subject`, for the referrers API). Deleting local content
removes its link, its tags and its subject row: the bytes stay while another upstream links
them (a cached copy), and are left to eviction (no longer protected) or garbage collection.
Deleting a tag, or a manifest by digest (and with it the tags naming it), leaves a tombstone
(`tombstones.py`): what a site of nodes compares with their pushes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from edgecache.storage.index import Index
from edgecache.storage.tombstones import DIGESTS, Tombstones


@dataclass(frozen=True, slots=True)
class Referrer:
    digest: str
    artifact_type: str | None


class LocalIndex:
    def __init__(self, index: Index, registry: str) -> None:
        self._index = index
        self.registry = registry
        self.tombstones = Tombstones(index)

    def holds(self, digest: str) -> bool:
        """Whether `digest` is local content (pushed or mounted here)."""
        return self._index.sql.execute(
            "SELECT 1 FROM links WHERE digest=? AND upstream=?",
            (digest, self.registry)).fetchone() is not None

    def record_subject(self, digest: str, subject: str, artifact_type: str | None) -> None:
        self._index.sql.execute(
            "INSERT INTO subjects(digest, subject, artifact_type) VALUES (?, ?, ?)"
            " ON CONFLICT(digest) DO UPDATE SET subject=excluded.subject,"
            " artifact_type=excluded.artifact_type", (digest, subject, artifact_type))

    def referrers(self, subject: str) -> list[Referrer]:
        """The local manifests whose `subject` is `subject`, by digest."""
        return [Referrer(d, t) for d, t in self._index.sql.execute(
            "SELECT s.digest, s.artifact_type FROM subjects s JOIN links l"
            " ON l.digest = s.digest AND l.upstream = ? WHERE s.subject = ? ORDER BY s.digest",
            (self.registry, subject))]

    def delete_tag(self, repository: str, tag: str, at: float | None = None) -> bool:
        """Delete the tag if it was pushed before `at` (default now) and leave its tombstone;
        False when there was no such tag (a newer push stays, and no tombstone is left)."""
        at = time.time() if at is None else at
        with self._index.transaction():
            cursor = self._index.sql.execute(
                "DELETE FROM tags WHERE upstream=? AND repository=? AND tag=? AND checked_at<=?",
                (self.registry, repository, tag, at))
            if self._index.sql.execute(
                    "SELECT 1 FROM tags WHERE upstream=? AND repository=? AND tag=?",
                    (self.registry, repository, tag)).fetchone() is None:
                self.tombstones.record(repository, tag, at)
        return cursor.rowcount > 0

    def delete(self, digest: str, at: float | None = None, manifest: bool = False) -> bool:
        """Stop holding `digest` locally: its link, the tags naming it (each leaves a
        tombstone), its subject row (one transaction); a manifest leaves its own tombstone.
        False when it was not local content."""
        at = time.time() if at is None else at
        with self._index.transaction():
            cursor = self._index.sql.execute(
                "DELETE FROM links WHERE digest=? AND upstream=?", (digest, self.registry))
            if cursor.rowcount == 0:
                return False
            for repository, tag in self._index.sql.execute(
                    "DELETE FROM tags WHERE upstream=? AND digest=? RETURNING repository, tag",
                    (self.registry, digest)).fetchall():
                self.tombstones.record(repository, tag, at)
            self._index.sql.execute("DELETE FROM subjects WHERE digest=?", (digest,))
            if manifest:
                self.tombstones.record(DIGESTS, digest, at)
        return True

    def pushed(self, repository: str, tag: str | None, digest: str) -> None:
        """A push of `digest` (under `tag`): neither is deleted any more here."""
        self.tombstones.clear(DIGESTS, digest)
        if tag is not None:
            self.tombstones.clear(repository, tag)

    def tag_times(self, repository: str) -> dict[str, float]:
        """Each local tag of `repository` with the time of its push."""
        return {tag: at for tag, at in self._index.sql.execute(
            "SELECT tag, checked_at FROM tags WHERE upstream=? AND repository=?",
            (self.registry, repository))}

def local_digests(index: Index, registry: str) -> set[str]:
    """Every digest the local registry holds: what eviction never chooses."""
    return {row[0] for row in index.sql.execute(
        "SELECT digest FROM links WHERE upstream=?", (registry,))}
