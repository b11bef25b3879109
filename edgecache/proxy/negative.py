"""A short memory of what an upstream said it does not have.

Without it every request for absent content is an upstream request: a client (or an attacker)
asking for 300 missing digests twice costs 600, burns a Docker Hub pull budget and can get an
upstream marked down for everyone. A confirmed 404 is remembered for `cache.negative_ttl`,
keyed by upstream, repository, kind and reference: an answer from one upstream (or one of its
repositories) never stands for another's. The memory is bounded: every entry lives as long as
any other (a hit does not extend it, or a steady stream of requests would keep a 404 forever),
so insertion order is expiry order, and the oldest go first when it is full.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

# upstream, repository, "blobs" or "manifests", digest or tag
Key = tuple[str, str, str, str]

MAX_ENTRIES = 4096  # ~1.4 MiB at most (measured: ~350 bytes an entry, digest keys)


class Absences:
    def __init__(self, ttl: float, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._expiry: OrderedDict[Key, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry)

    def known(self, key: Key) -> bool:
        """Whether the upstream said `key` is absent less than `ttl` ago."""
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if expiry > self._clock():
            return True
        del self._expiry[key]
        return False

    def remember(self, key: Key) -> None:
        if self._ttl <= 0:
            return
        now = self._clock()
        self._expiry.pop(key, None)  # re-inserted at the end: order stays expiry order
        self._expiry[key] = now + self._ttl
        while self._expiry:  # drop the expired and, when full, the oldest
            oldest, expiry = next(iter(self._expiry.items()))
            if expiry > now and len(self._expiry) <= self._max:
                break
            del self._expiry[oldest]

    def forget(self, key: Key) -> None:
        self._expiry.pop(key, None)
