"""A metrics scrape stays responsive while 64 clients stream blobs from the same process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.edgecache import EdgecacheProcess
from tests.support.images import Blob
from tests.support.registry import DockerRegistry

pytestmark = pytest.mark.integration

CLIENTS = 64
BLOB_SIZE = 8 << 20
READ = 256 * 1024


async def test_scrape_during_a_64_client_download_storm(tmp_path: Path,
                                                         docker_registry: DockerRegistry) -> None:
    blob = Blob(bytes(range(256)) * (BLOB_SIZE // 256))
    docker_registry.push_blob("library/storm", blob)
    edge = EdgecacheProcess(tmp_path / "edge", {"docker.io": docker_registry.url}, "docker.io",
                            metrics=True)
    try:
        url = f"{edge.url}/v2/storm/blobs/{blob.digest}"
        started = asyncio.Event()
        streaming = 0
        finished: list[float] = []

        async def client(session: aiohttp.ClientSession) -> int:
            nonlocal streaming
            got = 0
            async with session.get(url) as resp:
                assert resp.status == 200
                first = True
                async for chunk in resp.content.iter_chunked(READ):
                    got += len(chunk)
                    if first:
                        first = False
                        streaming += 1
                        if streaming == CLIENTS:
                            started.set()
                    await asyncio.sleep(0.02)  # slow readers keep the storm going for seconds
            finished.append(time.monotonic())
            return got

        connector = aiohttp.TCPConnector(limit=CLIENTS + 4)
        async with aiohttp.ClientSession(connector=connector) as session:
            storm = [asyncio.create_task(client(session)) for _ in range(CLIENTS)]
            await asyncio.wait_for(started.wait(), 60)
            assert edge.metrics_url is not None
            asked = time.monotonic()
            async with session.get(f"{edge.metrics_url}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            answered = time.monotonic()
            sizes = await asyncio.wait_for(asyncio.gather(*storm), 120)
        # the scrape came back while every client was still mid-stream
        assert min(finished) > answered
        assert sizes == [BLOB_SIZE] * CLIENTS
        families = {f.name: f for f in text_string_to_metric_families(text)}
        readers = families["edgecache_download_readers"].samples[0].value
        # the client that started the download streams from it, slowly: it was still reading
        assert 1 <= readers <= CLIENTS
        print(f"scrape during a {CLIENTS}-client storm answered in "
              f"{(answered - asked) * 1000:.1f} ms")
        gets = [r for r in docker_registry.requests()
                if r.method == "GET" and r.path.endswith(blob.digest)]
        assert len(gets) == 1
    finally:
        edge.close()
