"""Garbage collection of local repositories: mark from their tags, sweep what nothing reaches.

Local content is every digest linked to the local registry's name; its tags are the `tags` rows
with that upstream. Mark: every local tag's digest, then through `refs` (index -> manifests ->
configs and layers), then the referrers of whatever is marked (`subjects`: a pushed manifest
whose `subject` is marked is kept with its closure, to a fixpoint), as Distribution and zot do:
a signature is pushed by digest, untagged, and would otherwise go at the first collection
while the image it signs stays. Sweep: every local digest not marked, except
- what was published or read less than `grace` ago (the row's `added_at` or `last_access`, and
  the file's mtime: a push's blobs arrive before the manifest that references them, and a blob
  uploaded again is written anew);
- what, at the moment of its removal, a tag, a manifest outside the sweep, or a kept subject
  references (a push that finished meanwhile);
- what another upstream links too (a cached copy for that route): only the local link goes,
  and what such a manifest references stays with it;
The plan applies the same checks (to a fixpoint), so `--dry-run` lists what the sweep removes,
unless a push lands in between.
Removal, per batch: the rows (blob, its refs, links, subject) in one transaction that also makes
the checks above, then each file is renamed aside and removed unless its mtime says it was
written since the cutoff (a publish of the same digest between its rename and its rows: the file
goes back, and that publish's rows follow). So no index row is ever left without its file; a
collection killed after the rows leaves a stray file, private (no link): under tmp/ (swept at
start) or under blobs/ (adopted by the reconcile after an unclean stop, or `verify --repair`).
Left to the push path: a manifest PUT that found an old unreferenced blob present and names it
after the sweep removed it (as in Distribution, whose GC wants the registry read-only).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edgecache import children
from edgecache.oci import Digest, reach
from edgecache.storage.index import Index
from edgecache.storage.layout import Layout

BATCH = 128


@dataclass(frozen=True, slots=True)
class Garbage:
    digest: str
    size: int
    why: str
    others: tuple[str, ...] = ()  # other upstreams that link it: only the local link goes


@dataclass
class Collected:
    """What a collection found and did; `dry_run`: found only."""

    found: list[Garbage] = field(default_factory=list)
    removed: int = 0
    freed: int = 0
    unlinked: int = 0  # local links dropped from content another upstream keeps
    kept: int = 0  # found, then kept at removal (referenced, or written meanwhile)
    marked: int = 0
    seconds: float = 0.0


def _has_table(index: Index, name: str) -> bool:
    return index.sql.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                             (name,)).fetchone() is not None


def mark(index: Index, registry: str) -> set[str]:
    """Every digest a local tag reaches, referrers of reached manifests included."""
    roots = [row[0] for row in index.sql.execute(
        "SELECT DISTINCT digest FROM tags WHERE upstream=?", (registry,))]
    marked: set[str] = set()

    def step(digest: str) -> list[str]:
        return [] if digest in marked else index.children(digest)

    subjects = _subjects(index, registry)
    pending = roots
    for _ in range(len(subjects) + 1):  # each round adds a referrer or ends
        marked |= reach(pending, step)
        pending = [d for d, subject in subjects.items() if subject in marked and d not in marked]
        if not pending:
            break
    return marked


def _subjects(index: Index, registry: str) -> dict[str, str]:
    """Local referrer -> its subject (the push helper's `subjects` table, when there is one)."""
    if not _has_table(index, "subjects"):
        return {}
    return dict(index.sql.execute(
        "SELECT s.digest, s.subject FROM subjects s JOIN links l ON l.digest=s.digest"
        " AND l.upstream=?", (registry,)))


def plan(index: Index, registry: str, grace: float, now: float | None = None) -> Collected:
    """What a collection would remove now (nothing is changed)."""
    started = time.monotonic()
    cutoff = (time.time() if now is None else now) - grace
    marked = mark(index, registry)
    result = Collected(marked=len(marked))
    rows = index.sql.execute(
        "SELECT l.digest, b.size, b.media_type, b.added_at, b.last_access,"
        " (SELECT group_concat(o.upstream, ' ') FROM links o"
        "  WHERE o.digest=l.digest AND o.upstream<>l.upstream)"
        " FROM links l LEFT JOIN blobs b ON b.digest=l.digest WHERE l.upstream=?"
        " ORDER BY b.media_type IS NULL, l.digest", (registry,)).fetchall()
    for digest, size, media_type, added, accessed, others in rows:
        if digest in marked or max(added or 0.0, accessed or 0.0) >= cutoff:
            continue
        why = ("no tag, index or subject references this manifest" if media_type else
               "no kept manifest references this blob")
        result.found.append(Garbage(digest, size or 0, why, tuple(sorted(
            (others or "").split()))))
    result.found = _settled(index, registry, result.found, cutoff)
    result.seconds = time.monotonic() - started
    return result


def _settled(index: Index, registry: str, found: list[Garbage],
             cutoff: float) -> list[Garbage]:
    """Leave out, until nothing changes, what something outside the garbage still references
    (a young manifest's old layers, a cached upstream manifest's, a young subject's
    referrer): the dry run then shows what the sweep will remove."""
    subjects = _has_table(index, "subjects")
    for _ in range(len(found) + 1):  # each round drops one item at least, or ends
        victims, tagged = _leaving(found), _tagged(index.sql, registry)
        kept = [g for g in found if _still_garbage(index.sql, registry, g.digest, victims,
                                                   cutoff, subjects, tagged)]
        if len(kept) == len(found):
            break
        found = kept
    return found


def collect(index: Index, layout: Layout, registry: str, grace: float, dry_run: bool = False,
            now: float | None = None, stop: threading.Event | None = None) -> Collected:
    """Plan, then (unless `dry_run`) sweep what the plan found."""
    result = plan(index, registry, grace, now)
    return result if dry_run else sweep(index, layout, registry, result, grace, now, stop)


def sweep(index: Index, layout: Layout, registry: str, result: Collected, grace: float,
          now: float | None = None, stop: threading.Event | None = None) -> Collected:
    """Remove what `result` found, in batches, each item checked again as it goes; `stop`
    (SIGTERM in the service's child) is looked at between batches."""
    started = time.monotonic()
    cutoff = (time.time() if now is None else now) - grace
    victims = _leaving(result.found)
    for start in range(0, len(result.found), BATCH):
        if stop is not None and stop.is_set():
            break
        batch = result.found[start:start + BATCH]
        for garbage in _remove_rows(index, registry, batch, victims, cutoff, result):
            if _remove_file(layout, garbage.digest, cutoff):
                result.removed += 1
                result.freed += garbage.size
            else:
                result.kept += 1
    result.seconds += time.monotonic() - started
    return result


def _remove_rows(index: Index, registry: str, batch: Iterable[Garbage], victims: set[str],
                 cutoff: float, result: Collected) -> list[Garbage]:
    """One transaction: each item checked again; rows of the ones that go deleted. Returns
    the ones whose file is to go (a local link dropped from shared content keeps its file)."""
    db = index.sql
    subjects = _has_table(index, "subjects")
    gone: list[Garbage] = []
    with index.transaction():
        tagged = _tagged(db, registry)  # read inside the transaction: a tag set since counts
        for garbage in batch:
            digest = garbage.digest
            if not _still_garbage(db, registry, digest, victims, cutoff, subjects, tagged):
                result.kept += 1
                continue
            others = [row[0] for row in db.execute(
                "SELECT upstream FROM links WHERE digest=? AND upstream<>?", (digest, registry))]
            if others:
                db.execute("DELETE FROM links WHERE digest=? AND upstream=?", (digest, registry))
                result.unlinked += 1
                continue
            db.execute("DELETE FROM blobs WHERE digest=?", (digest,))
            db.execute("DELETE FROM refs WHERE parent=?", (digest,))
            db.execute("DELETE FROM links WHERE digest=?", (digest,))
            if subjects:
                db.execute("DELETE FROM subjects WHERE digest=?", (digest,))
            gone.append(garbage)
    return gone


def _leaving(found: Iterable[Garbage]) -> set[str]:
    """What goes altogether: content another upstream keeps stays, and so does what it
    references (a cached manifest keeps its layers)."""
    return {g.digest for g in found if not g.others}


def _tagged(db: sqlite3.Connection, registry: str) -> set[str]:
    """What local tags name now (one read of them: the table has no index by digest)."""
    return {row[0] for row in db.execute("SELECT digest FROM tags WHERE upstream=?",
                                         (registry,))}


def _still_garbage(db: sqlite3.Connection, registry: str, digest: str, victims: set[str],
                   cutoff: float, subjects: bool, tagged: set[str]) -> bool:
    """Checked inside the removal's transaction: still local, old, untagged, and referenced by
    nothing that stays (a manifest outside this sweep, or a subject that stays)."""
    if db.execute("SELECT 1 FROM links WHERE digest=? AND upstream=?",
                  (digest, registry)).fetchone() is None:
        return False
    row = db.execute("SELECT added_at, last_access FROM blobs WHERE digest=?",
                     (digest,)).fetchone()
    if row is not None and max(row) >= cutoff:
        return False
    if digest in tagged:
        return False
    parents = db.execute("SELECT r.parent FROM refs r JOIN blobs b ON b.digest=r.parent"
                         " WHERE r.child=?", (digest,))
    if any(parent not in victims for (parent,) in parents):
        return False
    if subjects:
        subject = db.execute("SELECT subject FROM subjects WHERE digest=?", (digest,)).fetchone()
        if subject is not None and subject[0] not in victims and db.execute(
                "SELECT 1 FROM links WHERE digest=? AND upstream=?",
                (subject[0], registry)).fetchone() is not None:
            return False
    return True


def _remove_file(layout: Layout, digest: str, cutoff: float) -> bool:
    """Rename the file aside, then remove it, or put it back when it was written since the
    cutoff (a publish of the same digest: its rows follow). False when it was put back."""
    target = layout.blob(Digest.parse(digest))
    aside = layout.tmp_dir / f"gc-{uuid.uuid4().hex}.part"  # tmp/ is swept at start
    try:
        os.rename(target, aside)
    except FileNotFoundError:
        return True  # already gone: nothing left of it
    if os.stat(aside).st_mtime >= cutoff:
        os.rename(aside, target)
        return False
    Path(aside).unlink(missing_ok=True)
    return True


def run(root: Path, registry: str, grace: float, dry_run: bool = False,
        stop: threading.Event | None = None) -> Collected:
    """A collection on the storage at `root` (the CLI's, and the service's child's)."""
    layout = Layout(root)
    index = Index(layout.index_file)
    try:
        return collect(index, layout, registry, grace, dry_run, stop=stop)
    finally:
        index.close()


def main() -> int:
    """The service's periodic collection, in a child as eviction is (it reads every local row
    and unlinks many files): the request as JSON on stdin, the counts as JSON on stdout."""
    request, stop = children.request()
    result = run(Path(request["root"]), request["registry"], float(request["grace"]), stop=stop)
    sys.stdout.write(json.dumps({"removed": result.removed, "freed": result.freed,
                                 "unlinked": result.unlinked, "kept": result.kept,
                                 "found": len(result.found), "seconds": result.seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
