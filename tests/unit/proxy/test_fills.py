"""Blob fills through edgecache's HTTP interface: one download, streamed, verified, resumed."""

from __future__ import annotations

import asyncio
import logging
import re

import aiohttp
import pytest

from edgecache.proxy import download
from edgecache.web.responses import parse_range
from tests.fakes.registry import BlobFault, FakeRegistry
from tests.support.images import make_layer
from tests.support.waiting import await_until
from tests.unit.conftest import UPSTREAM, Edge

REPO = "team/app"
READ_TIMEOUT = 10.0


def blob_url(digest: str, repo: str = REPO) -> str:
    return f"/v2/{repo}/blobs/{digest}"


async def read_until_broken(resp: aiohttp.ClientResponse) -> tuple[bytes, BaseException | None]:
    """Everything the client received, and the error that ended the body early (if any)."""
    received = bytearray()
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            async for data in resp.content.iter_any():
                received += data
    except aiohttp.ClientError as exc:
        return bytes(received), exc
    return bytes(received), None


def upstream_gets(fake: FakeRegistry, digest: str, repo: str = REPO) -> int:
    return len(fake.api_requests("GET", blob_url(digest, repo)))


# ---- truncated upstream bodies ------------------------------------------------------------------


async def test_truncated_blob_resumes_with_range(fake: FakeRegistry, edge: Edge) -> None:
    blob = make_layer(1 << 20, seed=11)
    digest = fake.add_blob(blob)
    cut = 300_000
    fake.fault(digest, BlobFault(truncate_at=cut, truncate_times=1))

    async with edge.client.get(blob_url(digest)) as resp:
        assert resp.status == 200
        body = await resp.read()

    assert body == blob.data
    gets = fake.api_requests("GET", blob_url(digest))
    assert len(gets) == 2
    assert "Range" not in gets[0].headers
    match = re.fullmatch(r"bytes=(\d+)-", gets[1].headers.get("Range", ""))
    assert match is not None, gets[1].headers
    assert 0 < int(match.group(1)) <= cut
    assert gets[1].status == 206
    assert edge.sample("edgecache_resumed_downloads_total", upstream=UPSTREAM) == 1
    assert edge.blob_path(digest).read_bytes() == blob.data
    assert edge.tmp_files() == []


async def test_resume_against_upstream_that_ignores_range(fake: FakeRegistry, edge: Edge) -> None:
    """An upstream answering 200 to a Range request: the download starts over, bytes stay right."""
    blob = make_layer(600_000, seed=12)
    digest = fake.add_blob(blob)
    fake.fault(digest, BlobFault(truncate_at=250_000, truncate_times=1))
    fake.ignore_range()

    async with edge.client.get(blob_url(digest)) as resp:
        body = await resp.read()

    assert body == blob.data
    gets = fake.api_requests("GET", blob_url(digest))
    assert len(gets) == 2
    assert "Range" in gets[1].headers
    assert gets[1].status == 200
    assert edge.blob_path(digest).read_bytes() == blob.data


async def test_truncated_every_time_breaks_client_and_stores_nothing(
        fake: FakeRegistry, edge: Edge) -> None:
    blob = make_layer(1 << 20, seed=13)
    digest = fake.add_blob(blob)
    fake.fault(digest, BlobFault(truncate_at=100_000))

    async with edge.client.get(blob_url(digest)) as resp:
        assert resp.status == 200
        assert resp.content_length == len(blob.data)
        received, error = await read_until_broken(resp)

    assert isinstance(error, aiohttp.ClientPayloadError)
    assert len(received) < len(blob.data)
    assert blob.data.startswith(received)
    assert upstream_gets(fake, digest) == download.RESUME_ATTEMPTS + 1
    assert not edge.blob_path(digest).exists()
    assert edge.blob_files() == []
    assert edge.tmp_files() == []


# ---- wrong bytes --------------------------------------------------------------------------------


