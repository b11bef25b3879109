"""The composition root: the one place that builds every component and wires them together.

`build_app` is what tests call too (and `server.py`, which runs it as `edgecache serve`).
Resources live in a `cleanup_ctx` lifecycle, so they are created inside the running loop and
torn down in reverse order:
1. storage (tree, sweep of leftovers, index, reconciliation unless the last stop was clean,
   quota, and the `Store` over them: all that web/ and proxy/ see of storage, and the one
   publish every writer goes through), 2. upstream clients, 3. fills, the service, the janitor;
shutdown (once requests have ended) cancels and awaits, in order, the janitor, the prefetch
schedule and pin fetches (`ops/prefetch.py`, `ops/pins.py`), password checks, the service's
flights (tag revalidations, manifest fetches), layer prefetch schedules and downloads (their
temporary files are removed); then it closes the clients, flushes access times, closes the
index and only then marks the stop as clean. Every background task has one owner that does this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from edgecache.airgap.selfpull import SelfPull
from edgecache.config import Config, secret_files
from edgecache.metrics import Metrics
from edgecache.oci import MANIFEST_LIMIT
from edgecache.ops.pins import Pinning
from edgecache.ops.prefetch import Prefetcher
from edgecache.proxy.download import stall_bound
from edgecache.proxy.fill import Fills
from edgecache.proxy.routing import Router
from edgecache.proxy.service import RegistryService
from edgecache.statuswiring import status_source
from edgecache.storage.index import checkpoint
from edgecache.storage.opening import Storage, open_storage
from edgecache.storage.schema import UNKNOWN_OWNER
from edgecache.upstream.client import UpstreamClient
from edgecache.web.auth import ClientAuth
from edgecache.web.catalog import Catalog
from edgecache.web.challenge import TOKEN_PATH
from edgecache.web.errors import API_VERSION, error_middleware
from edgecache.web.handlers import RegistryHandlers
from edgecache.web.observability import (
    Readiness,
    RequestIds,
    add_health_routes,
    readiness,
    response_headers,
)
from edgecache.web.stalls import WRITE_TIMEOUT
from edgecache.web.status import add_status_routes
from edgecache.web.statusdata import StatusSource
from edgecache.web.token_service import TokenService

if TYPE_CHECKING:  # cluster/ and local/ are imported only when their section is configured
    from edgecache.cluster.node import Cluster
    from edgecache.cluster.proof import PeerProof
    from edgecache.web.sitelocal import LocalRoute

log = logging.getLogger(__name__)

METRICS = web.AppKey("metrics", Metrics)
SERVICE = web.AppKey("service", RegistryService)
AUTH = web.AppKey("auth", ClientAuth)
READY: web.AppKey[Readiness] = web.AppKey("ready")
STATUS = web.AppKey("status", StatusSource)
PINNING = web.AppKey("pinning", Pinning)
LISTENING = web.AppKey("listening", asyncio.Event)  # what the service pulls of itself waits for
LOCAL: web.AppKey[LocalRoute] = web.AppKey("local")


def build_app(config: Config, metrics: Metrics | None = None) -> web.Application:
    ids = RequestIds()
    listeners = []
    if config.cluster.listen:
        from edgecache.cluster.listener import PeerListener
        listeners.append(PeerListener(config.cluster.listen).middleware())
    app = web.Application(middlewares=[ids.middleware(), error_middleware, *listeners],
                          client_max_size=64 * 1024)
    app[METRICS] = metrics if metrics is not None else Metrics()
    app[LISTENING] = asyncio.Event()
    app[WRITE_TIMEOUT] = config.listen.idle_timeout  # a blob body's client that reads nothing
    auth = ClientAuth(config.auth, [name for name, upstream in config.upstreams.items()
                                    if upstream.access == "authenticated"],
                      pushes=config.local is not None and config.local.push == "authenticated")
    app[AUTH] = auth
    proof = _proof(config)
    app.cleanup_ctx.append(lambda a: _components(a, config, auth, proof))
    app.on_response_prepare.append(response_headers(API_VERSION, ids, app[METRICS]))
    add_health_routes(app, lambda: app.get(READY))
    router = Router(config.upstreams, config.default_upstream,
                    config.local.registry if config.local else None)

    handlers: RegistryHandlers | None = None  # made on the first request: after start-up
    catalog = Catalog(lambda: app.get(STATUS), auth)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        nonlocal handlers
        if handlers is None:
            handlers = RegistryHandlers(router, request.app[SERVICE], request.app[METRICS], auth,
                                        request.app.get(LOCAL), proof)
        if request.path in ("/v2", "/v2/"):
            return await handlers.base(request)
        if request.method in ("GET", "HEAD") and (listing := router.catalog(
                request.rel_url.raw_path.removeprefix("/v2/"),
                request.query.get("ns") if request.query_string else None)):
            return await catalog.list(request, listing)
        return await handlers.dispatch(request)

    app.router.add_route("*", TOKEN_PATH, TokenService(auth).handle)  # before the catch-all
    app.router.add_route("*", "/v2", dispatch)
    app.router.add_route("*", "/v2/", dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", dispatch)
    add_status_routes(app, lambda: app.get(STATUS), auth, challenge=True)
    return app


async def _components(app: web.Application, config: Config, auth: ClientAuth,
                      proof: PeerProof | None) -> AsyncIterator[None]:
    metrics = app[METRICS]
    storage = open_storage(config, metrics)
    store = storage.store

    clients = {
        name: UpstreamClient(cfg, MANIFEST_LIMIT, config.health, metrics)
        for name, cfg in config.upstreams.items()
    }
    fills = Fills(store, metrics, config.limits.max_downloads, config.limits.max_readers_per_blob,
                  {name: stall_bound(cfg) for name, cfg in config.upstreams.items()})
    _scrape_time_gauges(metrics, storage)
    app[READY] = readiness(storage.layout.tmp_dir, storage.index.healthy)
    private = frozenset(n for n, u in config.upstreams.items() if u.access == "authenticated")
    cluster: Cluster | None = None
    if proof is not None:
        from edgecache.cluster.node import Cluster

        cluster = Cluster(config, proof, metrics)
    layers = None
    if config.prefetch.layers:
        from edgecache.proxy.prefetch import LayerPrefetch
        layers = LayerPrefetch(fills, store, cluster.site if cluster is not None else None)
    service = app[SERVICE] = RegistryService(  # adopted after a crash: owner unknown, restricted
        store, clients, fills, metrics, config.cache,
        private=private | {UNKNOWN_OWNER} if private else private, layers=layers,
        sources=cluster.site if cluster is not None else None)
    if cluster is not None:
        cluster.start()
    uploads = None
    if config.local is not None:  # the site's own registry (edgecache/local/)
        from edgecache.local.wiring import local_handlers

        app[LOCAL], uploads = local_handlers(config.local, storage.store, storage.index, auth)
        if cluster is not None:  # what this node's local registry misses is asked of the site
            from edgecache.local.registry import LocalRegistry
            from edgecache.storage.localindex import LocalIndex
            from edgecache.web.sitelocal import SiteLocal

            name = config.local.registry  # deletes and tag lists need the registry's index
            app[LOCAL] = SiteLocal(app[LOCAL], cluster.copies(store, fills, name),
                                   LocalRegistry(store, LocalIndex(storage.index, name)))
    status = app[STATUS] = status_source(config, store, storage.index, storage.quota, clients,
                                         metrics, config.local.registry if config.local else None,
                                         cluster.status_peers if cluster is not None else None)
    janitor = asyncio.create_task(_janitor(storage, config), name="janitor")
    collector = None
    if config.local is not None and config.local.gc.interval > 0:
        from edgecache.local.collector import collect_every

        collector = asyncio.create_task(collect_every(storage.layout.root, config.local.registry,
                                                      config.local.gc), name="local-gc")
    pinning = app[PINNING] = Pinning(storage.index, config, SelfPull(config, app[LISTENING]))
    prefetch = asyncio.create_task(Prefetcher(config.prefetch, clients, store, SelfPull(
        config, app[LISTENING])).run(), name="prefetch") if config.prefetch.images else None
    try:
        yield
    finally:
        # Requests have ended (the runner stopped accepting and drained or cut them). Each
        # owner cancels and awaits its background work before what that work uses is closed:
        # the janitor, the local GC, the prefetch schedule and pin fetches (clients of our own
        # listener), the status sampler, password checks, then flights (tag revalidations,
        # manifest fetches) and downloads, which use the upstream clients, which go before the
        # index.
        await _cancel(janitor, collector, prefetch)
        await pinning.close()
        await status.close()
        if uploads is not None:
            await uploads.close()  # before the index: sessions' files are abandoned
        await auth.close()
        await service.close()
        if layers is not None:  # its schedules start fills: before the downloads close
            await layers.close()
        await fills.close()
        if cluster is not None:  # its peer requests are made by fills and flights: after them
            await cluster.close()
        await asyncio.gather(*(client.close() for client in clients.values()))
        storage.close(clean=True)


def _proof(config: Config) -> PeerProof | None:
    """Cluster mode: the site secret, read once (ConfigError if not); cluster/ only then."""
    if not config.cluster.enabled:
        return None
    from edgecache.cluster.node import proof_for
    return proof_for(config)


async def _cancel(*tasks: asyncio.Task[None] | None) -> None:
    """Cancel tasks and wait until each has ended (a cancelled task is not over yet)."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


