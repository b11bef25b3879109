"""`edgecache peers`: the ring as this node sees it, from its config and a live probe.

It runs beside the server, not through it: the same members (the static list, or the DNS
name resolved now), each probed with a signed `GET /v2/` as the server's health task does, so
it answers also when the local server is down, and shows exactly what a wrong secret or a
firewall does to this node's view. With `--key` it prints that key's rendezvous order (the
owner first), as this node would ask them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from edgecache.config import Config
from edgecache.errors import EdgecacheError
from edgecache.metrics import Metrics

if TYPE_CHECKING:  # the peer client is imported when `peers` runs, not for every command line
    from .client import PeerClient

PROBE_TIMEOUT = 2.0


def peers_parser(sub: Any) -> None:
    peers = sub.add_parser("peers", help="show the cluster ring as this node sees it")
    peers.add_argument("--config")
    peers.add_argument("--key", help="a digest, or upstream/repository:tag, to show its owner "
                                     "order")
    peers.add_argument("--json", action="store_true", help="print JSON")


def peers_command(config: Config, args: argparse.Namespace) -> int:
    if not config.cluster.enabled:
        print("edgecache: cluster mode is off (set cluster.peers or cluster.dns)",
              file=sys.stderr)
        return 1
    try:
        view = asyncio.run(_view(config, args.key))
    except (EdgecacheError, OSError) as exc:
        print(f"edgecache: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    print(f"self  {view['self']}")
    for peer in view["peers"]:
        probe = f"{peer['ms']:.1f} ms" if peer["ms"] is not None else "-"
        print(f"{peer['state']:<5} {peer['url']}  {probe}")
    live = sum(1 for p in view["peers"] if p["state"] in ("up", "self"))
    print(f"live: {live} of {len(view['peers'])}")
    if "order" in view:
        print(f"order for {args.key}: {' > '.join(view['order'])}")
    return 0


async def _view(config: Config, key: str | None) -> dict[str, Any]:
    from .client import PeerClient
    from .peers import resolve
    from .proof import PeerProof
    from .ring import order

    cluster = config.cluster
    client = PeerClient(PeerProof(cluster.secret()), Metrics())
    try:
        members = await resolve(cluster)
        times = await asyncio.gather(*(_probe(client, peer) for peer in members))
    finally:
        await client.close()
    peers: list[dict[str, Any]] = [{"url": cluster.self_url, "state": "self", "ms": None}]
    peers += [{"url": peer, "state": "up" if ms is not None else "down", "ms": ms}
              for peer, ms in zip(members, times, strict=True)]
    view: dict[str, Any] = {"self": cluster.self_url, "peers": peers}
    if key:
        live = [p["url"] for p in peers if p["state"] in ("up", "self")]
        view["order"] = order(live, key if key.count(":") == 1 and "/" not in key
                              else _tag(key))
    return view


def _tag(reference: str) -> str:
    """`upstream/repository:tag` as the ring keys a tag."""
    from .ring import tag_key

    name, _, tag = reference.rpartition(":")
    upstream, _, repository = name.partition("/")
    return tag_key(upstream, repository, tag)


async def _probe(client: PeerClient, peer: str) -> float | None:
    started = time.monotonic()
    if await client.probe(peer, PROBE_TIMEOUT) is not None:
        return (time.monotonic() - started) * 1000
    return None
