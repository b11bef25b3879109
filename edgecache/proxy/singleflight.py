"""Run one coroutine per key at a time and share its result with every concurrent caller.

The call runs as its own task, shielded from callers: a client that disconnects does not cancel
the fetch that other clients (and the cache) are waiting for. So the task outlives its callers,
and this object is its owner: `close()` (at shutdown, before the clients and index the calls use
are closed) cancels every call still running and waits until each has ended. A call may also
be a future that cannot be cancelled once running (a thread's work): its owner stops what feeds
it and then `drain()`s instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Task[V]] = {}
        self._closed = False

    def __len__(self) -> int:
        """Calls in flight."""
        return len(self._calls)

    def __contains__(self, key: K) -> bool:
        return key in self._calls

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        return await asyncio.shield(self.start(key, call))

    def start(self, key: K, call: Callable[[], Awaitable[V]]) -> asyncio.Task[V]:
        """The call in flight for `key`, started if there is none. Nobody has to await it: it
        is kept here until done, and a failure nobody awaited is retrieved, not logged."""
        task = self._calls.get(key)
        if task is None:
            if self._closed:  # requests end before the owner closes: a wiring mistake
                raise RuntimeError("SingleFlight.start after close()")
            task = asyncio.ensure_future(call())
            self._calls[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return task

    async def close(self) -> None:
        """Cancel every call in flight and wait until each has ended; none starts after."""
        self._closed = True
        tasks = list(self._calls.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Wait until every call in flight has ended, cancelling none."""
        await asyncio.gather(*self._calls.values(), return_exceptions=True)

    def _done(self, key: K, task: asyncio.Task[V]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]
        if not task.cancelled():
            task.exception()  # retrieved here so an abandoned failure is not logged as lost
