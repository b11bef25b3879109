"""The guard that ends a blob body its client has stopped reading.

A client that stops reading (and keeps the connection open) would otherwise hold its
connection, its descriptors and its handler forever: the sendfile path waits on `add_writer`
and the transport path on aiohttp's drain, neither with a bound. aiohttp's keep-alive timer
(`listen.idle_timeout`) only runs between requests.

The hot path must not pay for this per piece or per sendfile window, so the guard is one timer
per response that looks every `timeout` seconds: if the body has been waiting for the client
(our `add_writer` waiter, or the protocol's writing paused) at two looks in a row with no byte
sent in between, the write has made no progress for at least `timeout`; the guard then resets
the connection (SO_LINGER 0, so the kernel does not keep the unsent bytes and the socket either)
and fails the waiter. A stalled write is therefore ended between `timeout` and `2 x timeout`
after it stopped. Time spent waiting for an upstream (a download in progress) is not a stalled
write: its own bound is the fill's `stall_timeout`. A timeout of 0 turns the guard off.

The reset also proves the descriptors are gone: the kernel resets the connection only when the
last descriptor on it closes (the sendfile path holds a duplicate until its body ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable

from aiohttp import web

from edgecache.config import ListenConfig

log = logging.getLogger(__name__)

WRITE_TIMEOUT = web.AppKey("write_timeout", float)  # set by the composition root
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close with RST, drop the unsent bytes


def write_timeout(request: web.BaseRequest) -> float:
    """The configured bound on a write that makes no progress (`listen.idle_timeout`)."""
    if isinstance(request, web.Request):
        return request.config_dict.get(WRITE_TIMEOUT, ListenConfig.idle_timeout)
    return ListenConfig.idle_timeout


class StallGuard:
    """Watches one response body. `progress` returns a count that grows whenever bytes go out;
    whoever waits for the socket itself puts its future in `waiter`. Close it when the body
    ends."""

    def __init__(self, request: web.BaseRequest, progress: Callable[[], int]) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = request.transport
        self._protocol = request.protocol
        self._progress = progress
        self._timeout = write_timeout(request)
        self.waiter: asyncio.Future[None] | None = None
        self._seen = -1
        self._was_waiting = False
        self._handle: asyncio.TimerHandle | None = (
            self._loop.call_later(self._timeout, self._look) if self._timeout > 0 else None)

    def __enter__(self) -> StallGuard:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _waiting(self) -> bool:
        waiter = self.waiter
        return (waiter is not None and not waiter.done()) or self._protocol.writing_paused

    def _look(self) -> None:
        seen, waiting = self._progress(), self._waiting()
        if waiting and self._was_waiting and seen == self._seen:
            self._handle = None
            self._cut()
            return
        log.debug("a body is %s (%d sent)", "waiting for its client" if waiting else "going", seen)
        self._seen, self._was_waiting = seen, waiting
        self._handle = self._loop.call_later(self._timeout, self._look)

    def _cut(self) -> None:
        transport = self._transport
        log.info("closed a connection whose client read nothing for %gs", self._timeout)
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            transport.abort()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("the client stopped reading"))
