"""Quota and pins with real processes: docker-registry upstreams, edgecache, skopeo pulls.

Pinned images survive pressure and `edgecache du` reports where the bytes are; a tiny tmpfs
fills up (another tenant) while skopeo's layers are being written, and the pull still succeeds
with every byte right and nothing partial left behind.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.test_crash import (
    GatedRelay,
    edgecache_cli,
    part_files,
    verify_clean,
)
from tests.support.corpus import HUB, Corpus, MiB, Seeded
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.images import DOCKER_MANIFEST
from tests.support.registry import DockerRegistry
from tests.support.skopeo import Skopeo, verify_dir_layout, verify_oci_layout
from tests.support.waiting import wait_until
from tests.unit.storage.test_quota import fill_disk, mounted_tmpfs

pytestmark = pytest.mark.integration

KiB = 1 << 10
_UNITS = {"B": 1, "KiB": KiB, "MiB": MiB, "GiB": 1 << 30}
_SIZE_LINE = re.compile(r"^\s*(?P<name>\S.*?)\s+(?P<number>\d+(?:\.\d+)?) (?P<unit>B|KiB|MiB|GiB)$")


def pull(skopeo: Skopeo, ec: EdgecacheProcess, seeded: Seeded, out: Path) -> None:
    """A full pull; a Docker schema 2 image goes to a `dir:` copy (an `oci:` one converts it)."""
    docker = seeded.top.media_type == DOCKER_MANIFEST
    skopeo.copy(f"docker://{ec.address}/{seeded.repository}:{seeded.tag}",
                f"{'dir' if docker else 'oci'}:{out}", tls_verify=False)
    (verify_dir_layout if docker else verify_oci_layout)(out, seeded)


def du_sizes(stdout: str) -> dict[str, float]:
    """`edgecache du` lines, name -> bytes (as precise as the printed unit)."""
    out = {}
    for line in stdout.splitlines():
        match = _SIZE_LINE.match(line)
        if match:
            out[match["name"]] = float(match["number"]) * _UNITS[match["unit"]]
    return out


def assert_about(printed: float, actual: int) -> None:
    """`du` prints one decimal: within half a unit of the last digit."""
    unit = max((u for u in _UNITS.values() if actual >= u), default=1)
    assert abs(printed - actual) <= 0.05 * unit + 1, (printed, actual)


def test_pinned_images_survive_pressure_and_du_reports_usage(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, skopeo: Skopeo,
        tmp_path: Path) -> None:
    pinned = [corpus.alpha, corpus.classic]
    storage = tmp_path / "storage"
    quota = 14 * MiB
    pins = [f"{HUB}/{corpus.alpha.repository}:{corpus.alpha.tag}",  # by tag
            f"{HUB}/{corpus.classic.repository}@{corpus.classic.top.digest}"]  # by digest
    ec = edgecaches("edgecache", {HUB: hub.url}, default_upstream=HUB, storage=storage,
                    extra={"storage": {"path": str(storage), "max_size": "14MiB",
                                       "min_free": "0"}, "pins": pins})
    pinned_content = {d: len(b) for s in pinned for d, b in s.content.items()}
    # 10 MiB pinned, then 2 + 6 MiB more than the rest of the quota holds
    for i, seeded in enumerate([*pinned, corpus.beta, corpus.multi]):
        pull(skopeo, ec, seeded, tmp_path / f"oci-{i}")
        stored = ec.stored_blobs()
        assert sum(stored.values()) <= quota
        if i >= 1:
            assert set(pinned_content) <= set(stored), "a pinned blob was evicted"
    stored = ec.stored_blobs()
    others = {**corpus.beta.content, **corpus.multi.content}
    assert not set(others) <= set(stored), "nothing was evicted: the test proves nothing"
    ec.close()
    verify_clean(ec)

    result = edgecache_cli("du", "--config", str(ec.config_path))
    assert result.returncode == 0, result.stdout + result.stderr
    sizes = du_sizes(result.stdout)
    assert_about(sizes["cache used"], sum(stored.values()))
    assert_about(sizes["budget"], quota)
    assert_about(sizes["pinned"], sum(pinned_content.values()))
    for seeded in pinned:
        name = f"{HUB}/{seeded.repository}:{seeded.tag}"
        assert_about(sizes[name], sum(len(b) for b in seeded.content.values()))
    reachable = sizes[HUB]
    assert sum(pinned_content.values()) - 0.05 * MiB <= reachable <= sum(stored.values())
    assert "by upstream:" in result.stdout and "by image:" in result.stdout


def test_a_tmpfs_filling_up_mid_pull_serves_skopeo_every_byte_and_caches_nothing_partial(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, skopeo: Skopeo,
        tmp_path: Path) -> None:
    """Real docker-registry, real skopeo, a real 12 MiB tmpfs with no max_size: the layers
    (4 + 2 + 3 MiB) are reserved and start writing; another tenant takes the rest of the disk;
    every write then fails with ENOSPC and each layer continues from the upstream."""
    seeded = corpus.alpha
    layers = [d for d, data in seeded.blobs.items() if len(data) > 1 * MiB]
    assert len(layers) == 3
    size = 12 * MiB
    with mounted_tmpfs(tmp_path / "tiny", size) as mountpoint:
        storage = mountpoint / "cache"
        relay = GatedRelay(hub.port, after=1 * MiB)  # each layer stalls after about 1 MiB
        try:
            ec = edgecaches("edgecache", {HUB: relay.url}, default_upstream=HUB,
                            storage=storage,
                            extra={"storage": {"path": str(storage), "min_free": "0"}})
            out = tmp_path / "oci"
            with ThreadPoolExecutor(1) as pool:
                copy = pool.submit(pull, skopeo, ec, seeded, out)

                def all_layers_writing() -> bool:
                    return len([p for p in part_files(storage)
                                if p.stat().st_size >= 256 * KiB]) == len(layers)

                wait_until(all_layers_writing, "every layer's download is under way",
                           timeout=60)
                filler = fill_disk(mountpoint, size)
                relay.release()
                copy.result(timeout=120)  # skopeo succeeded and the layout was verified
        finally:
            relay.close()
        assert part_files(storage) == []
        stored = ec.stored_blobs()
        assert not set(layers) & set(stored)
        log = ec.log()
        for digest in layers:
            assert f"cannot cache {digest} ([Errno 28] No space left on device)" in log
        filler.unlink()
        ec.close()
        verify_clean(ec)
