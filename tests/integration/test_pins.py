"""Runtime pins and prefetch against a real docker-registry upstream and a real edgecache.

`edgecache pin` on a running service fetches the image through the pull path; the pin survives
a restart and an eviction storm (a 14 MiB quota filled with other images, as in
test_quota.py); `unpin` lets it go. A pin whose fetch failed (the upstream refusing, behind the
fault proxy) is shown failed with its next try and is fetched once the upstream is back, with
no new command, at the next try or at the next start. The prefetch schedule fetches a moved
tag before any client asks; layer prefetch brings an image's blobs in after a manifest GET alone.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_crash import edgecache_cli
from tests.support.corpus import HUB, Corpus, MiB
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.faultproxy import FaultProxy
from tests.support.httpclient import fetch
from tests.support.images import Image, make_image, make_layer
from tests.support.registry import DockerRegistry, pulls
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
FIRST_RETRY = 30.0  # edgecache/ops/pinfetch.py RETRY_FIRST: the wait below is bounded above it


def content(image: Image) -> dict[str, int]:
    """digest -> size of the image's config and layers."""
    return {blob.digest: len(blob.data) for blob in image.blobs}


def pull(ec: EdgecacheProcess, repository: str, tag: str, image: Image) -> None:
    """A client pull over plain HTTP: the manifest, then every blob, each checked."""
    answer = fetch(f"{ec.url}/v2/{repository}/manifests/{tag}", headers=ACCEPT)
    assert answer.status == 200 and answer.body == image.manifest, answer.status
    for blob in image.blobs:
        got = fetch(f"{ec.url}/v2/{repository}/blobs/{blob.digest}")
        assert got.status == 200 and got.body == blob.data, (blob.digest, got.status)


def cli(ec: EdgecacheProcess, *args: str) -> tuple[int, str, str]:
    result = edgecache_cli(*args, "--config", str(ec.config_path))
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout, result.stderr


def pins(ec: EdgecacheProcess) -> dict[str, dict[str, object]]:
    code, out, err = cli(ec, "pins", "--json")
    assert code == 0, err
    return {pin["reference"]: pin for pin in json.loads(out)["pins"]}


def storm(hub: DockerRegistry, first_seed: int, count: int) -> list[tuple[str, Image]]:
    """`count` images of one 3 MiB layer each, pushed under library/storm-<seed>."""
    images = []
    for seed in range(first_seed, first_seed + count):
        image = make_image([make_layer(3 * MiB, seed)])
        hub.push_image(f"library/storm-{seed}", "1", image)
        images.append((f"library/storm-{seed}", image))
    return images


def test_a_runtime_pin_is_fetched_survives_a_restart_and_an_eviction_storm_and_unpin_frees_it(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, tmp_path: Path) -> None:
    alpha = corpus.alpha.top
    assert isinstance(alpha, Image)
    pinned = f"{HUB}/library/alpha:1"
    declared = f"{HUB}/library/classic@{corpus.classic.top.digest}"  # the config's base
    storage = tmp_path / "storage"
    extra = {"storage": {"path": str(storage), "max_size": "14MiB", "min_free": "0"},
             "pins": [declared]}
    ec = edgecaches("first", {HUB: hub.url}, default_upstream=HUB, storage=storage,
                    metrics=True, extra=extra)

    code, out, err = cli(ec, "pin", pinned)
    assert code == 0, out + err
    assert f"({len(alpha.blobs)}/{len(alpha.blobs)})" in out and "pinned and held" in out, out
    assert set(content(alpha)) <= set(ec.stored_blobs()), "pinning did not fetch the image"
    listed = pins(ec)
    assert listed[pinned]["source"] == "runtime" and listed[pinned]["state"] == "held"
    assert listed[declared]["source"] == "config"
    wait_until(lambda: pins(ec)[declared]["state"] == "held", "the config pin fetched at start")
    code, out, _ = cli(ec, "pins")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert code == 0 and rows[pinned][0] == "runtime" and rows[pinned][-1] == "held", out
    assert rows[declared] == ["config", "-", "held"], out

    code, _, err = cli(ec, "unpin", declared)  # the declarative base stays
    assert code == 1 and err.count("\n") == 1 and "pinned by the config" in err, err

    ec.close()
    ec = edgecaches("second", {HUB: hub.url}, default_upstream=HUB, storage=storage,
                    metrics=True, extra=extra)
    assert pins(ec)[pinned]["state"] == "held", "the runtime pin did not survive a restart"

    wave = storm(hub, 401, 4)  # 9 MiB pinned + 12 MiB more than a 14 MiB quota holds
    for repository, image in wave:
        pull(ec, repository, "1", image)
    wait_until(lambda: not all(set(content(i)) <= set(ec.stored_blobs()) for _, i in wave),
               "the storm evicted something")
    assert set(content(alpha)) <= set(ec.stored_blobs()), "a pinned blob was evicted"

    code, out, err = cli(ec, "unpin", pinned)
    assert code == 0 and f"unpinned {pinned}" in out, out + err
    assert pinned not in pins(ec)
    unique = set(content(alpha)) - {corpus.shared.digest}
    for repository, image in storm(hub, 411, 3):
        pull(ec, repository, "1", image)
    wait_until(lambda: not unique & set(ec.stored_blobs()), "the unpinned image was evicted",
               describe=lambda: str(sorted(unique & set(ec.stored_blobs()))))


