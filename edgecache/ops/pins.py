"""Runtime pins: `edgecache pin`/`unpin`/`pins` act on the running service (`admin.py`).

The config's `pins:` are the declarative base: listed, never removed at runtime (the file
would pin them again at the next start). Runtime pins live in the index's `pins` table
(`storage/pins.py`), so they survive restarts, and eviction protects the union of both, read
from the index at each run (`storage/eviction.py`): nothing here keeps a copy in step.

Every pin not held in full is fetched until it is (`pinfetch.py`: tries again after a
backoff), through the service's own pull path (`airgap/selfpull.py`, the code `edgecache warm`
runs, waiting until the service listens): those found at start (`start`), config pins
included, and each `pin`. An attempt records an event per blob as it lands, which the admin API
streams to a CLI that waits. The fetches belong to `Pinning`, not to the request that started
them: a CLI that goes away (or `--no-wait`) leaves the fetch running; `unpin` stops it;
`close()` cancels and awaits them all at shutdown.

Held in full (`_held`): the image's manifest and, for an image manifest, its config and layers;
for an index, the platform manifests held (a `--platform` pin takes some) each in full, and at
least one. Runtime pins keep no platforms across a restart: one fetched again then takes them
all, as `edgecache warm` does by default.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from edgecache.airgap.platform import Platform
from edgecache.airgap.selfpull import SelfPull
from edgecache.config import Config
from edgecache.errors import EdgecacheError
from edgecache.imagerefs import reference_problem
from edgecache.oci import INDEX_TYPES, ImageReference, official_repository
from edgecache.ops.pinfetch import RETRY_FIRST, RETRY_MAX, PinFetch, PinJob
from edgecache.storage import pins as rows
from edgecache.storage.index import Index

log = logging.getLogger(__name__)


class Pinning:
    def __init__(self, index: Index, config: Config, puller: SelfPull,
                 retry: tuple[float, float] = (RETRY_FIRST, RETRY_MAX)) -> None:
        self._index = index
        self._config = config
        self._puller = puller
        self._retry = retry  # the first backoff and the longest
        self._fetches: dict[str, PinFetch] = {}  # pins not held in full, being fetched
        self._tasks: set[asyncio.Task[None]] = set()  # until ended, cancelled ones included

    def start(self) -> None:
        """At start: fetch every pin not held in full (a fetch that failed or was cut off
        before the last stop), once the service listens."""
        for text in (*self._config.pins, *rows.references(self._index)):
            if text not in self._fetches and not self._held(text):
                self._fetch(text, ())

    def problems(self, texts: Sequence[object]) -> list[str]:
        return [why for text in texts
                if (why := reference_problem(text, self._config.upstreams)) is not None]

    def pin(self, texts: Sequence[str], platforms: Sequence[Platform] = ()) -> list[PinJob]:
        """Record the pins (checked first: `problems`) and fetch each; its attempt, running or
        new. A config pin is pinned already: it is fetched all the same when asked."""
        runtime = [t for t in texts if t not in self._config.pins]
        rows.add(self._index, runtime)
        return [self._fetch(text, tuple(platforms)) for text in dict.fromkeys(texts)]

    def unpin(self, texts: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """Removed pins (their fetches stopped), and the refused ones with why (one line
        each)."""
        refused = {t: "pinned by the config (pins:); remove it there" for t in texts
                   if t in self._config.pins}
        removed = rows.remove(self._index, [t for t in texts if t not in refused])
        for text in removed:
            if (fetch := self._fetches.pop(text, None)) is not None:
                fetch.task.cancel()  # awaited by close() if it has not ended by then
        for text in texts:
            if text not in refused and text not in removed:
                refused[text] = "not pinned"
        return removed, refused

    def listing(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = [
            {"reference": text, "source": "config", "added_at": None, **self._state(text)}
            for text in self._config.pins]
        out += [{"reference": row.reference, "source": "runtime", "added_at": row.added_at,
                 **self._state(row.reference)} for row in rows.rows(self._index)
                if row.reference not in self._config.pins]
        return out

    def _state(self, text: str) -> dict[str, object]:
        """fetching (blobs landed of those found so far), failed (the error, the next try's
        Unix time), held, or not held (lost since it was held: fetched again at start)."""
        fetch = self._fetches.get(text)
        if fetch is not None:
            return fetch.state()
        return {"state": "held" if self._held(text) else "not held"}

    def _held(self, text: str) -> bool:
        """Whether the image is held in full (the module's docstring says what that is)."""
        try:
            ref = ImageReference.parse(text)
        except EdgecacheError:
            return False
        digest = ref.digest
        if digest is None and ref.tag is not None:
            record = self._index.tag(ref.registry,
                                     official_repository(ref.registry, ref.repository), ref.tag)
            digest = record.digest if record is not None else None
        return digest is not None and self._complete(str(digest))

    def _complete(self, digest: str, depth: int = 2) -> bool:
        media_type = self._index.media_type(digest)
        if media_type is None or depth == 0:
            return media_type is not None
        children = self._index.children(digest)
        if media_type in INDEX_TYPES:
            held = [c for c in children if self._index.media_type(c) is not None]
            return (bool(held) or not children) and all(self._complete(c, depth - 1)
                                                         for c in held)
        return all(self._index.size(child) is not None for child in children)

    def _fetch(self, text: str, platforms: tuple[Platform, ...]) -> PinJob:
        """The pin's attempt running, or a new one (at once, even while a retry waits)."""
        fetch = self._fetches.get(text)
        if fetch is not None:
            return fetch.now(platforms)
        fetch = self._fetches[text] = PinFetch(text, platforms, self._puller,
                                               lambda: self._held(text), self._retry)
        self._tasks.add(fetch.task)
        fetch.task.add_done_callback(lambda task: self._ended(text, fetch, task))
        return fetch.job

    def _ended(self, text: str, fetch: PinFetch, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._fetches.get(text) is fetch:
            del self._fetches[text]
        if not task.cancelled() and task.exception() is not None:
            log.error("pin %s: fetching stopped", text, exc_info=task.exception())

    async def close(self) -> None:
        """At shutdown, before the listeners' clients and the index close."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
