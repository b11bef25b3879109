"""The composition root: the one place that builds every component and wires them together.

`build_app` is what tests call too. Resources live in a `cleanup_ctx` lifecycle, so they are
created inside the running loop and torn down in reverse order:
1. storage (tree, sweep of leftovers, index, reconciliation unless the last stop was clean,
   quota), 2. upstream clients, 3. fills, the service and the janitor;
shutdown (once requests have ended) cancels and awaits, in order, the janitor and password
checks, the service's flights (tag revalidations, manifest fetches) and downloads (their
temporary files are removed); then it closes the clients, flushes access times, closes the index
and only then marks the stop as clean. Every background task has one owner that does this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edgecache import systemd
from edgecache.config import Config, parse_hostport, secret_files
from edgecache.errors import ConfigError, EdgecacheError, StorageError
from edgecache.memory import HeapTrimmer, trim_periodically
from edgecache.metrics import Metrics
from edgecache.oci import MANIFEST_LIMIT, Digest
from edgecache.proxy.download import stall_bound
from edgecache.proxy.fill import Fills
from edgecache.proxy.routing import Router
from edgecache.proxy.service import RegistryService
from edgecache.storage.blobs import BlobStore
from edgecache.storage.index import UNKNOWN_OWNER, Index, checkpoint
from edgecache.storage.integrity import reconcile
from edgecache.storage.layout import Layout
from edgecache.storage.quota import Quota
from edgecache.upstream.client import UpstreamClient
from edgecache.web.auth import ClientAuth
from edgecache.web.challenge import TOKEN_PATH
from edgecache.web.errors import API_VERSION, error_middleware
from edgecache.web.handlers import RegistryHandlers
from edgecache.web.observability import (
    Readiness,
    access_logger_for,
    add_health_routes,
    metrics_app,
    readiness,
    response_headers,
)
from edgecache.web.stalls import WRITE_TIMEOUT
from edgecache.web.token_service import TokenService

if TYPE_CHECKING:  # imported only when HTTPS is configured
    from edgecache.tls import ServerTls

log = logging.getLogger(__name__)

MAX_LINE = 8190
MAX_HEADERS = 64
TLS_RECHECK = 3600.0
Reload = Callable[[], Coroutine[Any, Any, None]]
METRICS = web.AppKey("metrics", Metrics)
SERVICE = web.AppKey("service", RegistryService)
AUTH = web.AppKey("auth", ClientAuth)
READY: web.AppKey[Readiness] = web.AppKey("ready")


@dataclass
class Storage:
    layout: Layout
    blobs: BlobStore
    index: Index
    quota: Quota

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
        blobs.prepare(sweep=sweep)
        index = Index(layout.index_file)
        if sweep:
            clean = layout.clean_marker.exists()
            layout.clean_marker.unlink(missing_ok=True)
            if not clean:
                reconcile(blobs, index)
    except OSError as exc:
        raise StorageError(f"storage.path {layout.root}: {exc.strerror or exc}") from exc
    quota = Quota(config.storage, blobs, index, config.pins, metrics)
    return Storage(layout, blobs, index, quota)


def build_app(config: Config, metrics: Metrics | None = None) -> web.Application:
    app = web.Application(middlewares=[error_middleware],
                          client_max_size=64 * 1024)
    app[METRICS] = metrics if metrics is not None else Metrics()
    app[WRITE_TIMEOUT] = config.listen.idle_timeout  # a blob body's client that reads nothing
    auth = ClientAuth(config.auth, [name for name, upstream in config.upstreams.items()
                                    if upstream.access == "authenticated"])
    app[AUTH] = auth
    app.cleanup_ctx.append(lambda a: _components(a, config, auth))
    app.on_response_prepare.append(response_headers(API_VERSION))
    add_health_routes(app, lambda: app.get(READY))
    router = Router(config.upstreams, config.default_upstream)

    handlers: RegistryHandlers | None = None  # made on the first request: after start-up

    async def dispatch(request: web.Request) -> web.StreamResponse:
        nonlocal handlers
        if handlers is None:
            handlers = RegistryHandlers(router, request.app[SERVICE], request.app[METRICS], auth)
        if request.path in ("/v2", "/v2/"):
            return await handlers.base(request)
        return await handlers.dispatch(request)

    app.router.add_route("*", TOKEN_PATH, TokenService(auth).handle)  # before the catch-all
    app.router.add_route("*", "/v2", dispatch)
    app.router.add_route("*", "/v2/", dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", dispatch)
    return app


async def _components(app: web.Application, config: Config,
                      auth: ClientAuth) -> AsyncIterator[None]:
    metrics = app[METRICS]
    storage = open_storage(config, metrics)
    blobs, index, quota = storage.blobs, storage.index, storage.quota

    clients = {
        name: UpstreamClient(cfg, MANIFEST_LIMIT, config.health, metrics)
        for name, cfg in config.upstreams.items()
    }
    def published(digest: Digest, size: int, upstream: str) -> None:
        index.record_blob(str(digest), size, upstreams=(upstream,))  # one transaction

    fills = Fills(blobs, quota, metrics, published,
                  config.limits.max_downloads, config.limits.max_readers_per_blob,
                  {name: stall_bound(cfg) for name, cfg in config.upstreams.items()})
    _scrape_time_gauges(metrics, storage)
    app[READY] = readiness(storage.layout.tmp_dir, storage.index.healthy)
    private = frozenset(n for n, u in config.upstreams.items() if u.access == "authenticated")
    service = app[SERVICE] = RegistryService(  # adopted after a crash: owner unknown, restricted
        blobs, index, quota, clients, fills, metrics, config.cache,
        private=private | {UNKNOWN_OWNER} if private else private)
    janitor = asyncio.create_task(_janitor(storage, config), name="janitor")
    try:
        yield
    finally:
        # Requests have ended (the runner stopped accepting and drained or cut them). Each
        # owner cancels and awaits its background work before what that work uses is closed:
        # the janitor and password checks, then flights (tag revalidations, manifest fetches)
        # and downloads, which use the upstream clients, which go before the index.
        await _cancel(janitor)
        await auth.close()
        await service.close()
        await fills.close()
        await asyncio.gather(*(client.close() for client in clients.values()))
        storage.close(clean=True)


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


def server_tls(config: Config) -> ServerTls | None:
    if not config.listen.https:
        return None
    from edgecache.tls import ServerTls
    return ServerTls(config.tls.cert_file, config.tls.key_file, config.tls.extra_names,
                     config.storage.path / "tls", config.tls.client_ca_file)


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


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT. Shutdown, in order:
    1. tell systemd STOPPING and stop accepting connections;
    2. let in-flight requests finish for up to `listen.shutdown_timeout`, then cut them;
    3. stop the metrics listener; cancel and await background work (revalidations, manifest
       fetches, downloads: temporary files removed, nothing partial is ever published);
    4. close upstream clients, flush and close the index, mark the stop clean.
    SIGHUP reloads the TLS certificate without dropping connections."""
    warn_open_secrets(config)
    tls = server_tls(config)
    app = build_app(config)
    runner = web.AppRunner(app, access_log_class=access_logger_for(config.log.format),
                           handler_cancellation=True,
                           shutdown_timeout=config.listen.shutdown_timeout,
                           # hostile input: bounded request line and headers; a connection that
                           # idles or never completes a request is closed (slow loris)
                           keepalive_timeout=config.listen.idle_timeout,
                           max_line_size=MAX_LINE, max_field_size=MAX_LINE,
                           max_headers=MAX_HEADERS)
    metrics_runner: web.AppRunner | None = None

    async def stop_metrics(_: web.Application) -> None:
        """Probes and scrapes are answered while requests drain; the scrape-time gauges read
        the index, so the metrics listener stops before the components (the index) close."""
        nonlocal metrics_runner
        stopping, metrics_runner = metrics_runner, None
        if stopping is not None:
            await stopping.cleanup()

    app.on_cleanup.insert(0, stop_metrics)
    await runner.setup()
    watchdog: asyncio.Task[None] | None = None
    renewal: asyncio.Task[None] | None = None
    trimming: asyncio.Task[None] | None = None
    reloads: set[asyncio.Task[None]] = set()
    try:
        if config.metrics.listen:
            metrics_runner = web.AppRunner(metrics_app(app[METRICS], lambda: app.get(READY)),
                                           access_log=None, shutdown_timeout=1.0)
            await metrics_runner.setup()
            host, port = parse_hostport(config.metrics.listen, "metrics.listen")
            await _listen(web.TCPSite(metrics_runner, host, port, reuse_address=True),
                          "metrics.listen", config.metrics.listen)
            log.info("metrics on http://%s/metrics", config.metrics.listen)
        for scheme, address in (("http", config.listen.http), ("https", config.listen.https)):
            if not address:
                continue
            host, port = parse_hostport(address, f"listen.{scheme}")
            context = tls.context if scheme == "https" and tls is not None else None
            await _listen(web.TCPSite(runner, host, port, reuse_address=True,
                                      ssl_context=context), f"listen.{scheme}", address)
            log.info("edgecache listening on %s://%s", scheme, address)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        reload = _reloader(tls) if tls is not None else None
        if reload is not None:
            loop.add_signal_handler(signal.SIGHUP, _on_signal(reload, reloads))
        systemd.notify("READY=1")
        interval = systemd.watchdog_interval()
        if interval:
            watchdog = asyncio.create_task(systemd.watchdog(interval), name="watchdog")
        if reload is not None:
            renewal = asyncio.create_task(_renew(reload), name="tls renewal")
        trimmer = HeapTrimmer()
        if trimmer.available:
            trimming = asyncio.create_task(trim_periodically(trimmer), name="heap trim")
        await stop.wait()
        log.info("shutting down (in-flight requests get %gs)", config.listen.shutdown_timeout)
        systemd.notify("STOPPING=1")
    finally:
        await _cancel(watchdog, renewal, trimming, *reloads)
        await runner.cleanup()  # stops the metrics listener too (stop_metrics), then the index
        await stop_metrics(app)
        log.info("stopped")


