"""What the status page shows, as plain values: disk, rates, upstreams, peers, an image's parts.

The composition root hands this module callables (`StatusSource`), so web/ reads no storage or
upstream internals. Rates over the last hour come from a ring of per-minute samples of the
existing counters (`Rates`: 61 small tuples; its one task is owned by the source and cancelled
at shutdown); "since start" is the counters themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgecache.errors import EdgecacheError
from edgecache.metrics import Metrics
from edgecache.oci import INDEX_TYPES, Digest, manifest_document
from edgecache.storage.store import Holdings, Image, Part, Store

SAMPLE_EVERY = 60.0
WINDOW = 3600.0
CONFIG_READ_LIMIT = 64 * 1024  # an image config larger than this is not read for its platform
MAX_PARTS = 500
MAX_READS = 64  # platform manifests of an index read for their parts


@dataclass(frozen=True, slots=True)
class Disk:
    used: int  # bytes the cache holds
    budget: int  # the most it may hold now
    free: int  # free on the filesystem
    total: int


@dataclass(frozen=True, slots=True)
class UpstreamState:
    name: str
    up: bool
    suspect: bool
    last_error: str
    private: bool
    ratelimit_remaining: int | None = None  # Docker Hub's ratelimit-remaining, last seen
    ratelimit_limit: int | None = None


@dataclass(frozen=True, slots=True)
class Peer:
    """A cluster peer as the cluster module sees it (issue 16 feeds `StatusSource.peers`)."""

    name: str
    address: str
    up: bool
    detail: str = ""
    last_seen: float | None = None  # Unix time of its last answer; None: never answered
    is_self: bool = False


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    hits: float
    lookups: float
    saved: float
    served: float


@dataclass(frozen=True, slots=True)
class Rate:
    """Hit ratio (hits / manifest and blob requests; None before any) and bytes saved."""

    seconds: float
    requests: int
    hit_ratio: float | None
    saved_bytes: int


def _sample(metrics: Metrics, at: float) -> Sample:
    hits = lookups = 0.0
    for family in metrics.requests.collect():
        for s in family.samples:
            if s.name.endswith("_total") and s.labels.get("route") in ("manifest", "blob"):
                lookups += s.value
                hits += s.value if s.labels.get("result") in ("hit", "stale") else 0.0
    saved = metrics.registry.get_sample_value("edgecache_saved_bytes_total") or 0.0
    served = sum(metrics.registry.get_sample_value("edgecache_served_bytes_total",
                                                   {"source": source}) or 0.0
                 for source in ("cache", "upstream"))
    return Sample(at, hits, lookups, saved, served)


class Rates:
    """Per-minute samples of the request and byte counters, an hour of them."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self._metrics = metrics
        self._clock = clock
        self._start = self._now()
        self._ring: deque[Sample] = deque([self._start], maxlen=int(WINDOW / SAMPLE_EVERY) + 1)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="status rates")

    async def close(self) -> None:
        """Cancel the sampling task and wait until it has ended."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            self.sample()

    def _now(self) -> Sample:
        return _sample(self._metrics, self._clock())

    def sample(self) -> None:
        """Keep the counters as they are now (every SAMPLE_EVERY; the oldest falls out)."""
        self._ring.append(self._now())

    def since_start(self) -> Rate:
        return _rate(self._start, self._now())

    def last_hour(self) -> Rate:
        """From the oldest sample at most an hour old (since start, before an hour has run)."""
        now = self._now()
        first = next((s for s in self._ring if now.at - s.at <= WINDOW + 1), self._ring[-1])
        return _rate(first, now)


def _rate(first: Sample, last: Sample) -> Rate:
    lookups = last.lookups - first.lookups
    return Rate(round(last.at - first.at, 1), int(lookups),
                round((last.hits - first.hits) / lookups, 4) if lookups > 0 else None,
                int(last.saved - first.saved))


@dataclass
class StatusSource:
    """Everything the pages read; made by the composition root, owner of the rates task."""

    store: Store
    holdings: Holdings
    metrics: Metrics
    disk: Callable[[], Disk]
    upstreams: Callable[[], list[UpstreamState]]
    private: frozenset[str]  # upstreams whose content only an authenticated viewer sees
    public: frozenset[str]  # every other route name (public upstreams, the local registry)
    peers: Callable[[], list[Peer]] | None = None  # None: cluster mode off
    # owners whose content another route sees only once linked to it (the claim rule)
    restricted: frozenset[str] = frozenset()
    rates: Rates = field(init=False)

    def __post_init__(self) -> None:
        self.rates = Rates(self.metrics)

    def visible(self, authenticated: bool) -> frozenset[str]:
        return self.public | self.private if authenticated else self.public

    async def close(self) -> None:
        await self.rates.close()

    def platforms(self, row: Image) -> list[str]:
        """`os/arch[/variant]` of a held image: an index's entries (attestations left out), or
        a single image's config (when it is held and small)."""
        doc = self._document(row.digest, None) if row.media_type else None
        if doc is None:
            return []
        if row.media_type in INDEX_TYPES:
            found = (_platform(m.get("platform")) for m in _list(doc, "manifests"))
            return sorted({p for p in found if p and not p.startswith("unknown/")})
        config = doc.get("config")
        found_one = _platform(self._document(config.get("digest"), row.upstream, config=True)
                              if isinstance(config, dict) else None)
        return [found_one] if found_one else []

    def parts(self, row: Image) -> tuple[list[Part], list[str]]:
        """An image's manifests, configs and layers (held or not; a platform manifest's own
        parts when it is held) and its platforms: bounded by MAX_PARTS. A part this route
        could not be handed without its upstream's word (`proxy/claims.py`: it came from
        another, private upstream) is shown as not cached, and never read."""
        media_types: dict[str, str] = {}
        order = [row.digest]
        if row.media_type:
            media_types[row.digest] = row.media_type
        frontier = [row.digest]
        for _ in range(2):  # index -> platform manifests -> configs and layers
            nxt = []
            for digest in frontier:
                doc = self._document(digest, None if digest == row.digest else row.upstream)
                for item in _descriptors(doc):  # held manifests only
                    media_types.setdefault(item[0], item[1])
                    order.append(item[0])
                    nxt.append(item[0])
            frontier = nxt[:MAX_READS]
        parts = [part if part.digest == row.digest or self._free(row.upstream, part.digest)
                 else Part(part.digest, None, part.media_type, False)
                 for part in self.holdings.parts(order[:MAX_PARTS], media_types)]
        return parts, self.platforms(row)

    def _free(self, route: str, digest: str) -> bool:
        """The claim rule (`proxy/claims.py` `free`): content held for `route` to see."""
        if not self.restricted:
            return True
        try:
            owners = self.store.links(Digest.parse(digest))
        except EdgecacheError:
            return False
        return route in owners or not (owners & self.restricted)

    def _document(self, digest: object, route: str | None,
                  config: bool = False) -> dict[str, Any] | None:
        """A held manifest's JSON (or, with `config`, a held blob's of at most
        CONFIG_READ_LIMIT bytes) that `route` may see (None: the tag's own); None for anything
        else: a layer is never read."""
        try:
            parsed = Digest.parse(digest) if isinstance(digest, str) else None
            if parsed is None or (route is not None and not self._free(route, str(parsed))):
                return None
            if config:
                stored = self.store.blob(parsed)
                if stored is None or stored.size > CONFIG_READ_LIMIT:
                    return None
            elif self.store.media_type(parsed) is None:
                return None
            body = self.store.read(parsed)
            return manifest_document(body) if body is not None else None
        except EdgecacheError:
            return None


def _list(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = doc.get(key)
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _descriptors(doc: dict[str, Any] | None) -> list[tuple[str, str]]:
    if doc is None:
        return []
    items = [doc["config"]] if isinstance(doc.get("config"), dict) else []
    items += _list(doc, "manifests") + _list(doc, "layers") + _list(doc, "blobs")
    return [(i["digest"], str(i.get("mediaType") or "")) for i in items
            if isinstance(i.get("digest"), str)]


def _platform(doc: object) -> str:
    if not isinstance(doc, dict):
        return ""
    parts = [doc.get("os"), doc.get("architecture"), doc.get("variant")]
    return "/".join(p for p in parts if isinstance(p, str) and p)
