"""Crash safety with real processes: kill -9 mid-download, a crash between a blob's rename and
its index row, a file lost underneath, a corrupted file; and `edgecache verify` on the result.

A `GatedRelay` sits between edgecache and its docker-registry upstream and holds each response
after a number of bytes, so a download is reliably in the middle when the test acts (loopback
is too fast to catch one otherwise). Processes are stopped by PID.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.corpus import HUB, REGISTRY_B, Corpus, MiB, Seeded
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.htpasswd import write_htpasswd
from tests.support.httpclient import fetch
from tests.support.images import Blob, Image, make_image
from tests.support.registry import DockerRegistry
from tests.support.skopeo import Skopeo, verify_oci_layout
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GATE_TIMEOUT = 60.0  # a gate a test forgot to open must not hang the suite


class GatedRelay:
    """A TCP relay on 127.0.0.1 to a loopback upstream. Each connection's responses flow
    freely for `after` bytes, then wait until `release()` (or `close()`)."""

    def __init__(self, target_port: int, after: int) -> None:
        self.after = after
        self._target = ("127.0.0.1", target_port)
        self._gate = threading.Event()
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def release(self) -> None:
        self._gate.set()

    def close(self) -> None:
        self._closing.set()
        self._gate.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self._threads:
            thread.join(timeout=10)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(self._target, timeout=10)
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst, gated in ((client, upstream, False), (upstream, client, True)):
                thread = threading.Thread(target=self._pump, args=(src, dst, gated),
                                          daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, gated: bool) -> None:
        sent = 0
        try:
            while not self._closing.is_set():
                data = src.recv(64 * 1024)
                if not data:
                    break
                if gated and not self._gate.is_set() and sent + len(data) > self.after:
                    head = max(0, self.after - sent)
                    dst.sendall(data[:head])
                    sent += head
                    data = data[head:]
                    self._gate.wait(GATE_TIMEOUT)
                    if self._closing.is_set():
                        return
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):  # one side ended: end the other too
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def edgecache_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgecache", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def verify_clean(ec: EdgecacheProcess) -> str:
    """`edgecache verify` on a stopped edgecache's storage: exit 0, nothing wrong."""
    assert ec.proc.poll() is not None, "verify runs on a stopped cache"
    result = edgecache_cli("verify", "--config", str(ec.config_path))
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.endswith("0 corrupt, 0 missing, 0 not indexed"), result.stdout
    return result.stdout


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def blob_file(storage: Path, digest: str) -> Path:
    hexpart = digest.removeprefix("sha256:")
    return storage / "blobs" / "sha256" / hexpart[:2] / hexpart


def part_files(storage: Path) -> list[Path]:
    tmp = storage / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


# ---- kill -9 in the middle of a cold pull -------------------------------------------------------


