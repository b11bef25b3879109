"""Air-gap throughput: warm, export (zstd levels 1, 3, 9) and import of a ~300 MiB image set.

`python -m bench.airgap [workdir]`. The set is 220 MiB of random (incompressible) tar layers and
80 MiB of word-text layers (compressible, ~3x), in an image, a text image and a two-platform
index, pushed to a local docker-registry. Everything runs in-process (warm starts the app on a
loopback port); wall time and process CPU time (all threads, zstd's included) are reported, since
on a shared machine the wall figure mostly measures the neighbours.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import shutil
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import zstandard

from edgecache import config as config_mod
from edgecache.airgap.export import export
from edgecache.airgap.importer import import_bundle
from edgecache.airgap.progress import Progress
from edgecache.airgap.warm import warm
from edgecache.config import Config
from tests.support.corpus import Seeded, seed
from tests.support.images import OCI_LAYER, Blob, make_image, make_index
from tests.support.registry import DockerRegistry, free_port

MiB = 1 << 20
REFS = ["docker.io/bench/random:1", "docker.io/bench/text:1", "docker.io/bench/multi:1"]


def _tar_layer(payload: bytes, name: str) -> Blob:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return Blob(buf.getvalue(), OCI_LAYER)


def _random(size: int, seed_: int) -> Blob:
    return _tar_layer(random.Random(seed_).randbytes(size), f"random-{seed_}")


def _text(size: int, seed_: int) -> Blob:
    rng = random.Random(seed_)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
             for _ in range(2000)]
    out = bytearray()
    while len(out) < size:
        out += (" ".join(rng.choice(words) for _ in range(12)) + "\n").encode()
    return _tar_layer(bytes(out[:size]), f"text-{seed_}")


def _config(root: Path, url: str) -> Config:
    return config_mod.from_mapping({
        "listen": {"http": f"127.0.0.1:{free_port()}", "https": None},
        "storage": {"path": str(root)}, "upstreams": {"docker.io": {"url": url}},
        "metrics": {"listen": None}})


def _quiet() -> Progress:
    return Progress("bench", "items", io.StringIO(), tty=False)


def _measure(label: str, raw: int, action: Callable[[], object], runs: int = 3) -> None:
    for _ in range(runs):
        os.sync()
        wall, cpu = time.perf_counter(), time.process_time()
        action()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{label:<18} {raw / MiB / wall:6.0f} MiB/s wall  {raw / MiB / cpu:6.0f} MiB/cpu-s"
              f"  load {os.getloadavg()[0]:.1f}")


def main(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    registry = DockerRegistry(workdir / "registry")
    try:
        seed(registry, [
            Seeded("bench/random", "1", make_image([_random(40 * MiB, s) for s in range(1, 5)])),
            Seeded("bench/text", "1", make_image([_text(40 * MiB, s) for s in (11, 12)])),
            Seeded("bench/multi", "1", make_index([
                make_image([_random(30 * MiB, 21)], "amd64"),
                make_image([_random(30 * MiB, 22)], "arm64")])),
        ])
        side_a = _config(workdir / "a", registry.url)
        side_b = _config(workdir / "b", "http://127.0.0.1:9")
        wall = time.perf_counter()
        report = asyncio.run(warm(side_a, REFS, _quiet()))
        assert not report.failed, report.lines()
        raw = sum(p.stat().st_size for p in (workdir / "a" / "blobs").rglob("*") if p.is_file())
        print(f"warm (in-process)  {raw / MiB / (time.perf_counter() - wall):6.0f} MiB/s wall"
              f"  ({raw / MiB:.1f} MiB)")
        for level in (1, 3, 9):
            bundle = workdir / f"bundle-{level}.tar.zst"
            _measure(f"export level {level}", raw,
                     lambda b=bundle, lv=level: export(side_a, REFS, str(b), _quiet(), level=lv))
            print(f"  bundle {bundle.stat().st_size / MiB:.1f} MiB = "
                  f"{bundle.stat().st_size / raw:.1%} of raw")
        plain = workdir / "bundle.tar"
        with (workdir / "bundle-3.tar.zst").open("rb") as src, plain.open("wb") as dst:
            zstandard.ZstdDecompressor().copy_stream(src, dst)

        def fresh_import(path: Path) -> None:
            shutil.rmtree(workdir / "b", ignore_errors=True)
            asyncio.run(import_bundle(side_b, str(path), _quiet()))

        _measure("import zstd", raw, lambda: fresh_import(workdir / "bundle-3.tar.zst"))
        _measure("import plain tar", raw, lambda: fresh_import(plain))
        _measure("re-import (cached)", raw,
                 lambda: asyncio.run(import_bundle(side_b, str(plain), _quiet())))
    finally:
        registry.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/edgecache-bench-airgap"))
