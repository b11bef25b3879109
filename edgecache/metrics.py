"""Every metric, on a registry the composition root injects (never the global default one).

Labels are bounded: upstream names come from the configuration; no repository, tag or digest is
ever a label value.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "edgecache_requests_total", "Client requests by route and cache result.",
            ["route", "result"], registry=r)
        self.served_bytes = Counter(
            "edgecache_served_bytes_total", "Bytes of blobs served to clients, by source.",
            ["source"], registry=r)
        self.upstream_bytes = Counter(
            "edgecache_upstream_fetched_bytes_total", "Blob bytes fetched from each upstream.",
            ["upstream"], registry=r)
        self.digest_mismatches = Counter(
            "edgecache_digest_mismatches_total",
            "Downloads whose bytes did not match their digest (never published).",
            ["upstream"], registry=r)
        self.resumed_downloads = Counter(
            "edgecache_resumed_downloads_total", "Upstream blob downloads resumed after a break.",
            ["upstream"], registry=r)
        self.stale_serves = Counter(
            "edgecache_stale_serves_total",
            "Tags answered from cache because the upstream could not be asked.",
            ["upstream"], registry=r)
        self.upstream_up = Gauge(
            "edgecache_upstream_up", "1 while the upstream answers, 0 while marked down.",
            ["upstream"], registry=r)
        self.evictions = Counter(
            "edgecache_evictions_total", "Blobs and manifests evicted to stay within quota.",
            registry=r)
        self.evicted_bytes = Counter(
            "edgecache_evicted_bytes_total", "Bytes evicted to stay within quota.", registry=r)
        self.uncacheable = Counter(
            "edgecache_uncacheable_total",
            "Blobs served without caching because no room could be made.", registry=r)
        self.downloads_in_flight = Gauge(
            "edgecache_downloads_in_flight", "Upstream blob downloads in progress.", registry=r)