@pytest.fixture(scope="module")
def big_image() -> Seeded:
    """One 64 MiB layer (random bytes in a tar: incompressible)."""
    import io
    import tarfile

    payload = random.Random(601).randbytes(64 * MiB)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("big.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return Seeded("library/big", "1", make_image([Blob(buf.getvalue())]))


def test_kill_9_during_a_cold_pull_publishes_nothing_partial_and_the_retry_completes(
        docker_registry: DockerRegistry, big_image: Seeded, edgecaches: StartEdgecache,
        skopeo: Skopeo, tmp_path: Path) -> None:
    image = big_image.top
    assert isinstance(image, Image)
    layer = next(d for d, data in big_image.blobs.items() if len(data) > 60 * MiB)
    total = len(big_image.blobs[layer])
    docker_registry.push_image(big_image.repository, big_image.tag, image)
    relay = GatedRelay(docker_registry.port, after=16 * MiB)
    storage = tmp_path / "storage"
    try:
        first = edgecaches("first", {HUB: relay.url}, default_upstream=HUB, storage=storage)
        conn = http.client.HTTPConnection("127.0.0.1", first.port, timeout=30)
        conn.request("GET", f"/v2/{big_image.repository}/blobs/{layer}")
        resp = conn.getresponse()
        assert resp.status == 200
        received = resp.read(1 * MiB)  # the client is mid-stream
        assert len(received) == 1 * MiB
        wait_until(lambda: any(p.stat().st_size >= 8 * MiB for p in part_files(storage)),
                   "the download reached 8 MiB in tmp/")

        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
        assert first.proc.returncode == -signal.SIGKILL
        with contextlib.suppress(http.client.HTTPException, OSError):
            received += resp.read()
        conn.close()
    finally:
        relay.close()
    assert len(received) < total  # the client was cut off, not served a whole blob

    # what the crash left: a half download in tmp/, nothing under the blob's name
    leftovers = part_files(storage)
    assert leftovers and all(p.stat().st_size < total for p in leftovers)
    assert not blob_file(storage, layer).exists()
    assert not (storage / "clean-shutdown").exists()

    second = edgecaches("second", {HUB: docker_registry.url}, default_upstream=HUB,
                        storage=storage)
    assert part_files(storage) == []  # swept at start
    assert not blob_file(storage, layer).exists()

    out = tmp_path / "oci"
    skopeo.copy(f"docker://{second.address}/{big_image.repository}:{big_image.tag}",
                f"oci:{out}", tls_verify=False)
    verify_oci_layout(out, big_image)
    assert file_sha256(blob_file(storage, layer)) == layer
    second.close()
    verify_clean(second)


# ---- a crash between rename and index write; a lost file; a corrupted file ----------------------


def pull_and_check(skopeo: Skopeo, ec: EdgecacheProcess, seeded: Seeded, out: Path) -> None:
    skopeo.copy(f"docker://{ec.address}/{seeded.repository}:{seeded.tag}", f"oci:{out}",
                tls_verify=False)
    verify_oci_layout(out, seeded)


def blob_gets(hub: DockerRegistry, mark: int, digest: str) -> int:
    return len([r for r in hub.pulls_since(mark) if r.method == "GET" and r.path.endswith(digest)
                and r.status == 200])


def test_after_a_crash_unindexed_files_are_adopted_and_lost_files_forgotten(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, skopeo: Skopeo,
        tmp_path: Path) -> None:
    seeded = corpus.alpha
    manifest = seeded.top.digest
    adopted, lost, untouched = sorted(seeded.blobs, key=lambda d: len(seeded.blobs[d]))[-3:]
    storage = tmp_path / "storage"
    first = edgecaches("first", {HUB: hub.url}, default_upstream=HUB, storage=storage)
    pull_and_check(skopeo, first, seeded, tmp_path / "oci-1")
    first.close()
    assert (storage / "clean-shutdown").exists()

    # as if the process died after renaming `adopted` and the manifest into place but before
    # their index rows were written, and `lost` vanished from the disk
    with contextlib.closing(sqlite3.connect(storage / "index.db")) as db:
        db.execute("DELETE FROM blobs WHERE digest IN (?, ?)", (adopted, manifest))
        db.execute("DELETE FROM refs WHERE parent=?", (manifest,))
        db.commit()
    blob_file(storage, lost).unlink()
    (storage / "clean-shutdown").unlink()

    mark = hub.mark()
    second = edgecaches("second", {HUB: hub.url}, default_upstream=HUB, storage=storage)
    with contextlib.closing(sqlite3.connect(f"file:{storage / 'index.db'}?mode=ro",
                                            uri=True)) as db:
        rows = {d: (size, media) for d, size, media in
                db.execute("SELECT digest, size, media_type FROM blobs")}
        children = {c for (c,) in db.execute("SELECT child FROM refs WHERE parent=?",
                                             (manifest,))}
    assert rows[adopted] == (len(seeded.blobs[adopted]), None)
    assert rows[manifest] == (len(seeded.top.manifest), seeded.top.media_type)
    assert children == set(seeded.blobs)
    assert lost not in rows
    assert untouched in rows

    pull_and_check(skopeo, second, seeded, tmp_path / "oci-2")
    assert blob_gets(hub, mark, adopted) == 0  # served from the adopted file
    assert blob_gets(hub, mark, lost) == 1  # fetched again
    assert file_sha256(blob_file(storage, lost)) == lost
    second.close()
    verify_clean(second)


def test_verify_finds_a_corrupted_blob_repair_removes_it_and_a_pull_fetches_it_again(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, skopeo: Skopeo,
        tmp_path: Path) -> None:
    seeded = corpus.beta
    layer = max(seeded.blobs, key=lambda d: len(seeded.blobs[d]))
    storage = tmp_path / "storage"
    first = edgecaches("first", {HUB: hub.url}, default_upstream=HUB, storage=storage)
    pull_and_check(skopeo, first, seeded, tmp_path / "oci-1")
    first.close()
    verify_clean(first)

    path = blob_file(storage, layer)
    with path.open("r+b") as handle:  # one flipped bit, in the middle
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x01]))

    found = edgecache_cli("verify", "--config", str(first.config_path))
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"corrupt: {layer}\n" in found.stdout
    assert [line for line in found.stdout.splitlines() if line.startswith("corrupt:")] == \
        [f"corrupt: {layer}"]
    assert path.exists()  # reported, not touched

    repaired = edgecache_cli("verify", "--repair", "--config", str(first.config_path))
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"corrupt: {layer} (removed)" in repaired.stdout
    assert not path.exists()
    verify_clean(first)

    mark = hub.mark()
    second = edgecaches("second", {HUB: hub.url}, default_upstream=HUB, storage=storage)
    pull_and_check(skopeo, second, seeded, tmp_path / "oci-2")
    assert blob_gets(hub, mark, layer) == 1
    assert file_sha256(path) == layer
    second.close()
    verify_clean(second)


