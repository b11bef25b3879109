"""What a peer's answer may say about a tag's age: a time we keep, never one from the future."""

from __future__ import annotations

import time

from edgecache.cluster.client import checked_time


def test_a_peers_checked_at_is_kept_and_bounded_by_now() -> None:
    assert checked_time("1796179931.646111") == 1796179931.646111
    ahead = checked_time(repr(time.time() + 3600))  # a peer whose clock runs ahead
    assert ahead is not None and ahead <= time.time()
    for garbage in (None, "", "soon", "nan", "inf", "-1", "1" * 40, "1e400"):
        assert checked_time(garbage) is None, garbage
