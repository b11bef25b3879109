"""`edgecache gc [--dry-run] [--grace DURATION]`: collect the local repositories' garbage.

It works on the storage directly (`storage/gc.py`), so it runs beside a service or without
one: the sweep checks each item again in the transaction that removes it, and a file written
since the cutoff is put back, so a push the service is taking meanwhile loses nothing. The
service's quota re-reads the index's totals on its next janitor pass.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from edgecache.airgap.progress import plural, table
from edgecache.config import Config
from edgecache.configvalues import parse_duration
from edgecache.errors import ConfigError, EdgecacheError
from edgecache.storage.layout import Layout
from edgecache.units import human

if TYPE_CHECKING:  # storage/gc.py is imported when gc runs, not for every command line
    from edgecache.storage import gc


def gc_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("gc", help="remove local content no tag reaches (local repositories)")
    parser.add_argument("--config")
    parser.add_argument("--storage-path", help="override storage.path")
    parser.add_argument("--dry-run", action="store_true",
                        help="show what would go (digest, size, why); remove nothing")
    parser.add_argument("--grace", help="override local.gc_grace: content published or read "
                                        "less than this ago is kept (e.g. 1h, 0s)")


def gc_command(config: Config, args: argparse.Namespace) -> int:
    try:
        if config.local is None:
            raise ConfigError("gc: no local registry is configured (local.registry)")
        grace = (config.local.gc.grace if args.grace is None
                 else parse_duration(args.grace, "--grace"))
    except ConfigError as exc:
        print(f"edgecache: {exc}", file=sys.stderr)
        return 2
    layout = Layout(config.storage.path)
    if not layout.index_file.is_file():
        print(f"edgecache: gc: no storage at {layout.root} (storage.path)", file=sys.stderr)
        return 1
    from edgecache.storage import gc

    try:
        result = gc.run(layout.root, config.local.registry, grace, dry_run=args.dry_run)
    except (EdgecacheError, OSError) as exc:
        print(f"edgecache: gc: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines(result, args.dry_run)))
    return 0


def lines(result: gc.Collected, dry_run: bool) -> list[str]:
    rows = [[g.digest, human(g.size), g.why + (f" (local link only: also cached for "
                                               f"{', '.join(g.others)})" if g.others else "")]
            for g in result.found]
    out = table(["DIGEST", "SIZE", "WHY"], rows, right=[1]) if rows else []
    total = human(sum(g.size for g in result.found if not g.others))
    if dry_run:
        out.append(f"would remove {plural(len(result.found), 'item')} ({total}); "
                   f"{plural(result.marked, 'digest')} reached from local tags")
    else:
        out.append(f"removed {plural(result.removed, 'item')} ({human(result.freed)}), "
                   f"dropped {plural(result.unlinked, 'local link')}, kept "
                   f"{result.kept} referenced or written meanwhile, in {result.seconds:.1f}s")
    return out
