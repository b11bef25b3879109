"""The status page's peers in cluster mode, read from its JSON twin: every member's URL, up or
down, when it last answered, and which one is this node. edgecache runs in-process (build_app);
the live peer is a real HTTP server checking the proof, the dead one a port nobody listens on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytest_aiohttp import AiohttpServer

from edgecache.app import STATUS
from tests.support.registry import free_port
from tests.support.waiting import await_until
from tests.unit.cluster.test_peers import SECRET, peer
from tests.unit.conftest import Edge, MakeEdge

ME = "http://127.0.0.9:1"


async def peers_doc(edge: Edge) -> Any:
    async with edge.client.get("/?format=json") as resp:
        assert resp.status == 200
        return json.loads(await resp.read())["peers"]


async def test_the_json_twin_lists_each_peer_its_state_and_this_node(
        make_edge: MakeEdge, aiohttp_server: AiohttpServer, tmp_path: Path) -> None:
    live = await peer(aiohttp_server, "other")
    dead = f"http://127.0.0.1:{free_port()}"
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    edge = await make_edge(top={"cluster": {"peers": [ME, live, dead], "self": ME,
                                            "secret_file": str(secret),
                                            "health_interval": "0.2s"}})
    app = edge.client.app
    assert app is not None
    peers = app[STATUS].peers
    assert peers is not None
    await await_until(lambda: any(p.address == live and p.up for p in peers()),
                      "the live peer answers a probe", timeout=10)

    doc = await peers_doc(edge)
    assert doc["cluster"] is True
    nodes = {n["address"]: n for n in doc["nodes"]}
    assert [n["address"] for n in doc["nodes"]] == [ME, *sorted([live, dead])]
    assert nodes[ME]["self"] is True and nodes[ME]["up"] is True
    assert nodes[ME]["name"] == "127.0.0.9:1" and nodes[ME]["detail"] == "this node"
    assert nodes[live]["self"] is False and isinstance(nodes[live]["last_seen"], float)
    assert nodes[live]["detail"].startswith("last answered ")
    assert nodes[dead] == {"name": dead.removeprefix("http://"), "address": dead, "up": False,
                           "detail": "never answered", "last_seen": None, "self": False}
    async with edge.client.get("/") as resp:  # the HTML page draws the same rows
        html = await resp.text()
    assert "cluster mode off" not in html and "never answered" in html and live in html
