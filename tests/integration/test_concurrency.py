"""Twenty clients at once for one cold 32 MiB blob: one upstream download, twenty right answers.
On plain HTTP the followers are sent the download's file with sendfile; over HTTPS it is read
and written in pieces: both ways are checked."""

from __future__ import annotations

import hashlib
import ssl
import threading
import urllib.request

import pytest

from tests.support.corpus import HUB, Corpus
from tests.support.edgecache import StartEdgecache
from tests.support.registry import DockerRegistry

pytestmark = pytest.mark.integration

CLIENTS = 20


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_concurrent_gets_of_a_cold_blob_download_it_once(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, scheme: str) -> None:
    big = corpus.big
    hub.push_blob("library/big", big)
    ec = edgecaches("edgecache", {HUB: hub.url}, default_upstream=HUB, tls=scheme == "https")
    mark = hub.mark()
    base = ec.url
    context = None
    if scheme == "https":
        assert ec.https_url is not None
        base = ec.https_url
        context = ssl.create_default_context(cafile=str(ec.storage / "tls" / "ca.crt"))
    url = f"{base}/v2/library/big/blobs/{big.digest}"

    start = threading.Barrier(CLIENTS, timeout=30)
    results: list[tuple[int, int, str] | BaseException] = [ValueError("no result")] * CLIENTS

    def client(slot: int) -> None:
        try:
            start.wait()
            digest, size = hashlib.sha256(), 0
            with urllib.request.urlopen(url, timeout=60, context=context) as resp:
                status = resp.status
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
            results[slot] = (status, size, "sha256:" + digest.hexdigest())
        except BaseException as exc:  # reported below, in the test's thread
            results[slot] = exc

    threads = [threading.Thread(target=client, args=(slot,), name=f"client-{slot}")
               for slot in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not any(thread.is_alive() for thread in threads), "a client hung"

    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert results == [(200, len(big.data), big.digest)] * CLIENTS

    reads = hub.pulls_since(mark)
    assert [(r.method, r.status) for r in reads if r.path.endswith(big.digest)] == [("GET", 200)]
    # and it is cached: stored once, whole
    assert ec.stored_blobs()[big.digest] == len(big.data)
