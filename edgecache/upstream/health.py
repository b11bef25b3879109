"""Is an upstream reachable? Decided from real requests, and a probe while it is not.

After `threshold` consecutive failures (refused, DNS, timeout, TLS, 5xx, 429) the upstream is
marked down: requests stop waiting on it and fail at once, so the proxy serves what it has
without any timeout. A background probe (`GET /v2/`, any answer below 500 counts) with
exponential backoff marks it up again. Each change of state is logged once, not per request.

Failures are counted per exchange, whatever part of it failed (the request, or reading the
body: `Exchange.stage` in `exchange.py` is the one rule); an exchange succeeds once it is whole.

Before that, an upstream is `suspect` from the moment it leaves someone waiting (a caller gave
up on it, or a request timed out) until it next answers anything successfully. Marking down
takes `threshold` x `response_timeout` (30 s by default) against a black hole; a suspect
upstream lets callers that have something to fall back on (a cached tag) stop waiting on it
after the first timeout instead of each paying it. Fast failures (5xx, refused) do not make it
suspect: waiting for them costs nothing, and the caller still gets the fresher answer when the
next try succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[bool]]
StateChange = Callable[[str, bool], None]


class UpstreamHealth:
    def __init__(self, name: str, probe: Probe, *, threshold: int = 3,
                 backoff_initial: float = 1.0, backoff_max: float = 60.0,
                 on_change: StateChange | None = None) -> None:
        self.name = name
        self.up = True
        self._probe = probe
        self._threshold = max(1, threshold)
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._on_change = on_change
        self._failures = 0
        self._task: asyncio.Task[None] | None = None
        self._probes: set[asyncio.Task[None]] = set()  # until ended, cancelled ones included
        self.last_error = ""
        self.suspect = False

    def success(self) -> None:
        """One exchange succeeded whole (for a GET: its body read to the end)."""
        self._failures = 0
        self.answered()
        if not self.up:
            self._set(True, "answering again")

    def answered(self) -> None:
        """The upstream answered (its headers came back): it leaves nobody waiting, so it is no
        longer suspect; but the exchange is not a success before its body has been read."""
        if self.suspect:
            self.suspect = False
            log.info("upstream %s answered again; cached tags wait for its answer again",
                     self.name)

    def failure(self, reason: str, *, unanswered: bool = False) -> None:
        """One failed exchange; `unanswered` when it failed by timing out (nothing came back)."""
        if unanswered:
            self.no_answer(reason)
        self._failures += 1
        self.last_error = reason
        if self.up and self._failures >= self._threshold:
            self._set(False, reason)

    def no_answer(self, reason: str) -> None:
        """Someone waited on this upstream in vain: not a failure yet (the request may still
        be answered, and counts when it ends), but enough that callers with a fallback should
        stop waiting on it until it answers."""
        if not self.suspect:
            self.suspect = True
            log.info("upstream %s left a request unanswered (%s); cached tags are served "
                     "without waiting for it until it answers", self.name, reason)

    def _set(self, up: bool, reason: str) -> None:
        self.up = up
        if up:
            log.warning("upstream %s is up: %s", self.name, reason)
            if self._task is not None and self._task is not asyncio.current_task():
                self._task.cancel()
            self._task = None
        else:
            log.warning("upstream %s is down after %d failures (%s); serving from cache",
                        self.name, self._failures, reason)
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(
                    self._probe_loop(), name=f"probe {self.name}")
                self._probes.add(self._task)
                self._task.add_done_callback(self._probes.discard)
        if self._on_change is not None:
            self._on_change(self.name, up)

    async def _probe_loop(self) -> None:
        delay = self._backoff_initial
        while not self.up:
            await asyncio.sleep(delay)
            try:
                ok = await self._probe()
            except Exception as exc:  # the probe is a background-loop guard: never dies silently
                log.debug("probe of %s failed: %s", self.name, exc)
                ok = False
            if ok:
                self._task = None
                self.success()
                return
            delay = min(delay * 2, self._backoff_max)

    async def close(self) -> None:
        """Cancel the probe and wait until it (and any probe cancelled before) has ended."""
        self._task = None
        probes = list(self._probes)
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
