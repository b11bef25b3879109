"""The commands that read the cache: `ls`, `du` and `verify`. The CLI parses, these run.

Each opens the storage as the service does (no tmp/ sweep: a running service's downloads are
left alone), reads the index through `storage/images.py`, and closes it unclean (a read
must not mark a stop as clean for the service). Results go to stdout (a table, or JSON with
`--json`); verify's progress goes to stderr, one line at most every few seconds when stderr is
not a terminal (`airgap/progress.py`), so a journal or CI log gets a bounded number of lines.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

from edgecache.airgap.progress import Progress, table
from edgecache.config import Config
from edgecache.ops.usage import image_document, usage_report
from edgecache.storage.images import Image, Images
from edgecache.units import human, when

if TYPE_CHECKING:  # app imports aiohttp: only when a command runs
    from edgecache.storage.opening import Storage


@contextmanager
def _storage(config: Config) -> Iterator[Storage]:
    from edgecache.metrics import Metrics
    from edgecache.storage.opening import open_storage

    storage = open_storage(config, Metrics(), sweep=False)
    try:
        yield storage
    finally:
        storage.close(clean=False)


def du(config: Config, as_json: bool, out: TextIO | None = None) -> int:
    out = out or sys.stdout  # at call time: a test's capture replaces sys.stdout
    with _storage(config) as storage:
        report = usage_report(storage.index, storage.quota, config.pins, _local(config))
    if as_json:
        json.dump(report.document(), out, indent=2)
        out.write("\n")
    else:
        out.write("\n".join(report.lines()) + "\n")
    return 0


def ls(config: Config, as_json: bool, out: TextIO | None = None) -> int:
    """The images held, by name: size, last use, pinned, local."""
    out = out or sys.stdout
    with _storage(config) as storage:
        images = Images(storage.index, config.pins, _local(config)).every()
    if as_json:
        json.dump([image_document(image) for image in images], out, indent=2)
        out.write("\n")
        return 0
    rows = [[image.name, human(image.size), when(image.last_use),
             "local" if image.local else "yes" if image.pinned else "", image.digest[:19]]
            for image in images]
    lines = table(["IMAGE", "SIZE", "LAST USED (UTC)", "PINNED", "DIGEST"], rows, right=(1,))
    out.write("\n".join(lines) + "\n")
    return 0


def verify(config: Config, repair: bool, out: TextIO | None = None,
           err: TextIO | None = None) -> int:
    """Re-hash every blob with progress; with `repair`, name each image it leaves needing a
    fetch from its upstream before it can be pulled again (offline: unpullable)."""
    from edgecache.storage.integrity import verify as verify_blobs

    out, err = out or sys.stdout, err or sys.stderr

    with _storage(config) as storage:
        images = Images(storage.index, config.pins, _local(config))
        before = images.every()
        sizes = dict(storage.index.digests())
        progress = Progress("verifying", "blobs", err)
        progress.add_total(sum(sizes.values()), len(sizes))

        def checked(digest: str, ok: bool) -> None:
            progress.done_bytes += sizes.get(digest, 0)
            progress.item_done()

        try:
            report = verify_blobs(storage.blobs, storage.index, repair, checked)
        finally:
            progress.finish()
        broken = images.using([*report.corrupt, *report.forgotten], before)
    lines = [f"corrupt: {d}" + (" (removed)" if repair else "") for d in report.corrupt]
    lines += [f"missing file: {d}" + (" (forgotten)" if repair else "") for d in report.forgotten]
    lines += [f"not indexed: {d}" + (" (adopted)" if repair else "") for d in report.adopted]
    lines += [f"stray file: {p}" + (" (removed)" if repair else "") for p in report.removed]
    lines += [_broken(image, repair) for image in broken]
    lines.append(f"checked {report.checked} blobs: {len(report.corrupt)} corrupt, "
                 f"{len(report.forgotten)} missing, {len(report.adopted)} not indexed"
                 + (f"; {len(broken)} images need their upstream" if broken else ""))
    out.write("\n".join(lines) + "\n")
    return 0 if report.clean or repair else 1


def _local(config: Config) -> str | None:
    return config.local.registry if config.local is not None else None


def _broken(image: Image, repair: bool) -> str:
    if repair:
        return (f"unpullable until fetched again from {image.upstream}: {image.name}"
                + (" (pinned)" if image.pinned else ""))
    return f"damaged: {image.name} (verify --repair removes what it cannot serve whole)"
