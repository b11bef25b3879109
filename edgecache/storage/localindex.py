"""The index's queries about local repositories (pushed content), beside `index.py`.

Local content is every digest linked to the local registry's name (`links.upstream`), its tags
the `tags` rows with that upstream, exactly as for an upstream's; what only pushes have is the
`subjects` table (a pushed manifest's `subject`, for the referrers API). Deleting local content
removes its link, its tags and its subject row: the bytes stay while another upstream links
them (a cached copy), and are left to eviction (no longer protected) or garbage collection.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecache.storage.index import Index


@dataclass(frozen=True, slots=True)
class Referrer:
    digest: str
    artifact_type: str | None


class LocalIndex:
    def __init__(self, index: Index, registry: str) -> None:
        self._index = index
        self.registry = registry

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

    def delete_tag(self, repository: str, tag: str) -> bool:
        cursor = self._index.sql.execute(
            "DELETE FROM tags WHERE upstream=? AND repository=? AND tag=?",
            (self.registry, repository, tag))
        return cursor.rowcount > 0

    def delete(self, digest: str) -> bool:
        """Stop holding `digest` locally: its link, the tags naming it, its subject row (one
        transaction). False when it was not local content."""
        with self._index.transaction():
            cursor = self._index.sql.execute(
                "DELETE FROM links WHERE digest=? AND upstream=?", (digest, self.registry))
            if cursor.rowcount == 0:
                return False
            self._index.sql.execute("DELETE FROM tags WHERE upstream=? AND digest=?",
                                    (self.registry, digest))
            self._index.sql.execute("DELETE FROM subjects WHERE digest=?", (digest,))
        return True


def local_digests(index: Index, registry: str) -> set[str]:
    """Every digest the local registry holds: what eviction never chooses."""
    return {row[0] for row in index.sql.execute(
        "SELECT digest FROM links WHERE upstream=?", (registry,))}
