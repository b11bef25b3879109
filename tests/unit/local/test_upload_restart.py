"""Upload sessions across a restart of the app on the same storage: the status after it, the
rest of the chunks, the digest checked over bytes two processes wrote; expired and orphaned
partial files swept at start; the free-space check after a restart; a short write."""

from __future__ import annotations

import asyncio
import io
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import ClientResponse

from tests.support.images import sha256
from tests.support.waiting import await_until
from tests.unit.conftest import Edge, MakeEdge
from tests.unit.local.conftest import LOCAL, Pusher, basic


async def _local(make_edge: MakeEdge, htpasswd: Path, storage: Path,
                 min_free: str = "5%") -> Pusher:
    edge = await make_edge(top={"auth": {"htpasswd_file": str(htpasswd)},
                                "local": {"registry": LOCAL},
                                "storage": {"path": str(storage), "min_free": min_free}})
    return Pusher(edge, basic())


async def _half_pushed(pusher: Pusher, data: bytes) -> str:
    """POST, then the first half in two PATCHes; the session's location."""
    resp = await pusher.request("POST", pusher.url("blobs/uploads/"))
    location = resp.headers["Location"]
    half, quarter = len(data) // 2, len(data) // 4
    for start, end in ((0, quarter), (quarter, half)):
        patch = await pusher.request("PATCH", location, data=io.BytesIO(data[start:end]),
                                     headers={"Content-Range": f"{start}-{end - 1}"})
        assert patch.status == 202 and patch.headers["Range"] == f"0-{end - 1}"
    return location


async def _finish(pusher: Pusher, location: str, data: bytes, start: int) -> ClientResponse:
    """The final PUT, with the rest of the blob from `start`."""
    return await pusher.request("PUT", f"{location}?digest={sha256(data)}",
                                data=io.BytesIO(data[start:]),
                                headers={"Content-Range": f"{start}-{len(data) - 1}"})


async def _stop(edge: Edge) -> None:
    await edge.client.close()  # the app's cleanup: what a clean stop runs


