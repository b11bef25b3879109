"""Every metric, on a registry the composition root injects (never the global default one).

Names follow Prometheus conventions (`edgecache_` prefix, base units, `_total` counters). Labels
are bounded: upstream names come from the configuration, routes and results from fixed sets; no
repository, tag or digest is ever a label value. Gauges that describe state (cache size, disk
free, counts) are read at scrape time through callbacks the composition root attaches.

No `_created` series: one per counter and histogram child doubles what a scrape carries and
nothing here reads it (counter resets show in the counters themselves). The switch is the
library's own, process-wide (`disable_created_metrics`), set before any metric is made.
`edgecache_build_info{version}` is 1, for "which version runs where" on a dashboard.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)

from edgecache import __version__

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                   60, 300)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        disable_created_metrics()  # type: ignore[no-untyped-call]
        ProcessCollector(registry=r)  # process_resident_memory_bytes, _cpu_seconds_total, fds
        Gauge("edgecache_build_info", "The running edgecache: 1, labelled with its version.",
              ["version"], registry=r).labels(__version__).set(1)
        # ---- clients
        self.requests = Counter(
            "edgecache_requests_total", "Client requests by route and cache result.",
            ["route", "result"], registry=r)
        self.request_duration = Histogram(
            "edgecache_request_duration_seconds",
            "Time to answer a client request (for blobs, until the body is sent).",
            ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.served_bytes = Counter(
            "edgecache_served_bytes_total", "Bytes of blobs served to clients, by source.",
            ["source"], registry=r)
        self.saved_bytes = Counter(
            "edgecache_saved_bytes_total",
            "Blob bytes served without fetching them from an upstream for that client "
            "(cache hits and readers joining a download in progress).", registry=r)
        self.responses = Counter(
            "edgecache_responses_total", "Answers to clients by status class (2xx ... 5xx).",
            ["code"], registry=r)
        # ---- upstreams
        self.upstream_requests = Counter(
            "edgecache_upstream_requests_total", "Requests sent to each upstream.",
            ["upstream"], registry=r)
        self.upstream_errors = Counter(
            "edgecache_upstream_errors_total", "Failed upstream requests, by kind.",
            ["upstream", "kind"], registry=r)
        self.upstream_duration = Histogram(
            "edgecache_upstream_request_duration_seconds",
            "Time from sending an upstream request to its response headers.",
            ["upstream"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_bytes = Counter(
            "edgecache_upstream_fetched_bytes_total", "Blob bytes fetched from each upstream.",
            ["upstream"], registry=r)
        self.upstream_up = Gauge(
            "edgecache_upstream_up", "1 while the upstream answers, 0 while marked down.",
            ["upstream"], registry=r)
        self.upstream_last_success = Gauge(
            "edgecache_upstream_last_success_timestamp_seconds",
            "Unix time of the last successful answer from each upstream.", ["upstream"],
            registry=r)
        self.ratelimit_remaining = Gauge(
            "edgecache_upstream_ratelimit_remaining",
            "Pulls left in the upstream's rate-limit window (Docker Hub's ratelimit-remaining).",
            ["upstream"], registry=r)
        self.digest_mismatches = Counter(
            "edgecache_digest_mismatches_total",
            "Downloads whose bytes did not match their digest (never published).",
            ["upstream"], registry=r)
        self.resumed_downloads = Counter(
            "edgecache_resumed_downloads_total", "Upstream blob downloads resumed after a break.",
            ["upstream"], registry=r)
        self.negative_hits = Counter(
            "edgecache_negative_cache_hits_total",
            "Requests answered 404 from a recent upstream 404 (cache.negative_ttl), unasked.",
            ["upstream"], registry=r)
        self.stale_serves = Counter(
            "edgecache_stale_serves_total",
            "Tags answered from cache because the upstream could not be asked.",
            ["upstream"], registry=r)
        self.downloads_in_flight = Gauge(
            "edgecache_downloads_in_flight", "Upstream blob downloads in progress.", registry=r)
        self.fill_readers = Gauge(
            "edgecache_download_readers", "Clients streaming from a download in progress.",
            registry=r)
        # ---- cluster (`edgecache/cluster/`): the site's other nodes as a source
        self.peer_up = Gauge(
            "edgecache_peer_up", "1 while the peer answers its health probe, 0 while down.",
            ["peer"], registry=r)
        self.peer_bytes = Counter(
            "edgecache_peer_fetched_bytes_total", "Blob bytes fetched from the site's peers.",
            registry=r)
        self.cluster_fetches = Counter(
            "edgecache_cluster_fetches_total",
            "Blob downloads (and resumptions) by source: a peer or the upstream.", ["source"],
            registry=r)
        self.peer_failures = Counter(
            "edgecache_peer_failures_total", "Peer requests that failed over to the next source.",
            registry=r)
        self.owner_misses = Counter(
            "edgecache_owner_misses_total",
            "Content this node had to fetch as its owner that no live peer held.", registry=r)
        # ---- storage
        self.cache_bytes = Gauge(
            "edgecache_cache_size_bytes", "Bytes of content the cache holds.", registry=r)
        self.quota_bytes = Gauge(
            "edgecache_cache_budget_bytes",
            "The most the cache may hold now (max_size, or what min_free leaves).", registry=r)
        self.fs_free_bytes = Gauge(
            "edgecache_filesystem_free_bytes", "Free bytes on the storage filesystem.",
            registry=r)
        self.fs_size_bytes = Gauge(
            "edgecache_filesystem_size_bytes", "Size of the storage filesystem.", registry=r)
        self.blobs = Gauge(
            "edgecache_cached_blobs", "Blobs (layers and configs) in the cache.", registry=r)
        self.manifests = Gauge(
            "edgecache_cached_manifests", "Manifests and indexes in the cache.", registry=r)
        self.evictions = Counter(
            "edgecache_evictions_total", "Blobs and manifests evicted to stay within quota.",
            registry=r)
        self.evicted_bytes = Counter(
            "edgecache_evicted_bytes_total", "Bytes evicted to stay within quota.", registry=r)
        self.watermark_bytes = Gauge(
            "edgecache_cache_watermark_bytes",
            "Eviction's thresholds now: it starts above level=high and frees down to level=low.",
            ["level"], registry=r)
        self.eviction_shortfall = Gauge(
            "edgecache_eviction_shortfall_bytes",
            "Bytes the last eviction pass fell short of the low watermark (0 once usage needs "
            "no eviction): nothing more could be evicted, or the eviction failed.", registry=r)
        self.storage_errors = Counter(
            "edgecache_storage_errors_total",
            "Writes to the storage that failed (a full, read-only or failing disk); the content "
            "was served without being kept.", registry=r)
        self.uncacheable = Counter(
            "edgecache_uncacheable_total",
            "Blobs served without caching because no room could be made.", registry=r)
