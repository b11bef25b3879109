"""The storage a node opens at start, and the parts it is made of.

One function opens it for every process that reads the store (the server, the CLI's storage
commands, tests), so the order that keeps data safe lives in one place: the index first (live
push sessions' files must survive the sweep of `tmp/`), then the sweep, then reconciliation
unless the last stop was clean.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecache.config import Config
from edgecache.errors import StorageError
from edgecache.metrics import Metrics
from edgecache.storage import uploadindex
from edgecache.storage.blobs import BlobStore
from edgecache.storage.index import Index
from edgecache.storage.integrity import reconcile
from edgecache.storage.layout import Layout
from edgecache.storage.quota import Quota
from edgecache.storage.store import Store


@dataclass
class Storage:
    """The store (what web/ and proxy/ use) and the parts it is made of (the janitor, the
    metrics and the CLI's storage commands use those)."""

    layout: Layout
    blobs: BlobStore
    index: Index
    quota: Quota
    store: Store

    def close(self, clean: bool) -> None:
        self.index.close()
        if clean:
            self.layout.clean_marker.touch()


def open_storage(config: Config, metrics: Metrics, sweep: bool = True) -> Storage:
    """Open (creating if needed) the store. With `sweep`, as the server does at start: remove
    unfinished downloads and, unless the last stop was clean, reconcile index and files."""
    layout = Layout(config.storage.path)
    blobs = BlobStore(layout)
    try:
        layout.root.mkdir(parents=True, exist_ok=True)
        index = Index(layout.index_file)  # first: live push sessions' files survive the sweep
        timeout = config.local.upload_timeout if config.local else None  # None: none survive
        keep = uploadindex.survivors(index, layout, timeout) if sweep else frozenset()
        blobs.prepare(sweep, keep)
        if sweep:
            clean = layout.clean_marker.exists()
            layout.clean_marker.unlink(missing_ok=True)
            if not clean:
                reconcile(blobs, index)
    except OSError as exc:
        raise StorageError(f"storage.path {layout.root}: {exc.strerror or exc}") from exc
    quota = Quota(config.storage, blobs, index, config.pins, metrics,
                  local=config.local.registry if config.local else None)
    return Storage(layout, blobs, index, quota, Store(blobs, index, quota))