async def test_a_session_survives_a_clean_restart_and_finishes(
        make_edge: MakeEdge, htpasswd: Path, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    data = random.Random(11).randbytes(3 << 20 | 12345)  # more than one re-read piece
    first = await _local(make_edge, htpasswd, storage)
    location = await _half_pushed(first, data)
    await _stop(first.edge)

    second = await _local(make_edge, htpasswd, storage)
    half = len(data) // 2
    status = await second.request("GET", location)
    assert status.status == 204 and status.headers["Range"] == f"0-{half - 1}"
    done = await _finish(second, location, data, half)
    assert done.status == 201, await done.text()
    got = await second.edge.client.get(second.url(f"blobs/{sha256(data)}"))
    assert got.status == 200 and await got.read() == data
    assert second.edge.tmp_files() == []
    assert (await second.request("GET", location)).status == 404


async def test_after_a_restart_the_digest_still_covers_every_byte(
        make_edge: MakeEdge, htpasswd: Path, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    data = random.Random(12).randbytes(1 << 20)
    first = await _local(make_edge, htpasswd, storage)
    location = await _half_pushed(first, data)
    await _stop(first.edge)
    part = next((storage / "tmp").iterdir())
    with part.open("r+b") as handle:  # one byte of the first half, changed while stopped
        handle.write(b"\0" if data[0] else b"\1")

    second = await _local(make_edge, htpasswd, storage)
    half = len(data) // 2
    done = await _finish(second, location, data, half)
    assert done.status == 400
    assert (await done.json())["errors"][0]["code"] == "DIGEST_INVALID"
    assert second.edge.blob_files() == [] and second.edge.tmp_files() == []


def _age(storage: Path, seconds: float) -> None:
    """Move every session's last activity `seconds` into the past (time passing while the
    service was stopped)."""
    db = sqlite3.connect(storage / "index.db")
    try:
        db.execute("UPDATE uploads SET touched_at=?", (time.time() - seconds,))
        db.commit()
    finally:
        db.close()


async def test_expired_and_orphaned_partial_files_are_swept_at_start(
        make_edge: MakeEdge, htpasswd: Path, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    data = random.Random(13).randbytes(64 << 10)
    first = await _local(make_edge, htpasswd, storage)
    location = await _half_pushed(first, data)
    await _stop(first.edge)
    _age(storage, 2 * 3600)  # upload_timeout is 1h by default
    (storage / "tmp" / f"upload-{'f' * 32}.part").write_bytes(b"no row names me")

    second = await _local(make_edge, htpasswd, storage)
    gone = await second.request("GET", location)
    assert gone.status == 404
    assert (await gone.json())["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    assert second.edge.tmp_files() == []


async def test_sessions_left_while_the_local_registry_is_off_are_swept(
        make_edge: MakeEdge, htpasswd: Path, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    first = await _local(make_edge, htpasswd, storage)
    await _half_pushed(first, b"y" * 4000)
    await _stop(first.edge)
    plain = await make_edge(top={"storage": {"path": str(storage)}})
    assert plain.tmp_files() == []


async def test_the_free_space_check_holds_for_a_resumed_session(
        make_edge: MakeEdge, htpasswd: Path, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    data = random.Random(14).randbytes(64 << 10)
    first = await _local(make_edge, htpasswd, storage)
    location = await _half_pushed(first, data)
    await _stop(first.edge)

    full = await _local(make_edge, htpasswd, storage, min_free="100%")
    half = len(data) // 2
    refused = await full.request("PATCH", location, data=io.BytesIO(data[half:]),
                                 headers={"Content-Range": f"{half}-{len(data) - 1}"})
    assert refused.status == 413
    assert (await refused.json())["errors"][0]["code"] == "SIZE_INVALID"
    status = await full.request("GET", location)  # refused before a byte: the session stays
    assert status.status == 204 and status.headers["Range"] == f"0-{half - 1}"


SHORT_WRITE = """
import resource, sys
from pathlib import Path
from edgecache.storage.blobs import BlobStore
from edgecache.storage.layout import Layout
store = BlobStore(Layout(Path(sys.argv[1])))
store.prepare()
writer = store.upload()
resource.setrlimit(resource.RLIMIT_FSIZE, (700, 700))  # Python ignores SIGXFSZ: EFBIG
try:
    writer.write(b"x" * 1000)
except OSError:
    pass
print(writer.size)
"""


def test_a_short_write_then_an_error_leaves_size_and_file_in_step(tmp_path: Path) -> None:
    """A write cut short (ENOSPC, here the file size limit) counts and hashes what reached the
    file: a session continuing from its status must not publish bytes the hash never saw."""
    done = subprocess.run([sys.executable, "-c", SHORT_WRITE, str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    [part] = (tmp_path / "tmp").iterdir()
    assert int(done.stdout) == part.stat().st_size == 700


async def test_a_delete_while_a_chunk_arrives_ends_it_without_writing(pusher: Pusher) -> None:
    """The PATCH's writer is abandoned under it: the rest of its body is written nowhere (the
    descriptor number may be another file's by then) and the client is told the session ended."""
    resp = await pusher.request("POST", pusher.url("blobs/uploads/"))
    location = resp.headers["Location"]
    deleted = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        await deleted.wait()
        yield b"b" * 1000

    patch = asyncio.create_task(pusher.request("PATCH", location, data=body()))

    def first_piece_in() -> bool:
        files = pusher.edge.tmp_files()
        return bool(files) and files[0].stat().st_size == 1000

    await await_until(first_piece_in, "the first piece to be written")
    assert (await pusher.request("DELETE", location)).status == 204
    deleted.set()
    answer = await asyncio.wait_for(patch, 30)
    assert answer.status == 404
    assert pusher.edge.tmp_files() == []
