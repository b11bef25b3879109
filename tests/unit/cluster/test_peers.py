"""Peer health: a busy peer stays in the ring, a gone one leaves it at once, a member that is
this node is found by its probe id. The peers are real HTTP servers checking the proof."""

from __future__ import annotations

import asyncio

from aiohttp import web
from pytest_aiohttp import AiohttpServer

from edgecache.cluster.client import PeerClient
from edgecache.cluster.peers import Peers
from edgecache.cluster.proof import HEADER, NODE_HEADER, PeerProof
from edgecache.cluster.settings import ClusterConfig
from edgecache.metrics import Metrics
from tests.support.waiting import await_until

SECRET = b"k" * 32


async def peer(aiohttp_server: AiohttpServer, node: str, delay: float = 0.0) -> str:
    """A node's `GET /v2/` as a peer sees it: the proof checked, its id in the answer,
    `delay` seconds late (a node busy serving a storm)."""
    proof = PeerProof(SECRET)

    async def base(request: web.Request) -> web.Response:
        proof.verify(request.method, request.raw_path, request.headers[HEADER])
        await asyncio.sleep(delay)  # the fault: a late answer
        return web.json_response({}, headers={NODE_HEADER: node})

    app = web.Application()
    app.router.add_get("/v2/", base)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}"


def peers_of(members: list[str], interval: float = 0.2,
             proof: PeerProof | None = None) -> tuple[Peers, PeerClient, PeerProof]:
    proof = proof or PeerProof(SECRET)
    client = PeerClient(proof, Metrics())
    config = ClusterConfig(peers=("http://127.0.0.9:1", *members), self_url="http://127.0.0.9:1",
                           secret_file="unused", health_interval=interval)
    return Peers(config, client, Metrics(), proof.node), client, proof


async def rounds(peers: Peers, count: int) -> None:
    """Until `count` more probe rounds have ended (bounded)."""
    for _ in range(count):
        seen = peers.checked_at
        await await_until(lambda s=seen: peers.checked_at > s, "a probe round", timeout=10)


async def test_a_peer_slow_to_answer_stays_in_the_ring(aiohttp_server: AiohttpServer) -> None:
    busy = await peer(aiohttp_server, "busy", delay=0.8)
    peers, client, _ = peers_of([busy], interval=0.3)
    peers.start()
    try:
        await rounds(peers, 3)
        assert peers.live() == ["http://127.0.0.9:1", busy]
    finally:
        await peers.close()
        await client.close()


async def test_a_failed_peer_is_skipped_at_once_and_rejoins_when_it_answers(
        aiohttp_server: AiohttpServer) -> None:
    other = await peer(aiohttp_server, "other")
    peers, client, _ = peers_of([other])
    peers.start()
    try:
        await await_until(lambda: other in peers.live(), "the peer joins")
        peers.failed(other, "connection refused")  # a request found it gone
        assert other not in peers.live()
        await await_until(lambda: other in peers.live(), "it rejoins on its next answer")
    finally:
        await peers.close()
        await client.close()


async def test_a_member_that_is_this_node_is_found_by_its_id(
        aiohttp_server: AiohttpServer) -> None:
    proof = PeerProof(SECRET)
    me = await peer(aiohttp_server, proof.node)  # this process, under another URL than self
    peers, client, _ = peers_of([me], proof=proof)
    peers.start()
    try:
        await await_until(lambda: peers.me == me, "this node found itself")
        assert peers.live() == [me]
        assert peers.members == ()
    finally:
        await peers.close()
        await client.close()
