"""skopeo, a real client, pulling through edgecache as a registries.conf mirror.

The mirror is the only working path: skopeo's proxy settings make every non-loopback connection
fail (see tests/support/skopeo.py), so a pull that succeeds came through edgecache, which the
upstream and edgecache logs confirm. Everything pulled is compared, byte for byte, with what was
seeded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.corpus import HUB, Corpus, Seeded
from tests.support.edgecache import StartEdgecache
from tests.support.registry import DockerRegistry
from tests.support.skopeo import Skopeo, verify_dir_layout, verify_oci_layout

pytestmark = pytest.mark.integration


def reference(registry: str, seeded: Seeded) -> str:
    return f"docker://{registry}/{seeded.repository}:{seeded.tag}"


def test_domain_root_mirror_pulls_from_the_default_upstream(
        hub: DockerRegistry, registry_b: DockerRegistry, both_upstreams: dict[str, str],
        corpus: Corpus, edgecaches: StartEdgecache, skopeo: Skopeo, tmp_path: Path) -> None:
    ec = edgecaches("edgecache", both_upstreams, default_upstream=HUB)
    conf = skopeo.registries_conf({"docker.io": ec.address})  # Docker style: no registry named
    hub_mark, b_mark, ec_mark = hub.mark(), registry_b.mark(), ec.mark()

    for seeded in (corpus.multi, corpus.alpha):
        out = tmp_path / f"oci-{seeded.repository.replace('/', '-')}"
        skopeo.copy(reference("docker.io", seeded), f"oci:{out}", registries_conf=conf)
        verify_oci_layout(out, seeded)
    # a Docker schema 2 image, copied to dir: so no tool converts it: the manifest stays exact
    out = tmp_path / "dir-classic"
    skopeo.copy(reference("docker.io", corpus.classic), f"dir:{out}", registries_conf=conf)
    verify_dir_layout(out, corpus.classic)

    served = {(r.method, r.path) for r in ec.requests_since(ec_mark) if r.status == 200}
    for seeded in (corpus.multi, corpus.alpha, corpus.classic):
        # the request carried no registry name: the default upstream and library/ were implied
        assert ("GET", f"/v2/{seeded.repository}/manifests/{seeded.tag}") in served
        for digest in seeded.blobs:
            assert ("GET", f"/v2/{seeded.repository}/blobs/{digest}") in served
    hub_reads = hub.pulls_since(hub_mark)
    for seeded in (corpus.multi, corpus.alpha, corpus.classic):
        for digest in seeded.content:
            assert [r.method for r in hub_reads if r.path.endswith(digest)] == ["GET"]
    assert registry_b.pulls_since(b_mark) == []


def test_path_prefix_mirrors_route_each_registry_to_its_upstream(
        hub: DockerRegistry, registry_b: DockerRegistry, both_upstreams: dict[str, str],
        corpus: Corpus, edgecaches: StartEdgecache, skopeo: Skopeo, tmp_path: Path) -> None:
    ec = edgecaches("edgecache", both_upstreams)  # no default upstream: names are required
    conf = skopeo.registries_conf({
        "docker.io": f"{ec.address}/docker.io",
        "registry-b.test": f"{ec.address}/registry-b.test",
    })
    hub_mark, b_mark, ec_mark = hub.mark(), registry_b.mark(), ec.mark()

    pulls = [("docker.io", corpus.beta), ("registry-b.test", corpus.app),
             ("registry-b.test", corpus.app_multi)]
    for registry, seeded in pulls:
        out = tmp_path / f"oci-{registry}-{seeded.repository.replace('/', '-')}"
        skopeo.copy(reference(registry, seeded), f"oci:{out}", registries_conf=conf)
        verify_oci_layout(out, seeded)

    served = {(r.method, r.path) for r in ec.requests_since(ec_mark) if r.status == 200}
    for registry, seeded in pulls:
        assert ("GET", f"/v2/{registry}/{seeded.repository}/manifests/{seeded.tag}") in served
    hub_reads = hub.pulls_since(hub_mark)
    b_reads = registry_b.pulls_since(b_mark)
    assert hub_reads and all(r.path.startswith("/v2/library/beta/") for r in hub_reads)
    assert b_reads and all(r.path.startswith("/v2/team/") for r in b_reads)
    for seeded, reads in ((corpus.beta, hub_reads), (corpus.app, b_reads),
                          (corpus.app_multi, b_reads)):
        for digest in seeded.content:
            assert [r.method for r in reads if r.path.endswith(digest)] == ["GET"]


def test_direct_pull_by_host_and_path_prefix(
        registry_b: DockerRegistry, both_upstreams: dict[str, str], corpus: Corpus,
        edgecaches: StartEdgecache, skopeo: Skopeo, tmp_path: Path) -> None:
    """No registries.conf: skopeo talks to edgecache as a registry of its own."""
    ec = edgecaches("edgecache", both_upstreams)
    out = tmp_path / "oci-direct"
    skopeo.copy(f"docker://{ec.address}/registry-b.test/team/multi:2", f"oci:{out}",
                tls_verify=False)
    verify_oci_layout(out, corpus.app_multi)


def test_second_pull_asks_the_upstream_only_about_tags(
        hub: DockerRegistry, both_upstreams: dict[str, str], corpus: Corpus,
        edgecaches: StartEdgecache, skopeo: Skopeo, tmp_path: Path) -> None:
    ec = edgecaches("edgecache", both_upstreams, default_upstream=HUB)
    domain_root = skopeo.registries_conf({"docker.io": ec.address})
    path_prefix = skopeo.registries_conf({"docker.io": f"{ec.address}/docker.io"})
    images = (corpus.multi, corpus.alpha)
    for seeded in images:
        out = tmp_path / f"first-{seeded.repository.replace('/', '-')}"
        skopeo.copy(reference("docker.io", seeded), f"oci:{out}", registries_conf=domain_root)
        verify_oci_layout(out, seeded)

    # the same pull again, then once more by another route to the same upstream: the cache is
    # content-addressed, so only the tags are revalidated (HEAD), nothing is downloaded
    for round_, conf in (("again", domain_root), ("prefix", path_prefix)):
        mark = hub.mark()
        for seeded in images:
            out = tmp_path / f"{round_}-{seeded.repository.replace('/', '-')}"
            skopeo.copy(reference("docker.io", seeded), f"oci:{out}", registries_conf=conf)
            verify_oci_layout(out, seeded)
        reads = hub.pulls_since(mark)
        tag_heads = {f"/v2/{s.repository}/manifests/{s.tag}" for s in images}
        assert [r for r in reads if r.method != "HEAD" or r.path not in tag_heads] == []
        assert {r.path for r in reads} == tag_heads