def test_a_private_file_adopted_after_a_crash_stays_private(
        hub: DockerRegistry, registry_b: DockerRegistry, corpus: Corpus,
        edgecaches: StartEdgecache, tmp_path: Path) -> None:
    """docker.io is authenticated, registry-b.test public. A crash between a private blob's
    rename and its index rows leaves the file with no row and no link; the next start adopts
    it. Adopted, it must not answer anonymous requests on the public route (issue 13, item 3)."""
    seeded = corpus.alpha
    layer = max(seeded.blobs, key=lambda d: len(seeded.blobs[d]))
    password = "Pw-crash-7Hj3Kl9"
    write_htpasswd((tmp_path / "htpasswd"), "puller", password)
    storage = tmp_path / "storage"
    extra = {"upstreams": {HUB: {"url": hub.url, "access": "authenticated"},
                           REGISTRY_B: {"url": registry_b.url}},
             "auth": {"htpasswd_file": str(tmp_path / "htpasswd")}}
    creds = {"Authorization": "Basic " + base64.b64encode(f"puller:{password}".encode()).decode()}
    private = f"/v2/{HUB}/{seeded.repository}/blobs/{layer}"
    public = f"/v2/{REGISTRY_B}/team/app/blobs/{layer}"

    first = edgecaches("first", {}, extra=extra, storage=storage)
    assert fetch(first.url + private, headers=creds).body == seeded.blobs[layer]
    assert fetch(first.url + public).status == 404  # cached, and still private
    first.close()

    # what a kill -9 after the rename and before the row leaves: the file, no row, no link
    with contextlib.closing(sqlite3.connect(storage / "index.db")) as db:
        db.execute("DELETE FROM blobs WHERE digest=?", (layer,))
        db.execute("DELETE FROM links WHERE digest=?", (layer,))
        db.commit()
    (storage / "clean-shutdown").unlink()
    assert blob_file(storage, layer).exists()

    second = edgecaches("second", {}, extra=extra, storage=storage)
    mark = hub.mark()
    anonymous = fetch(second.url + public)
    assert anonymous.status == 404, anonymous.status
    assert seeded.blobs[layer] not in anonymous.body
    assert fetch(second.url + private).status == 401
    assert fetch(second.url + private, headers=creds).body == seeded.blobs[layer]
    assert blob_gets(hub, mark, layer) == 0  # the owner confirmed it (a HEAD); not fetched again
    assert fetch(second.url + public).status == 404
    second.close()
