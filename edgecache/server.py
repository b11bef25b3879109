"""The process `edgecache serve` runs: listeners, signals, background tasks, shutdown.

`app.build_app` composes the application; this module runs it: it binds the listeners (a
listener that cannot bind is one line naming its key), answers SIGTERM/SIGINT (stop) and SIGHUP
(TLS reload), owns the process-wide background tasks (systemd watchdog, TLS renewal, heap trim)
and stops everything in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edgecache import banner, systemd
from edgecache.app import (
    AUTH,
    LISTENING,
    METRICS,
    PINNING,
    READY,
    STATUS,
    _cancel,
    build_app,
    warn_open_secrets,
)
from edgecache.config import Config, parse_hostport
from edgecache.errors import ConfigError, EdgecacheError
from edgecache.memory import HeapTrimmer, trim_periodically
from edgecache.ops.admin import mount_admin
from edgecache.web.observability import access_logger_for, metrics_app
from edgecache.web.status import add_status_routes

if TYPE_CHECKING:  # imported only when HTTPS is configured
    from edgecache.tls.server import ServerTls

log = logging.getLogger(__name__)

MAX_LINE = 8190
MAX_HEADERS = 64
TLS_RECHECK = 3600.0
Reload = Callable[[], Coroutine[Any, Any, None]]


def server_tls(config: Config) -> ServerTls | None:
    if not config.listen.https:
        return None
    from edgecache.tls.server import ServerTls
    from edgecache.tls.site import certificate_names
    return ServerTls(config.tls.cert_file, config.tls.key_file, certificate_names(config),
                     config.storage.path / "tls", config.tls.client_ca_file,
                     (config.tls.ca_cert_file, config.tls.ca_key_file))


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
    runner = _runner(app, config)
    metrics = _MetricsListener(app, config)
    app.on_cleanup.insert(0, metrics.stop)
    await runner.setup()
    background: list[asyncio.Task[None]] = []
    reloads: set[asyncio.Task[None]] = set()
    try:
        await metrics.start()  # 1. listeners
        await _listen_all(runner, config, tls)
        app[LISTENING].set()  # what the service pulls through them (pins, prefetch) waits
        app[PINNING].start()  # pins not held in full: a failed fetch, or one a stop cut off
        banner.log_start(config, app[METRICS])
        reload = _reloader(tls) if tls is not None else None
        stop = _handle_signals(reload, reloads)  # 2. signals
        systemd.notify("READY=1")
        _start_background(reload, background)  # 3. background tasks
        await stop.wait()
        log.info("shutting down (in-flight requests get %gs)", config.listen.shutdown_timeout)
        systemd.notify("STOPPING=1")
    finally:
        await _shut_down(runner, metrics, app, [*background, *reloads])  # 4. shutdown steps


def _runner(app: web.Application, config: Config) -> web.AppRunner:
    return web.AppRunner(app, access_log_class=access_logger_for(config.log.format),
                         handler_cancellation=True,
                         shutdown_timeout=config.listen.shutdown_timeout,
                         # hostile input: bounded request line and headers; a connection that
                         # idles or never completes a request is closed (slow loris)
                         keepalive_timeout=config.listen.idle_timeout,
                         max_line_size=MAX_LINE, max_field_size=MAX_LINE,
                         max_headers=MAX_HEADERS)


class _MetricsListener:
    """Probes, scrapes and the status page (`web/status.py`) are answered while requests
    drain; the scrape-time gauges read the index, so the metrics listener stops before the
    components (the index) close."""

    def __init__(self, app: web.Application, config: Config) -> None:
        self._app = app
        self._address = config.metrics.listen
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if not self._address:
            return
        app = self._app
        listener = metrics_app(app[METRICS], lambda: app.get(READY))
        mount_admin(listener, app[PINNING])  # /admin/ (runtime pins), loopback peers only
        add_status_routes(listener, lambda: app.get(STATUS), app[AUTH], challenge=False)
        self._runner = web.AppRunner(listener, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        host, port = parse_hostport(self._address, "metrics.listen")
        await _listen(web.TCPSite(self._runner, host, port, reuse_address=True),
                      "metrics.listen", self._address)
        log.info("metrics on http://%s/metrics", self._address)

    async def stop(self, _: web.Application | None = None) -> None:
        stopping, self._runner = self._runner, None
        if stopping is not None:
            await stopping.cleanup()


async def _listen_all(runner: web.AppRunner, config: Config, tls: ServerTls | None) -> None:
    for scheme, address in (("http", config.listen.http), ("https", config.listen.https),
                            ("peer", config.cluster.listen)):  # peer: plain HTTP, peers only
        if not address:
            continue
        host, port = parse_hostport(address, f"listen.{scheme}")
        context = tls.context if scheme == "https" and tls is not None else None
        await _listen(web.TCPSite(runner, host, port, reuse_address=True,
                                  ssl_context=context), f"listen.{scheme}", address)
        log.info("edgecache listening on %s://%s%s", "http" if scheme == "peer" else scheme,
                 address, " (peer requests)" if scheme == "peer" else "")


def _handle_signals(reload: Reload | None, reloads: set[asyncio.Task[None]]) -> asyncio.Event:
    """The event SIGTERM and SIGINT set; SIGHUP starts a TLS reload (kept in `reloads`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, _on_signal(reload, reloads))
    return stop


def _start_background(reload: Reload | None, tasks: list[asyncio.Task[None]]) -> None:
    """The process-wide tasks, into `serve`'s list (cancelled and awaited in `_shut_down`)."""
    interval = systemd.watchdog_interval()
    if interval:
        tasks.append(asyncio.create_task(systemd.watchdog(interval), name="watchdog"))
    if reload is not None:
        tasks.append(asyncio.create_task(_renew(reload), name="tls renewal"))
    trimmer = HeapTrimmer()
    if trimmer.available:
        tasks.append(asyncio.create_task(trim_periodically(trimmer), name="heap trim"))


async def _shut_down(runner: web.AppRunner, metrics: _MetricsListener, app: web.Application,
                     tasks: list[asyncio.Task[None]]) -> None:
    await _cancel(*tasks)
    await runner.cleanup()  # stops the metrics listener too (metrics.stop), then the index
    await metrics.stop(app)
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
