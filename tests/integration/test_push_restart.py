"""A chunked push that meets a restart of edgecache (a clean stop, a kill -9) continues where
the bytes on disk end; an expired session is gone after a restart, its file too.

Raw HTTP against a real edgecache process; the second process runs on the first one's storage.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.integration.test_crash import verify_clean
from tests.integration.test_push import (
    LOCAL,
    _auth,
    _patch,
    _received,
    _start_upload,
    start_local,
)
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.httpclient import fetch
from tests.support.registry import DockerRegistry

pytestmark = pytest.mark.integration

MiB = 1 << 20


def _stop(ec: EdgecacheProcess, how: str) -> None:
    if how == "kill -9":
        os.kill(ec.proc.pid, signal.SIGKILL)
        ec.proc.wait(timeout=30)
        assert ec.proc.returncode == -signal.SIGKILL
    else:
        ec.close()  # SIGTERM: the clean stop
        assert ec.proc.returncode == 0, ec.log()[-2000:]


def _part(ec: EdgecacheProcess) -> Path:
    [part] = (ec.storage / "tmp").iterdir()
    return part


@pytest.mark.parametrize("how", ["clean stop", "kill -9"])
def test_a_chunked_push_continues_after_a_restart(
        registry_b: DockerRegistry, edgecaches: StartEdgecache, tmp_path: Path,
        how: str) -> None:
    data = random.Random(21).randbytes(8 * MiB + 4321)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    first = start_local(edgecaches, registry_b, tmp_path, name="first")
    location = _start_upload(first)
    half = 4 * MiB
    for start in range(0, half, 2 * MiB):  # two chunks, each acknowledged
        assert _patch(first, location, data[start:start + 2 * MiB], start) == 202
    _stop(first, how)

    second = start_local(edgecaches, registry_b, tmp_path, storage=first.storage,
                         name="second")
    assert _received(second, location) == half == _part(second).stat().st_size
    assert fetch(f"{second.url}/v2/{LOCAL}/team/chunked/blobs/{digest}",
                 method="HEAD").status == 404  # nothing published before the PUT
    assert _patch(second, location, data[half:], half) == 202
    done = fetch(f"{second.url}{location}?digest={digest}", method="PUT", headers=_auth())
    assert done.status == 201, done.body[:300]
    got = fetch(f"{second.url}/v2/{LOCAL}/team/chunked/blobs/{digest}")
    assert got.status == 200 and got.body == data
    assert list((second.storage / "tmp").iterdir()) == []
    second.close()
    verify_clean(second)


def test_a_session_expired_across_a_restart_is_gone_with_its_file(
        registry_b: DockerRegistry, edgecaches: StartEdgecache, tmp_path: Path) -> None:
    first = start_local(edgecaches, registry_b, tmp_path, name="first")
    location = _start_upload(first)
    assert _patch(first, location, random.Random(22).randbytes(MiB), 0) == 202
    _stop(first, "clean stop")
    db = sqlite3.connect(first.storage / "index.db")  # the stop lasted past upload_timeout
    try:
        db.execute("UPDATE uploads SET touched_at=?", (time.time() - 11 * 60,))
        db.commit()
    finally:
        db.close()

    second = start_local(edgecaches, registry_b, tmp_path, storage=first.storage,
                         name="second")
    gone = fetch(second.url + location, headers=_auth())
    assert gone.status == 404
    assert b"BLOB_UPLOAD_UNKNOWN" in gone.body
    assert list((second.storage / "tmp").iterdir()) == []
