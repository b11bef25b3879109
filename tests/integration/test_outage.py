"""Pulls keep working through upstream outages and a flaky WAN.

A real docker-registry is the upstream; a killed process is a real outage, and the fault proxy
(tests/support/faultproxy.py) in front of it plays what a real server cannot: a black hole, a
refusing port, an upstream answering 500 or 429 to everything, and a connection cut in the middle
of a 64 MiB blob. edgecache runs as a real process with small timeouts, `cache.tag_ttl` 0s (so
every tag request asks the upstream) and `health.failure_threshold` 2; skopeo is the client, and
everything it pulls is compared byte for byte with what was seeded.

Nothing here is timed: waits for a log line are bounded polls that fail with the log.
"""

from __future__ import annotations

import hashlib
import random
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.corpus import HUB, Corpus, MiB, Seeded, seed
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.faultproxy import FaultProxy
from tests.support.images import Blob, make_image, make_layer
from tests.support.registry import DockerRegistry
from tests.support.skopeo import Skopeo, verify_dir_layout, verify_oci_layout
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

LOG_WAIT = 30.0  # bound on waiting for edgecache to log a state change
DOWN = f"upstream {HUB} is down after 2 failures"
UP = f"upstream {HUB} is up"


def outage_config(upstream_url: str) -> dict[str, object]:
    """Top-level config for edgecache: small timeouts, a quick verdict, a quick probe."""
    return {
        "upstreams": {HUB: {"url": upstream_url, "connect_timeout": "1s",
                            "response_timeout": "1s", "read_timeout": "5s"}},
        # longer than response_timeout: each tag check fails (and counts) before its answer
        "cache": {"tag_ttl": "0s", "revalidate_timeout": "3s"},
        "health": {"failure_threshold": 2, "probe_min_interval": "200ms",
                   "probe_max_interval": "500ms"},
    }


def start(edgecaches: StartEdgecache, name: str, upstream_url: str,
          storage: Path | None = None) -> EdgecacheProcess:
    return edgecaches(name, {HUB: upstream_url}, default_upstream=HUB,
                      extra=outage_config(upstream_url), storage=storage)


def wait_for_log(ec: EdgecacheProcess, needle: str, count: int = 1) -> None:
    wait_until(lambda: ec.log().count(needle) >= count, f"edgecache to log {needle!r} ({count}x)",
               timeout=LOG_WAIT, interval=0.05, describe=lambda: f"log tail:\n{ec.log()[-3000:]}")


def stale_serves(ec: EdgecacheProcess, seeded: Seeded) -> int:
    return ec.log().count(f"serving cached {HUB}/{seeded.repository}:{seeded.tag}")


def pull(skopeo: Skopeo, ec: EdgecacheProcess, seeded: Seeded, out: Path, *,
         by_digest: bool = False) -> Path:
    """skopeo copy from edgecache (tag or digest) to `out`, then check every byte."""
    ref = f"@{seeded.top.digest}" if by_digest else f":{seeded.tag}"
    if seeded.top.media_type.startswith("application/vnd.docker"):
        # a Docker schema 2 image goes to dir:, which keeps the manifest exactly as served
        skopeo.copy(f"docker://{ec.address}/{seeded.repository}{ref}", f"dir:{out}",
                    tls_verify=False)
        verify_dir_layout(out, seeded)
    else:
        skopeo.copy(f"docker://{ec.address}/{seeded.repository}{ref}", f"oci:{out}",
                    tls_verify=False)
        verify_oci_layout(out, seeded)
    return out


