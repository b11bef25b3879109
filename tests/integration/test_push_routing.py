"""Pushed content pulled by containerd through the node that took the push, by every routing
style: a mirror (`?ns=registry.local`), the path prefix (`<node>/registry.local/...`) and the
default route (`<node>/...`: no upstream is the default, so the local registry is)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_push import LOCAL, skopeo_push, start_local
from tests.support.containerd import Containerd, write_hosts
from tests.support.corpus import Corpus
from tests.support.edgecache import StartEdgecache
from tests.support.registry import DockerRegistry
from tests.support.skopeo import Skopeo

pytestmark = pytest.mark.integration


def _direct_hosts(hosts: Path, address: str) -> None:
    """containerd talks to the node itself, over plain HTTP: no mirror, so no `ns`."""
    directory = hosts / address
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.toml").write_text(
        f'server = "http://{address}"\n\n[host."http://{address}"]\n'
        '  capabilities = ["pull", "resolve"]\n')


def test_containerd_pulls_pushed_content_by_every_routing_style(
        registry_b: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache,
        skopeo: Skopeo, containerd: Containerd, tmp_path: Path) -> None:
    ec = start_local(edgecaches, registry_b, tmp_path)  # no default_upstream
    source = f"docker://{registry_b.url.removeprefix('http://')}/{corpus.app_multi.repository}:2"
    pushed = skopeo_push(skopeo, source, f"docker://{ec.address}/{LOCAL}/team/routed:2")
    assert pushed.returncode == 0, pushed.stderr[-3000:]

    hosts = tmp_path / "hosts"
    write_hosts(hosts, LOCAL, ec.url)
    _direct_hosts(hosts, ec.address)
    styles = {
        f"{LOCAL}/team/routed:2": f"/v2/team/routed/manifests/2?ns={LOCAL}",
        f"{ec.address}/{LOCAL}/team/routed:2": f"/v2/{LOCAL}/team/routed/manifests/2",
        f"{ec.address}/team/routed:2": "/v2/team/routed/manifests/2",
    }
    for ref, path in styles.items():
        mark = ec.mark()
        containerd.pull(ref, hosts)
        assert containerd.image_digest(ref) == corpus.app_multi.top.digest
        seen = ec.requests_since(mark)
        assert any(r.path == path and r.status == 200 for r in seen), (ref, seen)
        # the blobs came this way too (the previous pull's content was removed)
        assert any("/blobs/sha256:" in r.path and r.status == 200 for r in seen), (ref, seen)
        containerd.remove_images(ref)