def test_pin_refuses_bad_references_in_one_line_and_needs_a_running_service(
        tmp_path: Path) -> None:
    config = tmp_path / "edgecache.yaml"
    config.write_text(f"storage: {{path: {tmp_path / 'storage'}}}\n"
                      "metrics: {listen: '127.0.0.1:9'}\n")
    for bad, why in (("no-registry", "must start with a registry name"),
                     ("nowhere.test/library/x:1", "must start with a configured upstream name"),
                     ("docker.io/library/x:bad:tag", "not an image reference")):
        result = edgecache_cli("pin", bad, "--config", str(config))
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and why in result.stderr, result.stderr
    result = edgecache_cli("pins", "--config", str(config))
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "start it first" in result.stderr and "Traceback" not in result.stderr


def test_prefetch_fetches_a_moved_tag_before_any_client_asks(
        hub: DockerRegistry, edgecaches: StartEdgecache) -> None:
    before = make_image([make_layer(1 * MiB, 501), make_layer(1 * MiB, 502)])
    hub.push_image("library/moving", "1", before)
    ec = edgecaches("prefetch", {HUB: hub.url}, default_upstream=HUB, extra={
        "prefetch": {"interval": "1s", "images": [f"{HUB}/library/moving:1"]}})
    wait_until(lambda: set(content(before)) <= set(ec.stored_blobs()),
               "the first pass fetched the image")

    after = make_image([make_layer(1 * MiB, 503), make_layer(1 * MiB, 501)])
    hub.push_image("library/moving", "1", after)  # the tag moves; no client asks
    wait_until(lambda: set(content(after)) <= set(ec.stored_blobs()),
               "a later pass fetched what the tag names now")

    mark = hub.mark()
    pull(ec, "library/moving", "1", after)
    fetched = [e for e in pulls(hub.pulls_since(mark)) if e.method == "GET"]
    assert fetched == [], f"the client's pull reached the upstream: {fetched}"


def test_layer_prefetch_brings_the_blobs_in_after_a_manifest_get_alone(
        hub: DockerRegistry, edgecaches: StartEdgecache) -> None:
    image = make_image([make_layer(1 * MiB, 601), make_layer(2 * MiB, 602),
                        make_layer(1 * MiB, 603)])
    hub.push_image("library/layered", "1", image)
    ec = edgecaches("layers", {HUB: hub.url}, default_upstream=HUB,
                    extra={"prefetch": {"layers": True}})
    mark = hub.mark()
    answer = fetch(f"{ec.url}/v2/library/layered/manifests/1", headers=ACCEPT)
    assert answer.status == 200 and answer.body == image.manifest
    wait_until(lambda: set(content(image)) <= set(ec.stored_blobs()),
               "the layers arrived without the client asking")
    pull(ec, "library/layered", "1", image)  # the client's own asks: from the cache
    blob_gets = [e for e in pulls(hub.pulls_since(mark))
                 if e.method == "GET" and "/blobs/" in e.path]
    assert len(blob_gets) == len(image.blobs), blob_gets


