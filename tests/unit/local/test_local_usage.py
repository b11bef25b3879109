"""Local (pushed) content in `ls` and `du`: counted against the disk, pinned implicitly (it is
never evicted) and marked local, beside an upstream's cached image; an untagged pushed blob is
local content too."""

from __future__ import annotations

import io
import json
from typing import Any

from edgecache import config as config_mod
from edgecache.config import Config
from edgecache.ops import cachecli
from tests.fakes.registry import FakeRegistry
from tests.support.images import make_image, make_layer
from tests.unit.local.conftest import (  # noqa: F401 - fixtures
    LOCAL,
    Pusher,
    htpasswd,
    local_edge,
    pusher,
)

UPSTREAM = "fake.test"


def config_of(client: Pusher, fake: FakeRegistry) -> Config:
    """The edge's config, as `edgecache ls` would load it (the commands read no auth)."""
    return config_mod.from_mapping({
        "listen": {"http": None}, "storage": {"path": str(client.edge.storage)},
        "upstreams": {UPSTREAM: {"url": fake.url}}, "default_upstream": UPSTREAM,
        "local": {"registry": LOCAL, "push": "anonymous"}})


def run(command: Any, config: Config) -> str:
    out = io.StringIO()
    assert command(config, True, out) == 0
    return out.getvalue()


async def test_ls_and_du_count_and_mark_local_content(
        pusher: Pusher, fake: FakeRegistry) -> None:  # noqa: F811 - the fixture's value
    pushed = make_image([make_layer(7000, 91)])
    assert (await pusher.image(pushed, "v1")).status == 201
    loose = await pusher.blob(b"an untagged pushed blob" * 40)
    cached = make_image([make_layer(3000, 92)])
    fake.add_image("team/up", cached, tags=["1"])
    for path in ["/v2/team/up/manifests/1", *(f"/v2/team/up/blobs/{b.digest}"
                                               for b in cached.blobs)]:
        async with pusher.edge.client.get(path, headers=pusher.headers) as resp:
            assert resp.status == 200, path
            await resp.read()
    config = config_of(pusher, fake)
    pushed_bytes = len(pushed.manifest) + sum(len(b.data) for b in pushed.blobs)
    cached_bytes = len(cached.manifest) + sum(len(b.data) for b in cached.blobs)

    rows = {row["image"]: row for row in json.loads(run(cachecli.ls, config))}
    assert {name: (row["bytes"], row["pinned"], row["local"]) for name, row in rows.items()} == {
        f"{LOCAL}/team/app:v1": (pushed_bytes, True, True),
        f"{UPSTREAM}/team/up:1": (cached_bytes, False, False)}
    out = io.StringIO()
    assert cachecli.ls(config, False, out) == 0
    table = {line.split()[0]: line.split() for line in out.getvalue().splitlines()[1:]}
    assert "local" in table[f"{LOCAL}/team/app:v1"]
    assert "local" not in table[f"{UPSTREAM}/team/up:1"]

    doc = json.loads(run(cachecli.du, config))
    local_bytes = pushed_bytes + len(b"an untagged pushed blob" * 40)
    assert loose and doc["local_registry"] == LOCAL
    assert doc["local_bytes"] == local_bytes
    assert doc["pinned_bytes"] == local_bytes  # nothing else is pinned
    assert doc["used_bytes"] == local_bytes + cached_bytes
    assert doc["untagged_bytes"] == local_bytes - pushed_bytes
    assert doc["upstreams"] == [
        {"upstream": UPSTREAM, "bytes": cached_bytes, "local": False},
        {"upstream": LOCAL, "bytes": pushed_bytes, "local": True}]
    assert [(i["image"], i["local"]) for i in doc["images"]] == [
        (f"{UPSTREAM}/team/up:1", False), (f"{LOCAL}/team/app:v1", True)]

    out = io.StringIO()
    assert cachecli.du(config, False, out) == 0
    lines = out.getvalue().splitlines()
    assert any(line.split()[0] == "local" for line in lines)
    assert [line.split()[-1] for line in lines if line.strip().startswith(LOCAL)] == [
        "local", "local"]  # its registry's line and its image's
    assert [line.split()[-1] for line in lines if line.strip().startswith(UPSTREAM)] == [
        "KiB", "KiB"]
