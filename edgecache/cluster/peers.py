"""The site as this node sees it: its members (static, or a DNS name re-resolved) and which of
them answer.

One task, owned here (`start`, `close` cancels and awaits it), probes every other member each
`health_interval` with a signed `GET /v2/` (so a node with another secret counts as down, and
says so in the log once). A member is live only after it has answered: a node that starts
does not send its first requests into peers it has not heard from. A data-path failure (refused,
reset) marks a peer down at once (`failed`), so the next request skips it instead of waiting
for its own timeout, and wakes the task, which lets it rejoin as soon as it answers a probe.
A probe that goes unanswered is weaker evidence: a node serving a storm on two busy cores may
answer late; marking it down would move its keys and send the same blob over the WAN twice
(measured: bench/cluster.py with a 0.5 s probe bound). So a probe waits `PROBE_TIMEOUT` and a
live peer is marked down after `PROBE_MISSES` unanswered probes in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from urllib.parse import urlsplit

from edgecache.metrics import Metrics

from .client import PeerClient
from .ring import order
from .settings import ClusterConfig

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 3.0
PROBE_MISSES = 2


class Peers:
    def __init__(self, config: ClusterConfig, client: PeerClient, metrics: Metrics,
                 node: str = "") -> None:
        self.me = config.self_url
        self._node = node  # this process's id (`PeerProof.node`): finds this node in the list
        self._config = config
        self._client = client
        self._metrics = metrics
        self._members: tuple[str, ...] = tuple(p for p in config.peers if p != self.me)
        self._up: dict[str, bool] = {}
        self._misses: dict[str, int] = {}  # unanswered probes in a row
        self.checked_at = 0.0  # monotonic time the last round of probes ended
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._resolved_at = -1e9

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cluster peers")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def members(self) -> tuple[str, ...]:
        """Every other node of the site, live or not."""
        return self._members

    def is_up(self, peer: str) -> bool:
        return peer == self.me or self._up.get(peer, False)

    def live(self) -> list[str]:
        """This node and every member that answered its last probe."""
        return [self.me, *(p for p in self._members if self._up.get(p, False))]

    def order(self, key: str) -> list[str]:
        """The live nodes by rendezvous weight for `key`: the owner first."""
        return order(self.live(), key)

    def failed(self, peer: str, why: str) -> None:
        """A request to `peer` found it unreachable: skip it from now until a probe answers."""
        if self._up.get(peer, False):
            log.warning("peer %s marked down: %s", peer, why)
            self._set(peer, False)
        self._wake.set()

    def _set(self, peer: str, up: bool) -> None:
        self._up[peer] = up
        self._metrics.peer_up.labels(peer).set(1 if up else 0)

    async def _run(self) -> None:
        interval = self._config.health_interval
        while True:
            try:
                if self._config.dns and (time.monotonic() - self._resolved_at
                                         >= self._config.dns_interval):
                    await self._resolve()
                await self._probe_all()
            except Exception:  # a background-loop guard: log, keep probing
                log.exception("peer health round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    async def _probe_all(self) -> None:
        members = self._members
        answers = await asyncio.gather(*(self._client.probe(p, PROBE_TIMEOUT) for p in members))
        for peer, node in zip(members, answers, strict=True):
            if node and node == self._node:  # this node under the URL its peers use
                self._found_self(peer)
                continue
            self._misses[peer] = 0 if node is not None else self._misses.get(peer, 0) + 1
            up = node is not None or (self._up.get(peer, False)
                                      and self._misses[peer] < PROBE_MISSES)
            if up != self._up.get(peer):
                (log.info if up or peer not in self._up else log.warning)(
                    "peer %s is %s", peer, "up" if up else "down (no answer to a signed GET "
                    "/v2/: stopped, unreachable, or another secret)")
                self._set(peer, up)
        self.checked_at = time.monotonic()

    def _found_self(self, url: str) -> None:
        if url != self.me:
            log.warning("cluster: this node answers as %s, not as %s (cluster.self): using %s",
                        url, self.me, url)
        self.me = url
        self._members = tuple(p for p in self._members if p != url)
        self._up.pop(url, None)

    async def _resolve(self) -> None:
        """The DNS name's A/AAAA records, each with the peers' port, become the members."""
        self._resolved_at = time.monotonic()
        try:
            urls = tuple(u for u in await resolve(self._config) if u != self.me)
        except OSError as exc:
            log.warning("cluster.dns %s: %s; keeping the last members", self._config.dns, exc)
            return
        if tuple(sorted(urls)) != tuple(sorted(self._members)):
            log.info("cluster.dns %s: members %s", self._config.dns, ", ".join(urls) or "none")
            for gone in set(self._members) - set(urls):
                self._up.pop(gone, None)
                with contextlib.suppress(KeyError):
                    self._metrics.peer_up.remove(gone)
            self._members = urls


async def resolve(config: ClusterConfig) -> tuple[str, ...]:
    """The other members: the static list, or the DNS name's records with the peers' port
    (this node's own port when `cluster.port` is not set). OSError when the name fails."""
    if not config.dns:
        return tuple(p for p in config.peers if p != config.self_url)
    port = config.port or urlsplit(config.self_url).port or 80
    infos = await asyncio.get_running_loop().getaddrinfo(config.dns, port,
                                                         type=socket.SOCK_STREAM)
    urls: list[str] = []
    for info in infos:
        address = str(info[4][0])
        shown = f"[{address}]" if ":" in address else address
        url = f"{config.scheme}://{shown}:{port}"
        if url != config.self_url and url not in urls:
            urls.append(url)
    return tuple(urls)
