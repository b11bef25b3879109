"""Waiting for a state in tests: one bounded poll, sync and async.

A test that must see something happen (a gauge move, a file appear, a reader join) waits on
that condition, never on a fixed sleep. Each wait is bounded twice, by a number of rounds and
by a deadline, so a wedged loop or a slow machine cannot hang the suite; when the bound is hit
the test fails with an AssertionError naming what it awaited. The timeout is a ceiling for a
hang, not a latency assertion: a test passes however fast the state arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: Between two looks at the condition. It is a poll interval, not a stand-in for an event.
INTERVAL = 0.01
TIMEOUT = 30.0


def _rounds(timeout: float, interval: float) -> int:
    return max(1, int(timeout / interval) + 1)


def _fail(what: str, timeout: float, describe: Callable[[], str] | None) -> AssertionError:
    detail = f" ({describe()})" if describe is not None else ""
    return AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


def holds_within(condition: Callable[[], object], *, timeout: float = TIMEOUT,
                 interval: float = INTERVAL) -> bool:
    """Whether `condition` becomes truthy within the bounds (blocking poll)."""
    deadline = time.monotonic() + timeout
    for _ in range(_rounds(timeout, interval)):
        if condition():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return bool(condition())


async def eventually(condition: Callable[[], object], *, timeout: float = TIMEOUT,
                     interval: float = INTERVAL) -> bool:
    """Whether `condition` becomes truthy within the bounds, yielding to the loop between looks."""
    deadline = time.monotonic() + timeout
    for _ in range(_rounds(timeout, interval)):
        if condition():
            return True
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(interval)
    return bool(condition())


def wait_until(condition: Callable[[], object], what: str, *, timeout: float = TIMEOUT,
               interval: float = INTERVAL,
               describe: Callable[[], str] | None = None) -> None:
    """Poll `condition` (blocking) until it is truthy; `describe` adds the state seen last."""
    if not holds_within(condition, timeout=timeout, interval=interval):
        raise _fail(what, timeout, describe)


async def await_until(condition: Callable[[], object], what: str, *, timeout: float = TIMEOUT,
                      interval: float = INTERVAL,
                      describe: Callable[[], str] | None = None) -> None:
    """Poll `condition` on the running loop until it is truthy; `describe` adds the last state."""
    if not await eventually(condition, timeout=timeout, interval=interval):
        raise _fail(what, timeout, describe)