def _scrape_time_gauges(metrics: Metrics, storage: Storage) -> None:
    """State read when Prometheus scrapes, not kept twice."""
    quota, index = storage.quota, storage.index
    metrics.cache_bytes.set_function(lambda: quota.used)
    metrics.quota_bytes.set_function(quota.budget)
    metrics.fs_free_bytes.set_function(lambda: quota.limits()[1].fs_free)
    metrics.fs_size_bytes.set_function(lambda: quota.disk().total)
    metrics.blobs.set_function(lambda: index.counts()[0])
    metrics.manifests.set_function(lambda: index.counts()[1])
    metrics.watermark_bytes.labels("high").set_function(lambda: quota.watermarks()[0])
    metrics.watermark_bytes.labels("low").set_function(lambda: quota.watermarks()[1])


async def _janitor(storage: Storage, config: Config) -> None:
    """Flush access times and keep within quota (other tenants of the disk fill it too), every
    interval, or at once when a publish crossed the high watermark (`quota.wanted`). Nothing
    here walks the store on the loop: the totals are one row, eviction runs in a child process."""
    interval = max(1.0, min(config.storage.access_flush_interval, 60.0))
    quota, loop = storage.quota, asyncio.get_running_loop()
    storage.index.defer_checkpoints()  # the WAL is checkpointed below, off the loop
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(quota.wanted.wait(), interval)
        try:
            storage.index.flush_access()
            # `edgecache import` publishes (and may evict) from another process: converge
            quota.used = storage.index.total_size()
            await quota.enforce()
            await loop.run_in_executor(None, checkpoint, storage.layout.index_file)
        except Exception:  # a background-loop guard: log, keep the loop alive
            log.exception("janitor pass failed")


def warn_open_secrets(config: Config) -> None:
    """A secret file others can read is a finding, not a reason to refuse to start."""
    for key, path in secret_files(config):
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if mode & 0o077:
            log.warning("%s %s is readable by others (mode %o); chmod 600 it", key, path,
                        mode & 0o777)
