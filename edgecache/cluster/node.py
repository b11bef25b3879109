"""This node's part of the site, built by the composition root: the proof (the site secret),
the peer client, the peer set with its health task, the `Site` the service asks first, and the
local registry's copies from the site (`localcopy.py`).

`proof_for` runs when the app is built (a missing or short secret stops the start with one
line); `Cluster` is made inside the running loop and closed at shutdown after the fills that
use it, before the upstream clients.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from edgecache.config import Config
from edgecache.metrics import Metrics
from edgecache.proxy.fill import Fills
from edgecache.storage.store import Store
from edgecache.web.statusdata import Peer

from .client import PeerClient
from .localcopy import LocalCopies
from .peers import Peers
from .proof import PeerProof
from .site import Site


def proof_for(config: Config) -> PeerProof | None:
    """The site secret's proof when cluster mode is on (ConfigError if it cannot be read)."""
    if not config.cluster.enabled:
        return None
    return PeerProof(config.cluster.secret())


class Cluster:
    def __init__(self, config: Config, proof: PeerProof, metrics: Metrics) -> None:
        self.client = PeerClient(proof, metrics, config.tls.ca_cert_file)
        self.peers = Peers(config.cluster, self.client, metrics, proof.node)
        self.site = Site(self.peers, self.client, metrics, config.cluster.ask_timeout)
        self._copies: LocalCopies | None = None

    def copies(self, store: Store, fills: Fills, registry: str) -> LocalCopies:
        """Copies of the site's local (pushed) content this node does not hold; closed here."""
        self._copies = LocalCopies(self.site, store, fills, registry)
        return self._copies

    def status_peers(self) -> list[Peer]:
        """The members for the status page: this node first, each with its last answer."""
        now = time.time()
        return [Peer(urlsplit(s.url).netloc, s.url, s.up, "this node" if s.is_self else (
                    "never answered" if s.last_seen is None
                    else f"last answered {max(0.0, now - s.last_seen):.0f} s ago"),
                     s.last_seen, s.is_self) for s in self.peers.states()]

    def start(self) -> None:
        self.peers.start()

    async def close(self) -> None:
        if self._copies is not None:
            await self._copies.close()
        await self.peers.close()
        await self.client.close()
