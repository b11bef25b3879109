"""The access log tells the truth about bytes (issue 14 item 6), with a real client and a real
upstream: skopeo pulls an image twice through edgecache on plain HTTP (the second time every
blob is a cache hit, sent with os.sendfile past aiohttp's writer, which logged only the headers:
460 bytes for a 25 MB layer); every blob GET's line must name the blob's size."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.corpus import HUB, Corpus
from tests.support.edgecache import ACCESS_RE, StartEdgecache
from tests.support.registry import DockerRegistry
from tests.support.skopeo import Skopeo, verify_oci_layout

pytestmark = pytest.mark.integration

LINE_RE = re.compile(ACCESS_RE.pattern + r" (?P<bytes>\d+) ")


def test_cache_hits_on_plain_http_are_logged_with_their_body_bytes(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, skopeo: Skopeo,
        tmp_path: Path) -> None:
    ec = edgecaches("edgecache", {HUB: hub.url}, default_upstream=HUB)
    seeded = corpus.alpha
    for run in ("cold", "warm"):
        out = tmp_path / f"oci-{run}"
        skopeo.copy(f"docker://{ec.address}/{seeded.repository}:{seeded.tag}", f"oci:{out}",
                    tls_verify=False)
        verify_oci_layout(out, seeded)
    ec.mark()  # the log has every line

    blob_lines = [m for m in LINE_RE.finditer(ec.log())
                  if m["method"] == "GET" and "/blobs/" in m["path"] and m["status"] == "200"]
    sizes = ec.stored_blobs()
    assert len(blob_lines) >= 2 * len(seeded.blobs) - 1  # skopeo may skip the config once
    for line in blob_lines:
        digest = line["path"].rsplit("/", 1)[1].split("?", 1)[0]
        assert int(line["bytes"]) == sizes[digest], line.group(0)
    largest = max(seeded.blobs, key=lambda d: sizes[d])
    hits = [m for m in blob_lines if m["path"].endswith(largest)]
    assert len(hits) == 2 and all(int(m["bytes"]) == sizes[largest] for m in hits)
