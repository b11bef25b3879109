"""`reach`: the one bounded walk over the manifest graph (closures, what leaves with a blob,
an export's members)."""

from __future__ import annotations

from edgecache.oci import GRAPH_DEPTH, reach


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
