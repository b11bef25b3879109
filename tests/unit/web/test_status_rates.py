"""Hit ratio and bytes saved over the last hour and since start, from per-minute samples of the
request counters (a clock the test turns: no waiting for an hour)."""

from __future__ import annotations

from edgecache.metrics import Metrics
from edgecache.web.statusdata import SAMPLE_EVERY, Rates


def test_the_last_hour_forgets_what_came_before_it() -> None:
    metrics, now = Metrics(), [1_000_000.0]
    rates = Rates(metrics, clock=lambda: now[0])
    assert rates.last_hour().hit_ratio is None and rates.since_start().requests == 0

    metrics.requests.labels("blob", "miss").inc(10)  # the first minute: ten misses
    metrics.saved_bytes.inc(0)
    for _ in range(60):  # an hour and a minute later: the misses are out of the window
        now[0] += SAMPLE_EVERY
        rates.sample()
    metrics.requests.labels("blob", "hit").inc(3)
    metrics.requests.labels("manifest", "stale").inc(1)
    metrics.requests.labels("manifest", "miss").inc(4)
    metrics.requests.labels("tags", "hit").inc(50)  # not a pull: not counted
    metrics.saved_bytes.inc(4096)
    now[0] += SAMPLE_EVERY
    rates.sample()

    hour, start = rates.last_hour(), rates.since_start()
    assert (hour.requests, hour.hit_ratio, hour.saved_bytes) == (8, 0.5, 4096)
    assert hour.seconds == 3600.0
    assert (start.requests, start.hit_ratio, start.saved_bytes) == (18, round(4 / 18, 4), 4096)
    assert start.seconds == 61 * SAMPLE_EVERY
