"""Layer prefetch's schedule: on a manifest's first pull the config goes first, then the layers
largest first, at most `WIDTH` of the image's blobs downloading at once, the next started as
one ends. (edgecache's app in-process; the fake upstream holds each blob after its first bytes
until the test lets it go, so what runs at each moment is visible at the upstream.)"""

from __future__ import annotations

from tests.fakes.registry import BlobFault, FakeRegistry
from tests.support.images import OCI_MANIFEST, make_image, make_layer
from tests.unit.conftest import MakeEdge
from tests.unit.edge_runner import poll

REPO = "team/app"
SIZES = [20_000, 90_000, 40_000, 70_000, 30_000, 60_000, 10_000]  # not in size order
WIDTH = 4  # edgecache.proxy.prefetch.WIDTH, stated here: the test pins the behaviour


def _blob_gets(fake: FakeRegistry) -> list[str]:
    """The digests of blob GETs the upstream received, in arrival order."""
    return [r.path.rsplit("/", 1)[-1] for r in fake.api_requests("GET") if "/blobs/" in r.path]


async def test_the_config_then_the_largest_layers_a_few_at_a_time(
        fake: FakeRegistry, make_edge: MakeEdge) -> None:
    layers = [make_layer(size, seed=900 + i) for i, size in enumerate(SIZES)]
    image = make_image(layers)
    fake.add_image(REPO, image, tags=["1"])
    ordered = sorted(layers, key=lambda b: -len(b.data))
    blobs = [image.config, *ordered]
    gates = {b.digest: fake.fault(b.digest, BlobFault(gate_after=1000)).gate for b in ordered}
    edge = await make_edge(top={"prefetch": {"layers": True}})
    try:
        answer = await edge.client.get(f"/v2/{REPO}/manifests/1",
                                       headers={"Accept": OCI_MANIFEST})
        assert answer.status == 200
        # the config (smaller than the gate: it ends at once) and the largest layers
        assert await poll(lambda: len(_blob_gets(fake)) >= WIDTH + 1), _blob_gets(fake)
        first = _blob_gets(fake)
        assert set(first) == {b.digest for b in blobs[:WIDTH + 1]}, first  # not every blob
        for ended, blob in enumerate(ordered[:len(ordered) - WIDTH], start=1):
            gates[blob.digest].set()  # one ends: exactly one more starts, the next largest
            started = WIDTH + 1 + ended
            assert await poll(lambda: len(_blob_gets(fake)) >= started)  # noqa: B023
            assert _blob_gets(fake)[WIDTH + 1:] == [b.digest for b in ordered[WIDTH:WIDTH + ended]]
    finally:
        for gate in gates.values():
            gate.set()
    for blob in blobs:  # all published; the client's asks are answered from the cache
        assert await edge.wait_published(blob.digest), blob.digest
        got = await edge.client.get(f"/v2/{REPO}/blobs/{blob.digest}")
        assert got.status == 200 and await got.read() == blob.data
    assert sorted(_blob_gets(fake)) == sorted(b.digest for b in blobs)  # each once

