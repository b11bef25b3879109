"""The status page's source, wired from the components `app._components` made: the one place
that reads the quota, the index and the upstream clients for it, so web/ sees plain values.

Cluster peers (issue 16) plug in as `peers`: a callable returning `web.statusdata.Peer`s;
until then it is None and the page says "cluster mode off". Local (pushed) content (issue 17)
is the route `local` names: its tags are listed as local, and it is visible like a public
upstream (its own access rules, when it has any, are the push module's to add here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from edgecache.config import Config
from edgecache.metrics import Metrics
from edgecache.storage.holdings import Holdings
from edgecache.storage.index import Index
from edgecache.storage.quota import Quota
from edgecache.storage.schema import UNKNOWN_OWNER
from edgecache.storage.store import Store
from edgecache.upstream.client import UpstreamClient
from edgecache.web.statusdata import Disk, Peer, StatusSource, UpstreamState


def status_source(config: Config, store: Store, index: Index, quota: Quota,
                  clients: Mapping[str, UpstreamClient], metrics: Metrics,
                  local: str | None = None,
                  peers: Callable[[], list[Peer]] | None = None) -> StatusSource:
    private = frozenset(n for n, u in config.upstreams.items() if u.access == "authenticated")
    public = frozenset(config.upstreams) - private | ({local} if local else set())

    def disk() -> Disk:
        fs = quota.disk()
        return Disk(quota.used, quota.budget(), fs.free, fs.total)

    def upstreams() -> list[UpstreamState]:
        return [UpstreamState(name, c.health.up, c.health.suspect, c.health.last_error,
                              name in private, *c.ratelimit)
                for name, c in sorted(clients.items())]

    restricted = private | {UNKNOWN_OWNER} if private else private  # adopted after a crash
    holdings = Holdings(index, config.pins, local, restricted=restricted)
    source = StatusSource(store, holdings, metrics, disk, upstreams, private, public, peers,
                          restricted=restricted)
    source.rates.start()
    return source
