"""The service's periodic garbage collection (`local.gc_interval`): a child process per run,
owned by the app (cancelled and awaited at shutdown); and the `local.gc_*` keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecache import config as config_mod
from edgecache.config import InvalidConfig
from edgecache.local.gcsettings import DEFAULT_GRACE, GcSettings
from tests.support.images import make_image, make_layer
from tests.support.waiting import await_until
from tests.unit.conftest import MakeEdge
from tests.unit.local.conftest import LOCAL, Pusher, basic


async def test_the_running_service_collects_every_interval(make_edge: MakeEdge,
                                                           htpasswd: Path) -> None:
    edge = await make_edge(top={"auth": {"htpasswd_file": str(htpasswd)}, "local": {
        "registry": LOCAL, "gc_grace": "1s", "gc_interval": "200ms"}})
    pusher = Pusher(edge, basic())
    old = make_image([make_layer(1000, 701)])
    new = make_image([make_layer(1000, 702)])
    assert (await pusher.image(old, "v1")).status == 201
    assert (await pusher.image(new, "v1")).status == 201  # v1 moves: old is garbage

    files = [edge.blob_path(d) for d in (old.digest, old.config.digest, old.layers[0].digest)]
    await await_until(lambda: not any(f.exists() for f in files),
                      "the periodic collection to remove the old image", timeout=30)
    assert (await pusher.request("GET", pusher.url(f"manifests/{old.digest}"))).status == 404
    for blob in new.blobs:
        assert (await pusher.request("GET", pusher.url(f"blobs/{blob.digest}"))).status == 200
    # the app's shutdown (the test client's teardown) cancels and awaits the collector


def local_config(tmp_path: Path, **keys: object) -> config_mod.Config:
    return config_mod.from_mapping({
        "storage": {"path": str(tmp_path)}, "listen": {"http": None},
        "upstreams": {"u.test": {"url": "http://127.0.0.1:9"}},
        "local": {"registry": LOCAL, "push": "anonymous", **keys}})


def test_the_gc_keys_have_safe_defaults(tmp_path: Path) -> None:
    local = local_config(tmp_path).local
    assert local is not None and local.gc == GcSettings(DEFAULT_GRACE, 0.0)
    local = local_config(tmp_path, gc_grace="10m", gc_interval="6h").local
    assert local is not None and local.gc == GcSettings(600.0, 6 * 3600.0)


def test_bad_gc_keys_are_each_one_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig) as caught:
        local_config(tmp_path, gc_grace="soon", gc_interval="-1s")
    problems = caught.value.problems
    assert any(p.startswith("local.gc_grace:") for p in problems), problems
    assert any(p.startswith("local.gc_interval:") for p in problems), problems