@pytest.fixture
def outage(hub: DockerRegistry) -> Iterator[FaultProxy]:
    """The hub behind a fault proxy the test switches between refusing and forwarding."""
    with contextlib.closing(FaultProxy(hub.url)) as proxy:
        yield proxy


def only_tag_heads(hub: DockerRegistry, mark: int, repository: str, tag: str) -> None:
    asked = hub.pulls_since(mark)
    assert asked and all(e.method == "HEAD" and e.path == f"/v2/{repository}/manifests/{tag}"
                         for e in asked), f"more than the tag's HEAD reached the upstream: {asked}"


def test_a_pin_made_while_the_upstream_is_down_is_fetched_when_it_is_back_without_a_command(
        hub: DockerRegistry, outage: FaultProxy, edgecaches: StartEdgecache) -> None:
    image = make_image([make_layer(1 * MiB, 701), make_layer(2 * MiB, 702)])
    hub.push_image("library/later", "1", image)
    reference = f"{HUB}/library/later:1"
    ec = edgecaches("down", {HUB: outage.url}, default_upstream=HUB, metrics=True,
                    extra={"health": {"probe_max_interval": "1s"}})
    outage.set_mode("refuse")

    code, out, err = cli(ec, "pin", reference)
    assert code == 1 and "pinned, not held" in out and "next try" in out, out + err
    state = pins(ec)[reference]
    assert state["state"] == "failed" and state["error"] and state["failures"] == 1, state
    assert isinstance(state["next_retry"], float)
    assert time.time() < state["next_retry"] <= time.time() + FIRST_RETRY, state
    code, out, _ = cli(ec, "pins")
    row = next(line for line in out.splitlines() if line.startswith(reference))
    assert code == 0 and "failed (1x):" in row and "next try" in row, out

    outage.set_mode("forward")
    wait_until(lambda: pins(ec)[reference]["state"] == "held", "the retry fetched the pin",
               timeout=FIRST_RETRY + 60, interval=0.5, describe=lambda: str(pins(ec)[reference]))
    assert set(content(image)) <= set(ec.stored_blobs())
    mark = hub.mark()
    pull(ec, "library/later", "1", image)
    only_tag_heads(hub, mark, "library/later", "1")


def test_pins_not_held_at_a_restart_are_fetched_after_start(
        hub: DockerRegistry, outage: FaultProxy, edgecaches: StartEdgecache,
        tmp_path: Path) -> None:
    runtime, declared = (make_image([make_layer(1 * MiB, seed)]) for seed in (711, 712))
    hub.push_image("library/restart-runtime", "1", runtime)
    hub.push_image("library/restart-config", "1", declared)
    pinned, configured = (f"{HUB}/library/restart-{name}:1" for name in ("runtime", "config"))
    storage = tmp_path / "storage"
    extra = {"pins": [configured]}
    outage.set_mode("refuse")
    ec = edgecaches("first", {HUB: outage.url}, default_upstream=HUB, storage=storage,
                    metrics=True, extra=extra)
    code, out, err = cli(ec, "pin", "--no-wait", pinned)
    assert code == 0, out + err
    wait_until(lambda: all(p["state"] == "failed" for p in pins(ec).values()),
               "both fetches failed", describe=lambda: str(pins(ec)))
    ec.close()

    outage.set_mode("forward")
    ec = edgecaches("second", {HUB: outage.url}, default_upstream=HUB, storage=storage,
                    metrics=True, extra=extra)
    wait_until(lambda: all(p["state"] == "held" for p in pins(ec).values()),
               "both pins fetched after the start", describe=lambda: str(pins(ec)))
    for repository, image in (("library/restart-runtime", runtime),
                              ("library/restart-config", declared)):
        assert set(content(image)) <= set(ec.stored_blobs())
        mark = hub.mark()
        pull(ec, repository, "1", image)
        only_tag_heads(hub, mark, repository, "1")
