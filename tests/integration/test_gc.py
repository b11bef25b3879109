"""Garbage collection of the local registry with real pushes into a running edgecache: a tag
moved, `edgecache gc` (beside the service) removes exactly the old manifest and the blobs only
it referenced (a signature pushed by digest stays with the image it signs), while a push under
way (a blob uploaded, a chunked upload half done, their manifest still to come) loses nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.artifacts import SIGNATURE, make_artifact
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.httpclient import fetch
from tests.support.images import Blob, Image, make_image, make_layer
from tests.support.registry import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

LOCAL = "registry.local"
REPO = f"{LOCAL}/site/app"
ROOT = Path(__file__).resolve().parents[2]
GRACE = 3.0  # seconds: what is older is collectable, what the push under way wrote is not


class Pusher:
    """The push API as a client speaks it (POST, PATCH, PUT), nothing of edgecache's own."""

    def __init__(self, edge: EdgecacheProcess) -> None:
        self.base = f"{edge.url}/v2/{REPO}"
        self.url = edge.url

    def _call(self, method: str, url: str, data: bytes | None = None,
              headers: dict[str, str] | None = None) -> dict[str, str]:
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        with urllib.request.urlopen(request, timeout=60) as resp:
            return dict(resp.headers)

    def start(self) -> str:
        location = self._call("POST", f"{self.base}/blobs/uploads/", b"")["Location"]
        return self.url + location if location.startswith("/") else location

    def chunk(self, location: str, data: bytes, offset: int) -> str:
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Range": f"{offset}-{offset + len(data) - 1}"}
        location = self._call("PATCH", location, data, headers)["Location"]
        return self.url + location if location.startswith("/") else location

    def finish(self, location: str, digest: str, data: bytes = b"") -> None:
        sep = "&" if "?" in location else "?"
        self._call("PUT", f"{location}{sep}digest={digest}", data,
                   {"Content-Type": "application/octet-stream"})

    def blob(self, blob: Blob) -> None:
        self.finish(self.start(), blob.digest, blob.data)

    def manifest(self, image: Image, tag: str) -> None:
        self._call("PUT", f"{self.base}/manifests/{tag}", image.manifest,
                   {"Content-Type": image.media_type})

    def image(self, image: Image, tag: str) -> None:
        for blob in image.blobs:
            self.blob(blob)
        self.manifest(image, tag)


def gc(edge: EdgecacheProcess, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "edgecache", "gc", "--config", str(edge.config_path), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result.stdout


def listed(output: str) -> set[str]:
    return {line.split()[0] for line in output.splitlines() if line.startswith("sha256:")}


def served(edge: EdgecacheProcess, digest: str, kind: str = "blobs") -> int:
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    return fetch(f"{edge.url}/v2/{REPO}/{kind}/{digest}", headers=accept).status


def test_a_moved_tag_is_collected_while_a_push_goes_on(edgecaches: StartEdgecache) -> None:
    unused = f"http://127.0.0.1:{free_port()}"  # an upstream is required; none is asked here
    edge = edgecaches("edgecache", {"upstream.test": unused}, extra={
        "local": {"registry": LOCAL, "push": "anonymous", "gc_grace": "1h"}})
    pusher = Pusher(edge)
    shared = make_layer(3000, 601)
    old = make_image([make_layer(2000, 602), shared])
    new = make_image([shared, make_layer(2000, 603)])
    pusher.image(old, "latest")
    pusher.image(new, "latest")  # the tag moves: the old manifest is garbage, with its own blobs
    signature = make_artifact(new, SIGNATURE, b'{"signed": "new"}')  # pushed by digest, as
    old_signature = make_artifact(old, SIGNATURE, b'{"signed": "old"}')  # signers do
    pusher.image(signature, signature.digest)
    pusher.image(old_signature, old_signature.digest)
    pushed = time.time()

    assert listed(gc(edge, "--dry-run")) == set()  # within local.gc_grace (1h): nothing
    wait_until(lambda: time.time() > pushed + GRACE, "the grace period to pass",
               timeout=GRACE + 5)  # the clock itself: no event stands behind it
    # a push under way: one blob uploaded whole, one half through a chunked upload
    coming = make_image([shared, make_layer(2500, 604), make_layer(2500, 605)])
    whole, chunked = coming.layers[1], coming.layers[2]
    pusher.blob(coming.config)
    pusher.blob(whole)
    location = pusher.chunk(pusher.start(), chunked.data[:1000], 0)

    garbage = {old.digest, old.config.digest, old.layers[0].digest,  # the signature of the
               old_signature.digest, old_signature.layers[0].digest}  # old image goes with it
    dry = gc(edge, "--dry-run", "--grace", f"{GRACE:g}s")
    assert listed(dry) == garbage, dry
    assert all(served(edge, d) == 200 for d in (old.config.digest, old.layers[0].digest))
    done = gc(edge, "--grace", f"{GRACE:g}s")
    assert "removed 5 items" in done, done

    assert served(edge, old.digest, "manifests") == 404
    assert all(served(edge, d) == 404 for d in (old.config.digest, old.layers[0].digest))
    for blob in new.blobs:
        assert served(edge, blob.digest) == 200
    assert served(edge, new.digest, "manifests") == 200
    assert served(edge, signature.digest, "manifests") == 200  # a referrer of a kept image
    assert all(served(edge, b.digest) == 200 for b in signature.blobs)
    assert served(edge, old_signature.digest, "manifests") == 404
    # the push goes on and completes: nothing it had sent is gone
    location = pusher.chunk(location, chunked.data[1000:], 1000)
    pusher.finish(location, chunked.digest)
    pusher.manifest(coming, "next")
    for blob in coming.blobs:
        assert served(edge, blob.digest) == 200
    answer = fetch(f"{edge.url}/v2/{REPO}/manifests/next",
                   headers={"Accept": coming.media_type})
    assert (answer.status, answer.body) == (200, coming.manifest)
    assert listed(gc(edge, "--dry-run", "--grace", "0s")) == set()  # everything is reachable
    assert json.loads(fetch(f"{edge.url}/v2/{REPO}/tags/list").body)["tags"] == [
        "latest", "next"]