async def _listen(site: web.TCPSite, key: str, address: str) -> None:
    """A listener that cannot bind (port in use, an address not on this host, a name that does
    not resolve) is the operator's to fix: one line naming the key, not a traceback."""
    try:
        await site.start()
    except OSError as exc:  # asyncio's message repeats the address: the errno's text suffices
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or exc
        raise ConfigError(f"{key} {address}: cannot listen: {reason}") from exc


async def _renew(reload: Reload) -> None:
    """Hourly: re-issue the certificate if the host's addresses changed or expiry nears (a
    no-op otherwise), so a node that runs for a year never serves an expired certificate."""
    while True:
        await asyncio.sleep(TLS_RECHECK)
        await reload()


def _reloader(tls: ServerTls) -> Reload:
    """One reload at a time; the check (which may run the certificate issuer, a child process)
    off the loop, the swap into the live context on it (OpenSSL loads without the GIL)."""
    lock = asyncio.Lock()

    async def reload() -> None:
        async with lock:
            try:
                files = await asyncio.get_running_loop().run_in_executor(None, tls.resolve)
                tls.apply(files)
            except EdgecacheError as exc:  # keep serving with the chain we have
                log.error("TLS reload failed, keeping the current certificate: %s", exc)
    return reload


def _on_signal(reload: Reload, tasks: set[asyncio.Task[None]]
               ) -> Callable[[], None]:
    """A signal handler that starts `reload` as a task (kept referenced until it is done)."""
    def handler() -> None:
        task = asyncio.get_running_loop().create_task(reload(), name="tls reload")
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    return handler
