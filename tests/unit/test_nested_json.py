"""JSON nested deeper than the parser takes, from each kind of outsider: a clear refusal, never
a RecursionError turned into a 500 or a traceback."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpServer

from edgecache import config as config_mod
from edgecache import jsondoc
from edgecache.airgap.importer import import_bundle
from edgecache.airgap.manifest import Manifest
from edgecache.airgap.progress import Progress
from edgecache.clientconfig.docker import daemon_json
from edgecache.errors import BundleInvalid, ConfigError, ManifestInvalid
from edgecache.oci import OCI_MANIFEST
from tests.fakes.registry import FakeRegistry
from tests.support.bundles import layout_entries, tar_bytes, with_entry
from tests.support.images import make_image, make_layer
from tests.support.registry import free_port
from tests.unit.conftest import Edge

NESTED = b"[" * 2000 + b"]" * 2000  # fits oci-layout's 4 KiB bound; deeper than json's stack
UPSTREAM = "fake.test"


def test_parse_refuses_every_unreadable_kind_with_one_exception() -> None:
    assert jsondoc.parse(b'{"a": [1]}', 100) == {"a": [1]}
    for data in (NESTED, b"not json", b"\xff\xfe\xfd", b"1" * 5000, b"[]" * 60):
        with pytest.raises(jsondoc.JsonUnreadable):
            jsondoc.parse(data, 100 if data == b"[]" * 60 else 10_000)


async def test_a_token_service_answering_nested_json_is_denied_not_500(
        fake: FakeRegistry, edge: Edge, aiohttp_server: AiohttpServer) -> None:
    async def nested(request: web.Request) -> web.Response:
        return web.Response(body=NESTED, content_type="application/json")

    hostile = web.Application()
    hostile.router.add_get("/token", nested)
    server = await aiohttp_server(hostile, host="127.0.0.1")
    fake.add_image("team/app", make_image([make_layer(1000, 41)]), tags=("1",))
    fake.require_bearer(realm=f"http://127.0.0.1:{server.port}/token")
    async with edge.client.get("/v2/team/app/manifests/1") as resp:
        assert resp.status == 403, await resp.text()
        assert (await resp.json())["errors"][0]["code"] == "DENIED"


@pytest.mark.parametrize("member", ["oci-layout", "index.json"])
async def test_a_bundle_with_nested_json_is_refused(tmp_path: Path, member: str) -> None:
    config = config_mod.from_mapping({
        "listen": {"http": f"127.0.0.1:{free_port()}", "https": None},
        "storage": {"path": str(tmp_path / "e")},
        "upstreams": {UPSTREAM: {"url": "http://127.0.0.1:9"}},
        "default_upstream": UPSTREAM,
        "metrics": {"listen": None},
    })
    good = layout_entries(make_image([make_layer(4096, 42)]), f"{UPSTREAM}/team/n:1")
    path = tmp_path / "nested.tar"
    path.write_bytes(tar_bytes(with_entry(good, member, data=NESTED)))
    with pytest.raises(BundleInvalid, match="is not JSON"):
        await import_bundle(config, str(path), Progress("importing", "items", io.StringIO(),
                                                        tty=False))


def test_a_nested_manifest_is_invalid() -> None:
    with pytest.raises(ManifestInvalid, match="not a manifest"):
        Manifest.parse(b'{"schemaVersion": 2, "x": ' + NESTED + b"}", OCI_MANIFEST, "m")


def test_a_nested_daemon_json_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        daemon_json([], False, b'{"a": ' + NESTED + b"}", "/etc/docker/daemon.json")
