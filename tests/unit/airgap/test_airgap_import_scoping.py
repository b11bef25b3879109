"""`import` and private content: a bundle must carry the bytes of what it links.

A cached private blob is skipped by an import (it is already here); linking it to the bundle's
public upstream would open it to that upstream's anonymous clients, so a bundle whose member
only has the right size (zeros) under the private digest must not get that link (issue 13,
item 2). Checked through edgecache's real app: what an anonymous client gets.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from pytest_aiohttp import AiohttpClient

from edgecache import config as config_mod
from edgecache.airgap.importer import import_bundle
from edgecache.airgap.progress import Progress
from edgecache.app import build_app
from edgecache.config import Config
from edgecache.errors import BundleInvalid
from edgecache.metrics import Metrics
from tests.support.bundles import (
    index_rows,
    layout_entries,
    storage_snapshot,
    tar_bytes,
    with_entry,
)
from tests.support.images import make_image, make_layer
from tests.support.registry import free_port

PRIVATE, PUBLIC = "private.test", "public.test"


def make_config(tmp_path: Path) -> Config:
    tokens = tmp_path / "tokens"
    tokens.write_text("ci:tok-scoping-8Ui2Kp4\n")
    tokens.chmod(0o600)
    dead = f"http://127.0.0.1:{free_port()}"  # neither upstream answers: the cache decides
    return config_mod.from_mapping({
        "listen": {"http": f"127.0.0.1:{free_port()}", "https": None},
        "storage": {"path": str(tmp_path / "cache")},
        "upstreams": {PRIVATE: {"url": dead, "access": "authenticated"},
                      PUBLIC: {"url": dead}},
        "auth": {"tokens_file": str(tokens)},
        "metrics": {"listen": None},
        "health": {"failure_threshold": 1000},
    })


def quiet() -> Progress:
    return Progress("importing", "items", io.StringIO(), tty=False)


def links(root: Path, digest: str) -> set[str]:
    return {upstream for upstream, d in index_rows(root)["links"] if d == digest}


async def test_a_same_size_member_under_a_private_digest_does_not_open_it(
        tmp_path: Path, aiohttp_client: AiohttpClient) -> None:
    config = make_config(tmp_path)
    root = config.storage.path
    image = make_image([make_layer(32 * 1024, 71)])
    layer = image.layers[0]
    await import_bundle(config, _write(tmp_path / "private.tar", tar_bytes(
        layout_entries(image, f"{PRIVATE}/team/secret:1"))), quiet())
    assert links(root, layer.digest) == {PRIVATE}

    # the same image, its layer replaced by zeros of the same size, tagged on the public one
    name = "blobs/sha256/" + layer.digest.removeprefix("sha256:")
    forged = with_entry(layout_entries(image, f"{PUBLIC}/team/open:1"), name,
                        data=bytes(len(layer.data)))
    before = storage_snapshot(root), index_rows(root)
    try:
        await import_bundle(config, _write(tmp_path / "forged.tar", tar_bytes(forged)), quiet())
        refused = ""
    except BundleInvalid as exc:
        refused = str(exc)
    assert "do not match its name" in refused
    assert (storage_snapshot(root), index_rows(root)) == before

    client = await aiohttp_client(build_app(config, Metrics()))
    answer = await client.get(f"/v2/team/open/blobs/{layer.digest}", params={"ns": PUBLIC})
    body = await answer.read()
    assert answer.status != 200 and layer.data not in body


async def test_a_bundle_that_carries_the_bytes_links_them(
        tmp_path: Path, aiohttp_client: AiohttpClient) -> None:
    """The same import with the real bytes: they are verified (hashed, not written again) and
    linked, as a pull through the public upstream would."""
    config = make_config(tmp_path)
    root = config.storage.path
    image = make_image([make_layer(32 * 1024, 72)])
    layer = image.layers[0]
    await import_bundle(config, _write(tmp_path / "private.tar", tar_bytes(
        layout_entries(image, f"{PRIVATE}/team/secret:1"))), quiet())
    report = await import_bundle(config, _write(tmp_path / "public.tar", tar_bytes(
        layout_entries(image, f"{PUBLIC}/team/open:1"))), quiet())
    assert report.new_bytes == 0 and report.warnings == []
    assert links(root, layer.digest) == {PRIVATE, PUBLIC}

    client = await aiohttp_client(build_app(config, Metrics()))
    answer = await client.get(f"/v2/team/open/blobs/{layer.digest}", params={"ns": PUBLIC})
    assert answer.status == 200
    assert hashlib.sha256(await answer.read()).hexdigest() == layer.digest.split(":")[1]
    tags = index_rows(root)["tags"]
    assert {(t[0], t[1], t[2]) for t in tags} == {(PRIVATE, "team/secret", "1"),
                                                  (PUBLIC, "team/open", "1")}
    assert json.loads(image.manifest)["layers"][0]["digest"] == layer.digest


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)
