"""Pushes into the local registry with real clients (skopeo, podman, dockerd), pulled back by
containerd through edgecache; a chunked upload cut mid-way and resumed; kill -9 during a push.

One edgecache per test, its local registry `registry.local` (authenticated pushes, htpasswd)
beside the seeded docker-registry `registry-b.test`. Every wait is a bounded poll.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_crash import verify_clean
from tests.support.containerd import Containerd, write_hosts
from tests.support.corpus import REGISTRY_B, Corpus
from tests.support.docker import Dockerd, existing_daemon_json
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.htpasswd import write_htpasswd
from tests.support.httpclient import fetch
from tests.support.podman import Podman
from tests.support.registry import DockerRegistry
from tests.support.skopeo import Skopeo
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

LOCAL = "registry.local"
USER, PASSWORD = "ci", "push-secret"
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json"])


def _auth() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


def start_local(edgecaches: StartEdgecache, registry_b: DockerRegistry, tmp_path: Path,
                storage: Path | None = None, name: str = "edgecache") -> EdgecacheProcess:
    htpasswd = tmp_path / "htpasswd"
    if not htpasswd.exists():
        write_htpasswd(htpasswd, USER, PASSWORD)
    return edgecaches(name, {REGISTRY_B: registry_b.url}, storage=storage, extra={
        "auth": {"htpasswd_file": str(htpasswd)},
        "local": {"registry": LOCAL, "upload_timeout": "10m"}})


def skopeo_push(skopeo: Skopeo, source: str, destination: str,
                creds: bool = True) -> subprocess.CompletedProcess[str]:
    """`skopeo copy --all --preserve-digests` into a local repository, as the pusher (or,
    without `creds`, anonymously)."""
    login = ["--dest-creds", f"{USER}:{PASSWORD}"] if creds else []
    return subprocess.run(
        [skopeo.binary, "--policy", str(skopeo.policy), "copy", "--all", "--preserve-digests",
         "--retry-times", "0", "--src-tls-verify=false", "--dest-tls-verify=false", *login,
         source, destination],
        env=skopeo.env, capture_output=True, text=True, timeout=120, check=False)


def assert_complete(ec: EdgecacheProcess, repository: str, tag: str) -> str:
    """The pushed tag resolves (anonymously) and every manifest and blob it names is served
    with the bytes its digest says; the top manifest's digest."""
    base = f"{ec.url}/v2/{LOCAL}/{repository}"
    top = fetch(f"{base}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT})
    assert top.status == 200, top.body[:300]
    pending, seen = [json.loads(top.body)], set()
    while pending:
        doc = pending.pop()
        for item in [doc.get("config"), *doc.get("layers", []), *doc.get("manifests", [])]:
            if not item or item["digest"] in seen:
                continue
            seen.add(item["digest"])
            kind = "manifests" if "manifests" in doc else "blobs"
            got = fetch(f"{base}/{kind}/{item['digest']}", headers={"Accept": MANIFEST_ACCEPT})
            assert got.status == 200, (item, got.status)
            assert "sha256:" + hashlib.sha256(got.body).hexdigest() == item["digest"]
            if kind == "manifests":
                pending.append(json.loads(got.body))
    return "sha256:" + hashlib.sha256(top.body).hexdigest()


def test_skopeo_copy_into_a_local_repository_then_containerd_pulls_it(
        registry_b: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache,
        skopeo: Skopeo, containerd: Containerd, tmp_path: Path) -> None:
    ec = start_local(edgecaches, registry_b, tmp_path)
    source = f"docker://{registry_b.url.removeprefix('http://')}/{corpus.app_multi.repository}:2"
    destination = f"docker://{ec.address}/{LOCAL}/team/multi:2"
    result = skopeo_push(skopeo, source, destination)
    assert result.returncode == 0, result.stderr[-3000:]
    assert assert_complete(ec, "team/multi", "2") == corpus.app_multi.top.digest
    # without credentials the same push is refused
    refused = skopeo_push(skopeo, source, f"docker://{ec.address}/{LOCAL}/team/anon:2",
                          creds=False)
    assert refused.returncode != 0

    hosts = tmp_path / "hosts"
    write_hosts(hosts, LOCAL, ec.url)
    ref = f"{LOCAL}/team/multi:2"
    containerd.pull(ref, hosts)
    assert containerd.image_digest(ref) == corpus.app_multi.top.digest


def test_podman_and_docker_push_into_local_repositories(
        registry_b: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache,
        dockerds: list[Dockerd], tmp_path: Path) -> None:
    ec = start_local(edgecaches, registry_b, tmp_path)
    pulled = f"{ec.address}/{REGISTRY_B}/{corpus.app.repository}:{corpus.app.tag}"

    podman = Podman(tmp_path / "podman")
    try:
        conf = tmp_path / "registries.conf"
        conf.write_text("unqualified-search-registries = []\n")
        podman.pull(conf, pulled, "--tls-verify=false")
        pushed = f"{ec.address}/{LOCAL}/team/podman:1"
        podman.run(conf, "tag", pulled, pushed)
        podman.run(conf, "push", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", pushed)
    finally:
        podman.close()
    assert_complete(ec, "team/podman", "1")

    root = tmp_path / "root"
    daemon_json = existing_daemon_json(root, tmp_path / "dockerd")
    dockerd = Dockerd(tmp_path / "dockerd", daemon_json)  # 127.0.0.0/8 is insecure to it
    dockerds.append(dockerd)
    dockerd.pull(pulled)
    pushed = f"{ec.address}/{LOCAL}/team/docker:1"
    dockerd.docker("tag", pulled, pushed)
    assert dockerd.run("push", pushed).returncode != 0  # not logged in: refused
    dockerd.login(ec.address, USER, PASSWORD)
    dockerd.docker("push", pushed)
    assert_complete(ec, "team/docker", "1")  # docker rewrites the manifest; same config
    top = fetch(f"{ec.url}/v2/{LOCAL}/team/docker/manifests/1",
                headers={"Accept": MANIFEST_ACCEPT})
    assert json.loads(top.body)["config"]["digest"] == corpus.app.top.config.digest


def _patch_head(ec: EdgecacheProcess, location: str, start: int, length: int) -> bytes:
    return (f"PATCH {location} HTTP/1.1\r\nHost: {ec.address}\r\n"
            f"Authorization: {_auth()['Authorization']}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n"
            f"Content-Range: {start}-{start + length - 1}\r\n\r\n").encode()


def _start_upload(ec: EdgecacheProcess) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", ec.port, timeout=30)
    try:
        conn.request("POST", f"/v2/{LOCAL}/team/chunked/blobs/uploads/", headers=_auth())
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 202
        return str(resp.headers["Location"])
    finally:
        conn.close()


def _patch(ec: EdgecacheProcess, location: str, data: bytes, start: int) -> int:
    """One chunk at `start`, its whole body sent; the status."""
    conn = http.client.HTTPConnection("127.0.0.1", ec.port, timeout=60)
    try:
        conn.request("PATCH", location, body=data, headers={
            **_auth(), "Content-Range": f"{start}-{start + len(data) - 1}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _received(ec: EdgecacheProcess, location: str) -> int:
    status = fetch(ec.url + location, headers=_auth())
    assert status.status == 204, status.status
    end = int(status.headers["Range"].split("-")[1])
    return end + 1 if end else 0


def test_a_chunked_upload_cut_mid_way_resumes_from_what_arrived(
        registry_b: DockerRegistry, edgecaches: StartEdgecache, tmp_path: Path) -> None:
    ec = start_local(edgecaches, registry_b, tmp_path)
    data = random.Random(7).randbytes(4 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location = _start_upload(ec)
    cut = 3 << 20
    with socket.create_connection(("127.0.0.1", ec.port), timeout=30) as sock:
        sock.sendall(_patch_head(ec, location, 0, len(data)) + data[:cut])
        wait_until(lambda: _received(ec, location) == cut, "the first 3 MiB to arrive")
    # the connection is gone: continue from the status the server gives
    def resumed() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", ec.port, timeout=30)
        try:
            offset = _received(ec, location)
            conn.request("PATCH", location, body=data[offset:], headers={
                **_auth(), "Content-Range": f"{offset}-{len(data) - 1}"})
            resp = conn.getresponse()
            resp.read()
            return resp.status == 202
        finally:
            conn.close()
    wait_until(resumed, "the rest of the blob to be accepted")
    done = fetch(f"{ec.url}{location}?digest={digest}", method="PUT", headers=_auth())
    assert done.status == 201
    got = fetch(f"{ec.url}/v2/{LOCAL}/other/blobs/{digest}")
    assert got.status == 200 and got.body == data


def test_kill_9_mid_chunk_publishes_nothing_and_the_session_resumes(
        registry_b: DockerRegistry, edgecaches: StartEdgecache, tmp_path: Path) -> None:
    first = start_local(edgecaches, registry_b, tmp_path, name="first")
    data = random.Random(8).randbytes(4 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location = _start_upload(first)
    with socket.create_connection(("127.0.0.1", first.port), timeout=30) as sock:
        sock.sendall(_patch_head(first, location, 0, len(data)) + data[:2 << 20])
        wait_until(lambda: _received(first, location) == 2 << 20, "half the blob to arrive")
        assert list((first.storage / "tmp").iterdir())  # the session's file, unpublished
        os.kill(first.proc.pid, signal.SIGKILL)  # the chunk's connection still open
        first.proc.wait(timeout=30)
    second = start_local(edgecaches, registry_b, tmp_path, storage=first.storage,
                         name="second")
    assert fetch(f"{second.url}/v2/{LOCAL}/team/chunked/blobs/{digest}",
                 method="HEAD").status == 404
    assert digest not in second.stored_blobs()
    # the offset is what the file holds: the cut chunk's bytes that arrived stay
    [part] = (second.storage / "tmp").iterdir()
    offset = _received(second, location)
    assert offset == part.stat().st_size == 2 << 20
    assert _patch(second, location, data[offset:], offset) == 202
    done = fetch(f"{second.url}{location}?digest={digest}", method="PUT", headers=_auth())
    assert done.status == 201
    got = fetch(f"{second.url}/v2/{LOCAL}/team/chunked/blobs/{digest}")
    assert got.status == 200 and got.body == data
    second.close()
    verify_clean(second)
