"""A signed image across the air gap: `warm` takes its referrers (a signature, an SBOM) along,
`export` carries them as the referrers tag schema, and after `import` on a site whose upstream
cannot be reached the referrers API answers for the image, and the signature and its payload
are served, all from the imported content."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_airgap import dead_url, edgecache, ok, write_config
from tests.support.artifacts import SIGNATURE, descriptor, push_signed
from tests.support.corpus import HUB
from tests.support.edgecache import StartEdgecache
from tests.support.httpclient import fetch
from tests.support.registry import DockerRegistry

pytestmark = pytest.mark.integration

REPO = "team/signed"


def test_a_signature_verifies_on_the_far_side_of_the_air_gap(
        tmp_path: Path, edgecaches: StartEdgecache) -> None:
    registry = DockerRegistry(tmp_path / "registry")
    try:
        image, artifacts = push_signed(registry, REPO, "v1", 501)
        side_a = write_config(tmp_path / "a.yaml", tmp_path / "a", registry.url)
        ok(edgecache("warm", "--config", side_a, f"{HUB}/{REPO}:v1"))
    finally:
        registry.close()
    bundle = tmp_path / "signed.tar.zst"  # the upstream is gone from here on
    exported = ok(edgecache("export", "--config", side_a, f"{HUB}/{REPO}:v1",
                            "--output", str(bundle)))
    assert f"{HUB}/{REPO}:sha256-{image.digest[7:]}" in exported

    upstream = dead_url()
    side_b = write_config(tmp_path / "b.yaml", tmp_path / "b", upstream)
    ok(edgecache("import", "--config", side_b, str(bundle)))
    served = edgecaches("b", {HUB: upstream}, default_upstream=HUB, storage=tmp_path / "b")

    answer = fetch(f"{served.url}/v2/{REPO}/referrers/{image.digest}")
    assert answer.status == 200, answer.body[:300]
    assert json.loads(answer.body)["manifests"] == [descriptor(a) for a in artifacts]
    answer = fetch(f"{served.url}/v2/{REPO}/referrers/{image.digest}?artifactType={SIGNATURE}")
    assert json.loads(answer.body)["manifests"] == [descriptor(artifacts[0])]
    for artifact in artifacts:
        manifest = fetch(f"{served.url}/v2/{REPO}/manifests/{artifact.digest}",
                         headers={"Accept": artifact.media_type})
        assert (manifest.status, manifest.body) == (200, artifact.manifest)
        for blob in artifact.blobs:
            assert fetch(f"{served.url}/v2/{REPO}/blobs/{blob.digest}").body == blob.data
