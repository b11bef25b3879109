"""The local registry's parts, built in one call from the composition root (app.py)."""

from __future__ import annotations

from edgecache.local.registry import LocalRegistry
from edgecache.local.settings import LocalConfig
from edgecache.local.uploads import Uploads
from edgecache.storage.index import Index
from edgecache.storage.localindex import LocalIndex
from edgecache.storage.store import Store
from edgecache.web.auth import ClientAuth
from edgecache.web.pushes import LocalHandlers
from edgecache.web.uploads import UploadHandlers


def local_handlers(config: LocalConfig, store: Store, index: Index,
                   auth: ClientAuth) -> tuple[LocalHandlers, Uploads]:
    """The handlers of the local route and the upload sessions they own (closed by the
    caller at shutdown, which cancels the expiry task and abandons unfinished uploads)."""
    registry = LocalRegistry(store, LocalIndex(index, config.registry))
    uploads = Uploads(store, index, config.upload_timeout)
    handlers = LocalHandlers(registry, UploadHandlers(registry, uploads, store), store, auth,
                             anonymous_push=config.push == "anonymous")
    return handlers, uploads
