"""This node's part of the site, built by the composition root: the proof (the site secret),
the peer client, the peer set with its health task, and the `Site` the service asks first.

`proof_for` runs when the app is built (a missing or short secret stops the start with one
line); `Cluster` is made inside the running loop and closed at shutdown after the fills that
use it, before the upstream clients.
"""

from __future__ import annotations

from edgecache.config import Config
from edgecache.metrics import Metrics

from .client import PeerClient
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
        self.client = PeerClient(proof, metrics)
        self.peers = Peers(config.cluster, self.client, metrics, proof.node)
        self.site = Site(self.peers, self.client, metrics, config.cluster.ask_timeout)

    def start(self) -> None:
        self.peers.start()

    async def close(self) -> None:
        await self.peers.close()
        await self.client.close()