def tree(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


def same_tree(a: Path, b: Path) -> None:
    if tree(a) != tree(b):  # not an assert: pytest would try to diff megabytes
        pytest.fail(f"{a} and {b} differ", pytrace=False)


@pytest.fixture
def proxy(docker_registry: DockerRegistry) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(docker_registry.url)
    try:
        yield fault_proxy
    finally:
        fault_proxy.close()


def test_a_killed_upstream_does_not_stop_pulls_of_cached_images(
        docker_registry: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache,
        skopeo: Skopeo, tmp_path: Path) -> None:
    images = (corpus.alpha, corpus.multi)
    seed(docker_registry, list(images))
    ec = start(edgecaches, "edgecache", docker_registry.url)
    warm = {s.repository: pull(skopeo, ec, s, tmp_path / f"warm-{s.repository[8:]}")
            for s in images}

    docker_registry.proc.kill()  # SIGKILL, by PID: no goodbye to open connections
    docker_registry.proc.wait(timeout=10)
    mark = ec.mark()
    for seeded in images:
        name = seeded.repository[8:]
        by_tag = pull(skopeo, ec, seeded, tmp_path / f"tag-{name}")
        by_digest = pull(skopeo, ec, seeded, tmp_path / f"digest-{name}", by_digest=True)
        same_tree(warm[seeded.repository], by_tag)
        same_tree(warm[seeded.repository], by_digest)
        assert stale_serves(ec, seeded) == 1  # the tag pull: the upstream was asked, and failed

    wait_for_log(ec, DOWN)
    # (skopeo's TLS attempt before its plain-HTTP fallback is logged as a 400 for "/": left out)
    served = [r for r in ec.requests_since(mark) if "/manifests/" in r.path or "/blobs/" in r.path]
    assert served and all(r.status == 200 for r in served)


@pytest.mark.parametrize("mode", ["blackhole", "refuse", "http500", "http429"])
def test_cached_images_are_pulled_through_a_failing_upstream(
        mode: str, docker_registry: DockerRegistry, proxy: FaultProxy, corpus: Corpus,
        edgecaches: StartEdgecache, skopeo: Skopeo, tmp_path: Path) -> None:
    images = (corpus.alpha, corpus.classic)
    seed(docker_registry, list(images))
    ec = start(edgecaches, "edgecache", proxy.url)
    for seeded in images:
        pull(skopeo, ec, seeded, tmp_path / f"warm-{seeded.repository[8:]}")
    assert set(proxy.outcomes()) == {"forward"}

    proxy.set_mode(mode)
    mark = docker_registry.mark()
    for seeded in images:
        name = seeded.repository[8:]
        pull(skopeo, ec, seeded, tmp_path / f"tag-{name}")
        pull(skopeo, ec, seeded, tmp_path / f"digest-{name}", by_digest=True)
        assert stale_serves(ec, seeded) == 1

    # the fault really stood between edgecache and the registry: two tag checks failed (one per
    # image), the upstream is marked down, and nothing reached the registry
    wait_for_log(ec, DOWN)
    if mode != "refuse":  # a refused connection never reaches the proxy's code
        assert proxy.outcomes().get(mode, 0) >= 2
    assert docker_registry.pulls_since(mark) == []


def test_a_tag_repointed_during_an_outage_is_picked_up_when_the_upstream_is_back(
        docker_registry: DockerRegistry, proxy: FaultProxy, corpus: Corpus,
        edgecaches: StartEdgecache, skopeo: Skopeo, tmp_path: Path) -> None:
    old = corpus.alpha
    seed(docker_registry, [old])
    ec = start(edgecaches, "edgecache", proxy.url)
    pull(skopeo, ec, old, tmp_path / "warm")

    proxy.set_mode("blackhole")
    pull(skopeo, ec, old, tmp_path / "outage-1")
    pull(skopeo, ec, old, tmp_path / "outage-2")
    wait_for_log(ec, DOWN)

    # the tag moves upstream while edgecache cannot see it: the cached image is still served
    new = Seeded(old.repository, old.tag, make_image([make_layer(1 * MiB, 301)]))
    docker_registry.push_image(new.repository, new.tag, new.top)
    pull(skopeo, ec, old, tmp_path / "outage-3")
    assert stale_serves(ec, old) == 3

    proxy.set_mode("forward")
    wait_for_log(ec, UP)  # the probe, not a client request, noticed
    mark = docker_registry.mark()
    pull(skopeo, ec, new, tmp_path / "back")  # tag_ttl 0s: the very next pull sees the new tag
    assert stale_serves(ec, old) == 3
    reads = docker_registry.pulls_since(mark)
    assert ("HEAD", f"/v2/{new.repository}/manifests/{new.tag}") in {
        (r.method, r.path) for r in reads}
    assert ("GET", f"/v2/{new.repository}/manifests/{new.top.digest}") in {
        (r.method, r.path) for r in reads}


def test_a_blob_download_cut_twice_resumes_with_range_requests(
        docker_registry: DockerRegistry, proxy: FaultProxy, edgecaches: StartEdgecache) -> None:
    size, cut_after = 64 * MiB, 16 * MiB
    big = Blob(random.Random(401).randbytes(size), "application/octet-stream")
    docker_registry.push_blob("library/big", big)
    ec = start(edgecaches, "edgecache", proxy.url)
    proxy.cut(after=cut_after, times=2)
    mark = docker_registry.mark()

    digest, received = hashlib.sha256(), 0
    with urllib.request.urlopen(f"{ec.url}/v2/library/big/blobs/{big.digest}",
                                timeout=60) as resp:
        status = resp.status
        while chunk := resp.read(MiB):
            digest.update(chunk)
            received += len(chunk)
    # the client saw one whole, uninterrupted answer
    assert (status, received, "sha256:" + digest.hexdigest()) == (200, size, big.digest)

    # edgecache's upstream connection was cut twice and resumed where it broke, each time
    assert proxy.cuts_done == 2
    sent = [(s.method, s.headers.get("range"), s.outcome) for s in proxy.requests()
            if s.path.endswith(big.digest)]
    assert sent == [("GET", None, "cut"), ("GET", f"bytes={cut_after}-", "cut"),
                    ("GET", f"bytes={2 * cut_after}-", "forward")]
    # and the registry saw it so: one full answer, two partial ones (its log has no request
    # headers, but 206 is only ever the answer to a Range)
    reads = [(r.method, r.status) for r in docker_registry.pulls_since(mark)
             if r.path.endswith(big.digest)]
    assert reads == [("GET", 200), ("GET", 206), ("GET", 206)]
    resumed = [line for line in ec.log().splitlines()  # (the only download of this test)
               if " broke at " in line and "; resuming" in line]  # then the request id
    assert len(resumed) == 2
    assert f"broke at {cut_after} bytes" in resumed[0]
    assert f"broke at {2 * cut_after} bytes" in resumed[1]
    assert ec.stored_blobs()[big.digest] == size


def test_a_restarted_edgecache_serves_every_cached_tag_while_the_upstream_is_down(
        docker_registry: DockerRegistry, proxy: FaultProxy, corpus: Corpus,
        edgecaches: StartEdgecache, skopeo: Skopeo, tmp_path: Path) -> None:
    images = (corpus.alpha, corpus.beta, corpus.multi, corpus.classic)
    seed(docker_registry, list(images))
    storage = tmp_path / "cache-storage"
    first = start(edgecaches, "first", proxy.url, storage=storage)
    for seeded in images:
        pull(skopeo, first, seeded, tmp_path / f"warm-{seeded.repository[8:]}")
    first.proc.kill()  # a crash, not a clean stop: what was answered must already be on disk
    first.proc.wait(timeout=10)

    proxy.set_mode("blackhole")
    second = start(edgecaches, "second", proxy.url, storage=storage)
    for seeded in images:
        pull(skopeo, second, seeded, tmp_path / f"after-{seeded.repository[8:]}")
        assert stale_serves(second, seeded) == 1
    wait_for_log(second, DOWN)
    assert proxy.outcomes().get("blackhole", 0) >= 2