async def test_wrong_bytes_break_the_stream_and_are_not_stored(
        fake: FakeRegistry, edge: Edge) -> None:
    blob = make_layer(400_000, seed=14)
    digest = fake.add_blob(blob)
    fake.fault(digest, BlobFault(wrong_bytes=True))
    assert edge.sample("edgecache_digest_mismatches_total", upstream=UPSTREAM) == 0

    async with edge.client.get(blob_url(digest)) as resp:
        assert resp.status == 200
        received, error = await read_until_broken(resp)

    assert isinstance(error, aiohttp.ClientPayloadError)
    assert len(received) < len(blob.data)  # never a complete (wrong) body
    assert edge.sample("edgecache_digest_mismatches_total", upstream=UPSTREAM) == 1
    assert edge.blob_files() == []
    assert edge.tmp_files() == []

    # Nothing was cached: once the upstream behaves, the next request downloads afresh.
    fake.clear_fault(digest)
    async with edge.client.get(blob_url(digest)) as resp:
        assert await resp.read() == blob.data
    assert upstream_gets(fake, digest) == 2
    assert edge.blob_path(digest).read_bytes() == blob.data


# ---- streaming ----------------------------------------------------------------------------------


async def test_slow_drip_streams_before_upstream_finishes(fake: FakeRegistry, edge: Edge) -> None:
    blob = make_layer(512 * 1024, seed=15)
    digest = fake.add_blob(blob)
    fault = fake.fault(digest, BlobFault(chunk_size=16 * 1024, delay=0.002, gate_after=64 * 1024))

    async with edge.client.get(blob_url(digest)) as resp:
        assert resp.status == 200
        async with asyncio.timeout(READ_TIMEOUT):
            first = await resp.content.readany()
        # The client holds bytes while the upstream is still (held) mid-body.
        assert first
        assert fake.completed.get(digest, 0) == 0
        assert not edge.blob_path(digest).exists()
        fault.gate.set()
        rest = await resp.read()

    assert first + rest == blob.data
    assert fake.completed[digest] == 1


# ---- concurrency --------------------------------------------------------------------------------


async def test_concurrent_gets_share_one_upstream_download(fake: FakeRegistry, edge: Edge) -> None:
    blob = make_layer(3 * 1024 * 1024, seed=16)
    digest = fake.add_blob(blob)
    fault = fake.fault(digest, BlobFault(gate_after=1024 * 1024))

    responses = await asyncio.gather(*(edge.client.get(blob_url(digest)) for _ in range(20)))
    try:
        # All 20 have their headers while the upstream body is held: all joined the one fill.
        assert [r.status for r in responses] == [200] * 20
        assert not edge.blob_path(digest).exists()
        fault.gate.set()
        bodies = await asyncio.gather(*(r.read() for r in responses))
    finally:
        for r in responses:
            r.release()

    assert all(body == blob.data for body in bodies)
    assert upstream_gets(fake, digest) == 1
    assert fake.completed[digest] == 1
    assert edge.blob_path(digest).read_bytes() == blob.data


async def test_concurrent_ranges_on_a_cold_blob(fake: FakeRegistry, edge: Edge) -> None:
    blob = make_layer(2 * 1024 * 1024, seed=17)
    size = len(blob.data)
    digest = fake.add_blob(blob)
    fault = fake.fault(digest, BlobFault(gate_after=512 * 1024))
    wanted = {
        "bytes=100-199": (100, 200),
        "bytes=-10": (size - 10, size),
        "bytes=1048576-": (1048576, size),
        "bytes=0-0": (0, 1),
    }

    responses = await asyncio.gather(
        *(edge.client.get(blob_url(digest), headers={"Range": spec}) for spec in wanted))
    try:
        # Every range request has its answer's headers while the upstream body is held.
        assert not edge.blob_path(digest).exists()
        fault.gate.set()
        results = [(r.status, r.headers.get("Content-Range"), await r.read()) for r in responses]
    finally:
        for r in responses:
            r.release()

    for (spec, (start, end)), (status, content_range, body) in zip(wanted.items(), results,
                                                                     strict=True):
        assert status == 206, spec
        assert content_range == f"bytes {start}-{end - 1}/{size}", spec
        assert body == blob.data[start:end], spec
    assert upstream_gets(fake, digest) == 1


