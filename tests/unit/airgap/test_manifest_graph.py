"""`reach`: the one bounded walk over the manifest graph (closures, what leaves with a blob,
an export's members)."""

from __future__ import annotations

from edgecache.airgap.manifest import Manifest
from edgecache.oci import GRAPH_DEPTH, manifest_children, reach
from tests.support.images import make_image, make_index, make_layer


def test_reach_walks_down_and_stops_at_the_leaves() -> None:
    graph = {"index": ["m1", "m2"], "m1": ["c", "l1"], "m2": ["c", "l2"]}
    stepped: list[str] = []

    def step(digest: str) -> list[str]:
        stepped.append(digest)
        return graph.get(digest, [])

    assert reach(["index"], step) == {"index", "m1", "m2", "c", "l1", "l2"}
    assert sorted(stepped) == sorted(["index", "m1", "m2", "c", "l1", "l2"])  # each once


def test_reach_is_bounded_on_a_cycle_and_a_chain() -> None:
    assert reach(["a"], lambda d: ["b"] if d == "a" else ["a"]) == {"a", "b"}
    chain = reach(["0"], lambda d: [str(int(d) + 1)])
    assert chain == {str(i) for i in range(GRAPH_DEPTH + 1)}
    assert reach(["0"], lambda d: [str(int(d) + 1)], depth=2) == {"0", "1", "2"}


def test_the_strict_reading_carries_the_lenient_references() -> None:
    """One read of a manifest answers both: what import checks and what the index records."""
    amd, arm = make_image([make_layer(100, 51)]), make_image([make_layer(100, 52)], "arm64")
    docker = make_image([make_layer(100, 53), make_layer(100, 54)], docker=True)
    index = make_index([amd, arm])
    for body, media_type in ((amd.manifest, amd.media_type), (docker.manifest, docker.media_type),
                             (index.manifest, index.media_type)):
        manifest = Manifest.parse(body, media_type, "m")
        assert [str(d) for d in manifest.references] == manifest_children(body)
    assert {str(d) for d in Manifest.parse(index.manifest, index.media_type, "m").references} \
        == {amd.digest, arm.digest}
    assert tuple(map(str, Manifest.parse(docker.manifest, None, "m").references)) == (
        docker.config.digest, *(layer.digest for layer in docker.layers))
