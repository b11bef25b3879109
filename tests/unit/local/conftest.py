"""A local registry (`local:`) on edgecache's real app, and a small push client over it."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse

from tests.support.htpasswd import write_htpasswd
from tests.support.images import Image, sha256
from tests.unit.conftest import Edge, MakeEdge

LOCAL = "registry.local"
USER, PASSWORD = "pusher", "s3cret"


def basic(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@dataclass
class Pusher:
    edge: Edge
    headers: dict[str, str]
    repo: str = f"{LOCAL}/team/app"

    def url(self, tail: str) -> str:
        return f"/v2/{self.repo}/{tail}"

    async def request(self, method: str, path: str, **kwargs: Any) -> ClientResponse:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        async with self.edge.client.request(method, path, headers=headers, **kwargs) as resp:
            await resp.read()
            return resp

    async def blob(self, data: bytes) -> str:
        digest = sha256(data)
        resp = await self.request("POST", self.url(f"blobs/uploads/?digest={digest}"), data=data)
        assert resp.status == 201, await resp.text()
        return digest

    async def image(self, image: Image, tag: str = "v1") -> ClientResponse:
        for blob in image.blobs:
            await self.blob(blob.data)
        return await self.request("PUT", self.url(f"manifests/{tag}"), data=image.manifest,
                                  headers={"Content-Type": image.media_type})

    async def manifest(self, doc: dict[str, Any], ref: str) -> ClientResponse:
        return await self.request("PUT", self.url(f"manifests/{ref}"),
                                  data=json.dumps(doc).encode(),
                                  headers={"Content-Type": doc["mediaType"]})


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    write_htpasswd(path, USER, PASSWORD)
    return path


@pytest.fixture
async def local_edge(make_edge: MakeEdge, htpasswd: Path) -> Edge:
    return await make_edge(top={"auth": {"htpasswd_file": str(htpasswd)},
                                "local": {"registry": LOCAL}})


@pytest.fixture
def pusher(local_edge: Edge) -> Pusher:
    return Pusher(local_edge, basic())