async def test_every_reader_of_a_download_with_wrong_bytes_is_cut_short(
        fake: FakeRegistry, edge: Edge) -> None:
    """20 clients follow one download (on plain HTTP: sendfile from its file) and get its first
    MiB while the upstream holds the rest; the digest then fails: each is cut before the end,
    having received only bytes in their order."""
    blob = make_layer(3 * 1024 * 1024, seed=19)
    digest = fake.add_blob(blob)
    fault = fake.fault(digest, BlobFault(wrong_bytes=True, gate_after=1024 * 1024))

    responses = await asyncio.gather(*(edge.client.get(blob_url(digest)) for _ in range(20)))
    try:
        assert [r.status for r in responses] == [200] * 20
        async with asyncio.timeout(READ_TIMEOUT):  # bytes flow while the upstream is held
            firsts = [await r.content.readany() for r in responses]
        assert all(firsts)
        fault.gate.set()
        results = await asyncio.gather(*(read_until_broken(r) for r in responses))
    finally:
        for r in responses:
            r.release()

    for first, (rest, error) in zip(firsts, results, strict=True):
        received = first + rest
        assert isinstance(error, aiohttp.ClientPayloadError)
        assert len(received) < len(blob.data)
        assert received[64:] == blob.data[64:len(received)]  # the fake flips the first 64
    assert upstream_gets(fake, digest) == 1
    assert edge.blob_files() == []
    assert edge.tmp_files() == []


async def test_readers_caught_up_with_a_dripping_download_get_every_byte(
        fake: FakeRegistry, edge: Edge) -> None:
    """A slow upstream (16 KiB pieces): readers catch up and wait between wake-ups, which come
    in batches, not per piece; whole bodies and ranges still end right."""
    blob = make_layer(700_000, seed=20)
    size = len(blob.data)
    digest = fake.add_blob(blob)
    fake.fault(digest, BlobFault(chunk_size=16 * 1024, delay=0.001))
    ranges = [None, None, None, "bytes=100000-", "bytes=5-654321", "bytes=-1"]

    async def get(spec: str | None) -> tuple[int, bytes]:
        headers = {"Range": spec} if spec else {}
        async with edge.client.get(blob_url(digest), headers=headers) as resp:
            async with asyncio.timeout(READ_TIMEOUT):
                return resp.status, await resp.read()

    results = await asyncio.gather(*(get(spec) for spec in ranges * 2))
    for spec, (status, body) in zip(ranges * 2, results, strict=True):
        if spec is None:
            assert (status, body) == (200, blob.data)
        else:
            start, end = parse_range(spec, size) or (0, size)
            assert (status, body) == (206, blob.data[start:end]), spec
    assert upstream_gets(fake, digest) == 1
    assert edge.blob_path(digest).read_bytes() == blob.data


async def test_access_log_counts_the_bytes_sent_to_readers_of_a_download(
        fake: FakeRegistry, edge: Edge, caplog: pytest.LogCaptureFixture) -> None:
    """Readers joined to a download get its bytes with sendfile, past aiohttp's writer: the
    access log's byte count must still include them."""
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    blob = make_layer(2 * 1024 * 1024, seed=22)
    digest = fake.add_blob(blob)
    fault = fake.fault(digest, BlobFault(gate_after=512 * 1024))

    responses = await asyncio.gather(*(edge.client.get(blob_url(digest)) for _ in range(3)))
    try:
        fault.gate.set()
        bodies = await asyncio.gather(*(r.read() for r in responses))
    finally:
        for r in responses:
            r.release()
    assert bodies == [blob.data] * 3

    def access_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"
                and f"GET {blob_url(digest)} " in r.getMessage()
                and '"edgecache/' not in r.getMessage()]  # not the fake upstream's line

    await await_until(lambda: len(access_lines()) == 3,  # written after the responses end
                      "the three access lines", timeout=READ_TIMEOUT)
    lines = access_lines()
    for line in lines:
        match = re.search(r'" 200 (\d+) ', line)
        assert match is not None, line
        assert int(match.group(1)) >= len(blob.data), line


async def test_client_disconnect_does_not_stop_the_download(
        fake: FakeRegistry, edge: Edge) -> None:
    blob = make_layer(1024 * 1024, seed=18)
    digest = fake.add_blob(blob)
    fault = fake.fault(digest, BlobFault(gate_after=128 * 1024))

    resp = await edge.client.get(blob_url(digest))
    assert resp.status == 200
    async with asyncio.timeout(READ_TIMEOUT):
        assert await resp.content.readany()
    resp.close()  # the client hangs up mid-stream, while the upstream is still sending
    fault.gate.set()

    assert await edge.wait_published(digest)
    assert edge.blob_path(digest).read_bytes() == blob.data
    assert edge.tmp_files() == []
    async with edge.client.get(blob_url(digest)) as again:
        assert await again.read() == blob.data
    assert upstream_gets(fake, digest) == 1
