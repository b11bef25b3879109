"""The admin API (runtime pins) in-process: who may call it, and what bad input gets.

A peer off loopback gets 403 for every route (the metrics listener binds 0.0.0.0); a write
without a JSON body type gets 403 (a browser form on the node cannot post one); bad references
get 400 NAME_INVALID in OCI error JSON and pin nothing; the config's pins cannot be unpinned.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from pytest_aiohttp import AiohttpClient

from edgecache.airgap.selfpull import SelfPull
from edgecache.config import Config, from_mapping
from edgecache.ops.admin import _guard, admin_app, loopback
from edgecache.ops.pins import Pinning
from edgecache.storage.index import Index
from tests.support.waiting import await_until

DECLARED = "docker.io/library/base:1"


@pytest.mark.parametrize(("remote", "admitted"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("8.8.4.4", False), ("10.0.0.1", False), ("::ffff:8.8.4.4", False), ("fe80::1%eth0", False),
    ("", False), (None, False), ("not-an-address", False)])
def test_only_loopback_peers_are_admitted(remote: str | None, admitted: bool) -> None:
    assert loopback(remote) is admitted


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_a_network_peer_is_denied_before_any_handler(method: str) -> None:
    called = []

    async def handler(request: web.Request) -> web.StreamResponse:
        called.append(request)
        return web.Response()

    request = make_mocked_request(method, "/pins", headers={"Content-Type": "application/json"})
    response = await _guard(request.clone(remote="8.8.4.4"), handler)
    assert response.status == 403 and called == []
    assert isinstance(response, web.Response) and response.text is not None
    assert json.loads(response.text)["errors"][0]["code"] == "DENIED"
    assert (await _guard(request.clone(remote="127.0.0.1"), handler)).status == 200


def make_config(tmp_path: Path) -> Config:
    # the service's own listener is a port nothing answers on: a fetch fails, quickly
    return from_mapping({"listen": {"http": "127.0.0.1:9"}, "pins": [DECLARED],
                         "storage": {"path": str(tmp_path / "storage")}})


@pytest.fixture
async def pinning(tmp_path: Path) -> Pinning:
    config = make_config(tmp_path)
    index = Index(tmp_path / "index.db")
    made = Pinning(index, config, SelfPull(config))
    yield made
    await made.close()
    index.close()


async def test_writes_need_json_and_bad_references_pin_nothing(
        aiohttp_client: AiohttpClient, pinning: Pinning, tmp_path: Path) -> None:
    client = await aiohttp_client(admin_app(pinning))
    form = await client.post("/pins", data="references=docker.io/library/x:1",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status == 403
    bad = await client.post("/pins", json={"references": ["docker.io/library/ok:1", "nope",
                                                          "else.test/x:1"]})
    assert bad.status == 400
    error = (await bad.json())["errors"][0]
    assert error["code"] == "NAME_INVALID" and "'nope'" in error["message"]
    assert "configured upstream" in error["message"] and "\n" not in error["message"]
    for body in ("{", "[]", json.dumps({"references": "docker.io/x:1"}),
                 json.dumps({"references": ["docker.io/x:1"], "wait": "yes"})):
        answer = await client.post("/pins", data=body,
                                   headers={"Content-Type": "application/json"})
        assert answer.status == 400, body
    assert (await client.get("/pins")).status == 200
    assert [p["reference"] for p in (await (await client.get("/pins")).json())["pins"]] == \
        [DECLARED]


async def test_pin_records_and_fetches_in_the_background_unpin_keeps_the_config_base(
        aiohttp_client: AiohttpClient, pinning: Pinning, tmp_path: Path) -> None:
    client = await aiohttp_client(admin_app(pinning))
    wanted = "docker.io/library/wanted:1"
    answer = await client.post("/pins", json={"references": [wanted], "wait": False})
    assert answer.status == 202 and (await answer.json()) == {"pinned": [wanted]}

    def failed() -> bool:
        return {p["reference"]: p["state"] for p in pinning.listing()}[wanted] == "failed"

    await await_until(failed, "the fetch ended (nothing answers on the listener)")
    listed = {p["reference"]: p for p in (await (await client.get("/pins")).json())["pins"]}
    assert listed[wanted]["source"] == "runtime" and "answer" in str(listed[wanted]["error"])
    gone = await client.delete("/pins", params=[("reference", wanted), ("reference", DECLARED),
                                                ("reference", "docker.io/library/never:1")])
    doc = await gone.json()
    assert doc["removed"] == [wanted]
    assert doc["refused"] == {DECLARED: "pinned by the config (pins:); remove it there",
                              "docker.io/library/never:1": "not pinned"}
    assert (await client.delete("/pins")).status == 400
