"""The `prefetch:` section (every problem, one line each), the schedule's pacing, and which
blobs a first manifest pull prefetches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edgecache.config import from_mapping
from edgecache.configvalues import InvalidConfig
from edgecache.oci import DOCKER_MANIFEST_LIST, OCI_MANIFEST, Digest
from edgecache.ops.prefetch import Pacer
from edgecache.ops.prefetchsettings import PrefetchConfig
from edgecache.proxy.manifests import ManifestAnswer
from edgecache.proxy.prefetch import image_blobs

CONFIG = "sha256:" + "a" * 64
LAYERS = ["sha256:" + c * 64 for c in "bcd"]


def test_the_defaults_prefetch_nothing() -> None:
    assert from_mapping({}).prefetch == PrefetchConfig()
    assert PrefetchConfig().layers is False and PrefetchConfig().images == ()


def test_a_section_is_read_with_platforms_and_a_bandwidth() -> None:
    prefetch = from_mapping({"prefetch": {
        "interval": "90s", "concurrency": 3, "bandwidth": "10MiB",
        "layers": True, "images": ["docker.io/library/nginx:1.27",
                                   {"image": "quay.io/x/y:2", "platforms": ["linux/arm64/v8"]}]}
    }).prefetch
    assert (prefetch.interval, prefetch.concurrency, prefetch.bandwidth, prefetch.layers) == \
        (90.0, 3, 10 << 20, True)
    assert [i.reference for i in prefetch.images] == ["docker.io/library/nginx:1.27",
                                                      "quay.io/x/y:2"]
    assert [str(p) for p in prefetch.images[1].platforms] == ["linux/arm64/v8"]


def test_every_problem_is_one_line() -> None:
    with pytest.raises(InvalidConfig) as caught:
        from_mapping({"prefetch": {
            "interval": "0s", "concurrency": 0, "bandwidth": "50%", "layers": "yes",
            "speed": 1, "images": ["nowhere.test/x:1", f"docker.io/x@{CONFIG}", "no",
                                   {"image": "docker.io/x:1", "platforms": ["linux"]},
                                   {"platforms": []}]}})
    problems = caught.value.problems
    assert all("\n" not in p for p in problems)
    for expected in ("prefetch.interval", "prefetch.concurrency", "prefetch.bandwidth",
                     "prefetch.layers", "prefetch.speed: unknown key",
                     "prefetch.images[0]: 'nowhere.test/x:1' must start with a configured",
                     "prefetch.images[1]", "must name a tag", "prefetch.images[2]",
                     "prefetch.images[3].platforms", "prefetch.images[4]"):
        assert any(expected in p for p in problems), (expected, problems)
    with pytest.raises(InvalidConfig):
        from_mapping({"prefetch": {"images": "docker.io/x:1"}})


def test_the_pacer_spaces_blob_starts_at_the_rate() -> None:
    now = [100.0]
    pacer = Pacer(1000, clock=lambda: now[0])
    assert pacer.delay(500) == 0.0  # the first starts at once
    assert pacer.delay(1000) == pytest.approx(0.5)  # after the first's 500 bytes at 1000/s
    now[0] += 2.0  # idle time is not saved up beyond now
    assert pacer.delay(100) == 0.0
    assert pacer.delay(100) == pytest.approx(0.1)


def test_an_image_manifest_prefetches_its_config_and_layers_an_index_nothing() -> None:
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"digest": CONFIG, "size": 1, "mediaType": "x"},
           "layers": [{"digest": d, "size": 1, "mediaType": "x"} for d in LAYERS]}
    body = json.dumps(doc).encode()
    answer = ManifestAnswer(Digest.of(body), OCI_MANIFEST, len(body), body, "upstream")
    assert [str(d) for d in image_blobs(answer)] == [CONFIG, *LAYERS]
    index = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST,
             "manifests": [{"digest": CONFIG, "size": 1, "mediaType": OCI_MANIFEST}]}
    body = json.dumps(index).encode()
    assert image_blobs(ManifestAnswer(Digest.of(body), DOCKER_MANIFEST_LIST, len(body), body,
                                      "upstream")) == []
    assert image_blobs(ManifestAnswer(Digest.of(b""), OCI_MANIFEST, 0, None, "upstream")) == []


def test_the_commented_section_in_config_example_is_valid() -> None:
    text = (Path(__file__).resolve().parents[2] / "config.example.yaml").read_text()
    block = text[text.index("#prefetch:"):].split("\n\n", 1)[0]
    section = yaml.safe_load("\n".join(line[1:] for line in block.splitlines()))
    prefetch = from_mapping(section).prefetch
    assert prefetch.interval == 900.0 and prefetch.bandwidth == 10 << 20
    assert len(prefetch.images) == 2 and len(prefetch.images[1].platforms) == 2
