"""The referrers of an image from an OCI 1.1 upstream (the fake: docker-registry 2.8 has no
referrers API; tests/integration/test_airgap_referrers.py covers the tag schema) across the air
gap: warm keeps the upstream's answer, export carries it as the `sha256-<hex>` tag, and after
import the referrers API answers from it with the upstream unreachable."""

from __future__ import annotations

import io
import json
from pathlib import Path

from pytest_aiohttp import AiohttpClient

from edgecache.airgap.export import export
from edgecache.airgap.importer import import_bundle
from edgecache.airgap.progress import Progress
from edgecache.airgap.warm import warm
from edgecache.app import build_app
from edgecache.metrics import Metrics
from tests.fakes.registry import FakeRegistry
from tests.support.artifacts import SBOM, SIGNATURE, descriptor, make_artifact
from tests.support.images import make_image, make_layer
from tests.support.registry import free_port
from tests.unit.airgap.test_airgap_bundle import UPSTREAM, make_config

REPO = "team/signed"



def quiet() -> Progress:
    return Progress("working", "items", io.StringIO(), tty=False)


async def test_an_oci_upstreams_referrers_cross_the_air_gap(
        fake: FakeRegistry, tmp_path: Path, aiohttp_client: AiohttpClient) -> None:
    image = make_image([make_layer(4000, 31)])
    fake.add_image(REPO, image, tags=["1"])
    artifacts = [make_artifact(image, SIGNATURE, b'{"sig": 31}'),
                 make_artifact(image, SBOM, b'{"sbom": 31}')]
    fake.referrers_api = True
    for artifact in artifacts:
        fake.add_image(REPO, artifact, tags=())
        fake.add_referrer(REPO, image.digest, descriptor(artifact))
    config_a = make_config(tmp_path / "a", fake.url, tag_ttl="0s")
    report = await warm(config_a, [f"{UPSTREAM}/{REPO}:1"], quiet())
    assert not report.failed
    bundle = tmp_path / "bundle.tar.zst"
    exported = export(config_a, [f"{UPSTREAM}/{REPO}:1"], str(bundle), quiet())
    schema_name = f"{UPSTREAM}/{REPO}:sha256-{image.digest[7:]}"
    assert [i.root.name for i in exported.items] == [f"{UPSTREAM}/{REPO}:1", schema_name]

    unreachable = f"http://127.0.0.1:{free_port()}"
    config_b = make_config(tmp_path / "b", unreachable, tag_ttl="0s")
    assert (await import_bundle(config_b, str(bundle), quiet())).warnings == []
    client = await aiohttp_client(build_app(config_b, Metrics()))
    async with client.get(f"/v2/{REPO}/referrers/{image.digest}",
                          params={"artifactType": SIGNATURE}) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["OCI-Filters-Applied"] == "artifactType"
        doc = json.loads(await resp.read())
    assert doc["manifests"] == [descriptor(artifacts[0])]
    for artifact in artifacts:
        async with client.get(f"/v2/{REPO}/manifests/{artifact.digest}") as resp:
            assert resp.status == 200 and await resp.read() == artifact.manifest
        async with client.get(f"/v2/{REPO}/blobs/{artifact.layers[0].digest}") as resp:
            assert await resp.read() == artifact.layers[0].data
