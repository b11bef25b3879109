"""Local content is primary data: eviction never chooses it; the `local:` section's rules;
idle upload sessions expire and leave no file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edgecache import config as config_mod
from edgecache.configvalues import InvalidConfig
from edgecache.local.uploads import Uploads
from edgecache.oci import Digest
from edgecache.storage.blobs import BlobStore
from edgecache.storage.eviction import run_eviction
from edgecache.storage.index import Index
from edgecache.storage.layout import Layout
from edgecache.storage.localindex import LocalIndex
from tests.unit.local.conftest import LOCAL

UPSTREAM = {"upstreams": {"docker.io": {"url": "https://registry-1.docker.io"}}}


def _store_file(layout: Layout, index: Index, data: bytes, upstream: str) -> str:
    digest = Digest.of(data)
    path = layout.blob(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    index.record_blob(str(digest), len(data), upstreams=(upstream,))
    return str(digest)


def test_eviction_never_chooses_local_content(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    BlobStore(layout).prepare()
    index = Index(layout.index_file)
    pushed = _store_file(layout, index, b"pushed" * 100, LOCAL)  # the oldest: LRU's first pick
    cached = _store_file(layout, index, b"cached" * 100, "docker.io")
    index.close()

    result = run_eviction(layout, (), need=10**9, allowance=None, stop=threading.Event(),
                          local=LOCAL)

    index = Index(layout.index_file)
    assert result.count == 1
    assert index.size(cached) is None and index.size(pushed) == 600
    assert layout.blob(Digest.parse(pushed)).exists()
    assert LocalIndex(index, LOCAL).holds(pushed)
    index.close()


def test_local_section_defaults_and_problems(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("")
    config = config_mod.from_mapping({**UPSTREAM, "auth": {"htpasswd_file": str(htpasswd)},
                                      "local": {"registry": "Registry.Local"}})
    assert config.local is not None
    assert (config.local.registry, config.local.push, config.local.upload_timeout) == (
        LOCAL, "authenticated", 3600.0)
    assert config_mod.from_mapping(UPSTREAM).local is None

    with pytest.raises(InvalidConfig) as info:
        config_mod.from_mapping({**UPSTREAM, "local": {
            "registry": "docker.io", "push": "everyone", "upload_timeout": "0s", "x": 1}})
    keys = sorted(p.split(":", 1)[0] for p in info.value.problems)
    assert keys == ["local.push", "local.registry", "local.upload_timeout", "local.x"]
    # authenticated (the default) without any client credentials is a problem, not open
    with pytest.raises(InvalidConfig) as info:
        config_mod.from_mapping({**UPSTREAM, "local": {"registry": LOCAL}})
    assert [p.split(":", 1)[0] for p in info.value.problems] == ["local.push"]


async def test_idle_upload_sessions_expire_and_leave_no_file(tmp_path: Path) -> None:
    from edgecache.metrics import Metrics
    from edgecache.storage.opening import open_storage

    config = config_mod.from_mapping({**UPSTREAM, "storage": {"path": str(tmp_path)}})
    storage = open_storage(config, Metrics())
    uploads = Uploads(storage.store, storage.index, timeout=60.0)
    try:
        idle = uploads.start("team/app")
        idle.writer.write(b"partial")
        busy = uploads.start("team/app")
        async with uploads.using(busy):
            assert uploads.expire(now=idle.touched + 61.0) == 1
        assert len(uploads) == 1
        assert len(list((tmp_path / "tmp").iterdir())) == 1  # the busy session's file
    finally:
        await uploads.close()
        storage.close(clean=True)
    # the live session outlives the process (its file and row), the expired one left nothing
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == [f"upload-{busy.id}.part"]


def test_the_local_registry_is_a_route_and_the_default_when_no_upstream_is() -> None:
    from edgecache.errors import BlobUploadUnknown
    from edgecache.proxy.routing import Router

    router = Router(["docker.io"], None, LOCAL)
    upload = router.resolve("team/app/blobs/uploads/", None)
    assert (upload.upstream, upload.repository, upload.kind, upload.reference) == (
        LOCAL, "team/app", "uploads", "")
    assert router.resolve(f"{LOCAL}/team/app/blobs/uploads/abc", None).reference == "abc"
    assert router.resolve("app/manifests/v1", LOCAL).upstream == LOCAL
    with pytest.raises(BlobUploadUnknown):  # upstreams take no pushes
        router.resolve("docker.io/team/app/blobs/uploads/", None)
    assert Router(["docker.io"], "docker.io", LOCAL).resolve(
        "app/manifests/v1", None).upstream == "docker.io"
