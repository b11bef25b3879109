"""`listen.peer`: peer requests on their own listener, client requests on the main one, and
each refused on the other. edgecache runs in-process (build_app) on two real sockets, as
server.py listens; peer requests carry a real proof."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from edgecache.app import build_app
from edgecache.cluster.proof import HEADER, NODE_HEADER, PeerProof
from edgecache.config import InvalidConfig, from_mapping
from edgecache.metrics import Metrics
from tests.support.registry import free_port
from tests.unit.cluster.test_settings import LISTEN, secret

SECRET = "p" * 32


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """(main URL, peer URL) of a node of a one-node site with `listen.peer`."""
    main, peer = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config = from_mapping({
        "listen": {"http": main, "https": None, "peer": peer},
        "storage": {"path": str(tmp_path / "storage")},
        "cluster": {"peers": [f"http://{peer}"], "secret_file": secret(tmp_path, SECRET)}})
    assert config.cluster.self_url == f"http://{peer}"  # derived from listen.peer
    runner = web.AppRunner(build_app(config, Metrics()))
    await runner.setup()
    try:
        for address in (main, peer):
            host, port = address.rsplit(":", 1)
            await web.TCPSite(runner, host, int(port)).start()
        yield f"http://{main}", f"http://{peer}"
    finally:
        await runner.cleanup()


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


def signed() -> dict[str, str]:
    return {HEADER: PeerProof(SECRET.encode()).sign("GET", "/v2/", "local")}


async def test_each_listener_answers_its_own_kind_only(node: tuple[str, str]) -> None:
    main, peer = node
    status, _, _ = await get(main + "/v2/")
    assert status == 200
    status, body, _ = await get(peer + "/v2/")  # a client on the peer listener
    assert status == 401 and "UNAUTHORIZED" in body and "peer listener" in body
    status, body, _ = await get(peer + "/healthz")
    assert status == 401
    status, _, headers = await get(peer + "/v2/", signed())
    assert status == 200 and headers.get(NODE_HEADER)
    status, body, _ = await get(main + "/v2/", signed())  # a peer on the main listener
    assert status == 401 and "peers use listen.peer" in body


def test_listen_peer_problems_are_one_line_each(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig) as caught:
        from_mapping({"listen": {**LISTEN, "peer": "127.0.0.3:5001"}})
    assert list(caught.value.problems) == [
        "listen.peer: set only in cluster mode (cluster.peers or cluster.dns)"]
    with pytest.raises(InvalidConfig) as caught:
        from_mapping({"listen": {**LISTEN, "peer": "0.0.0.0:5000"},
                      "cluster": {"peers": ["http://127.0.0.2:5000"],
                                  "secret_file": secret(tmp_path)}})
    assert list(caught.value.problems) == [
        "listen.peer: 0.0.0.0:5000 takes the same port as listen.http"]
