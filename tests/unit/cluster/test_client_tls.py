"""HTTPS between peers: an https peer is verified with the site CA (`tls.ca_cert_file`) when
one is set, and a certificate no trusted CA issued is a peer that does not answer. The peer is
a real HTTPS server with a certificate for 127.0.0.1 from a CA made here (trustme)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from edgecache.cluster.client import PeerClient
from edgecache.cluster.proof import HEADER, NODE_HEADER, PeerProof
from edgecache.metrics import Metrics
from tests.support.registry import free_port

SECRET = b"s" * 32


@pytest.fixture
def site_ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    path = tmp_path / "site-ca.crt"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


@pytest.fixture
async def https_peer(site_ca: tuple[trustme.CA, Path]) -> AsyncIterator[str]:
    """A node's `GET /v2/` over HTTPS, its certificate issued by the site CA."""
    proof = PeerProof(SECRET)

    async def base(request: web.Request) -> web.Response:
        proof.verify(request.method, request.raw_path, request.headers[HEADER])
        return web.json_response({}, headers={NODE_HEADER: "peer-node"})

    app = web.Application()
    app.router.add_get("/v2/", base)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    site_ca[0].issue_cert("127.0.0.1").configure_cert(context)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_an_https_peer_is_verified_with_the_site_ca(
        https_peer: str, site_ca: tuple[trustme.CA, Path]) -> None:
    trusting = PeerClient(PeerProof(SECRET), Metrics(), str(site_ca[1]))
    system_only = PeerClient(PeerProof(SECRET), Metrics())
    try:
        assert await trusting.probe(https_peer, 5) == "peer-node"
        assert await system_only.probe(https_peer, 5) is None  # not verified: down
    finally:
        await trusting.close()
        await system_only.close()


async def test_another_ca_is_a_peer_that_does_not_answer(
        https_peer: str, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.crt"
    trustme.CA().cert_pem.write_to_path(str(other))
    client = PeerClient(PeerProof(SECRET), Metrics(), str(other))
    try:
        assert await client.probe(https_peer, 5) is None
    finally:
        await client.close()
