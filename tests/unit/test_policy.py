"""The eviction policy as pure functions: budget, how much to free, which blobs go.

Examples pin the documented rules down; properties (hypothesis) check them over arbitrary
inputs, against a declarative statement of the rule rather than a copy of the algorithm.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.policy import Entry, Limits, Usage, budget, bytes_to_free, choose_victims, closure

MiB = 1 << 20
GiB = 1 << 30


# ---- budget -------------------------------------------------------------------------------------


def test_budget_is_max_size_when_the_disk_has_room() -> None:
    assert budget(Limits(max_size=20 * GiB, min_free=0), Usage(5 * GiB, 500 * GiB)) == 20 * GiB


def test_budget_is_what_the_disk_can_give_while_keeping_min_free() -> None:
    # 3 GiB cached + 4 GiB free - 1 GiB kept free: the cache may hold 6 GiB, not 20
    limits = Limits(max_size=20 * GiB, min_free=1 * GiB)
    assert budget(limits, Usage(3 * GiB, 4 * GiB)) == 6 * GiB


def test_budget_without_max_size_is_bound_by_the_disk_only() -> None:
    assert budget(Limits(max_size=None, min_free=2 * GiB), Usage(1 * GiB, 10 * GiB)) == 9 * GiB


def test_budget_is_never_negative() -> None:
    # another tenant filled the disk beyond min_free: no room at all, not a negative budget
    assert budget(Limits(max_size=None, min_free=5 * GiB), Usage(1 * GiB, 1 * GiB)) == 0


def test_a_reservation_is_not_counted_as_free_disk_as_well() -> None:
    # 6 GiB promised to a download that has not written yet: the disk still shows them free,
    # so the cache may hold 10 GiB in all, not 16
    limits = Limits(max_size=None, min_free=0)
    assert budget(limits, Usage(cache_bytes=6 * GiB, fs_free=10 * GiB, reserved=6 * GiB)) \
        == 10 * GiB
    assert bytes_to_free(limits, Usage(6 * GiB, 10 * GiB, 6 * GiB), incoming=6 * GiB) > 0


sizes_st = st.integers(min_value=0, max_value=1 << 44)


@given(max_size=st.none() | sizes_st, min_free=sizes_st, cache=sizes_st, free=sizes_st,
       reserved_part=st.floats(0, 1))
def test_budget_never_exceeds_max_size_or_the_disk(max_size: int | None, min_free: int,
                                                   cache: int, free: int,
                                                   reserved_part: float) -> None:
    reserved = int(cache * reserved_part)  # of the cache's bytes, not written yet
    result = budget(Limits(max_size, min_free), Usage(cache, free, reserved))
    assert result >= 0
    if max_size is not None:
        assert result <= max_size
    # what is on disk (cache minus reservations) plus what is free, minus what must stay free
    assert result <= max(0, cache - reserved + free - min_free)


# ---- bytes_to_free ------------------------------------------------------------------------------


def test_nothing_to_free_below_the_high_watermark() -> None:
    limits = Limits(max_size=100 * MiB, min_free=0, high_watermark=0.9, low_watermark=0.5)
    assert bytes_to_free(limits, Usage(80 * MiB, 1 * GiB), incoming=10 * MiB) == 0  # 90 = 90%


def test_above_the_high_watermark_free_down_to_the_low_one() -> None:
    limits = Limits(max_size=100 * MiB, min_free=0, high_watermark=0.9, low_watermark=0.5)
    # 80 cached + 20 incoming = 100 > 90: go down to 50 after the incoming bytes
    assert bytes_to_free(limits, Usage(80 * MiB, 1 * GiB), incoming=20 * MiB) == 50 * MiB


def test_a_shrinking_disk_makes_room_to_free_without_incoming_bytes() -> None:
    # other tenants took the disk: budget is 10 + 2 - 4 = 8 GiB, the cache holds 10
    limits = Limits(max_size=None, min_free=4 * GiB)
    need = bytes_to_free(limits, Usage(10 * GiB, 2 * GiB))
    assert need == 10 * GiB - int(8 * GiB * 0.85)


watermarks = st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0)).map(sorted)


@given(max_size=st.none() | sizes_st, min_free=sizes_st, cache=sizes_st, free=sizes_st,
       incoming=sizes_st, marks=watermarks)
def test_bytes_to_free_lands_at_the_low_watermark(max_size: int | None, min_free: int,
                                                  cache: int, free: int, incoming: int,
                                                  marks: list[float]) -> None:
    low, high = marks
    limits = Limits(max_size, min_free, high_watermark=high, low_watermark=low)
    usage = Usage(cache, free)
    total = budget(limits, usage)
    need = bytes_to_free(limits, usage, incoming)
    after = cache + incoming
    if after <= total * high:
        assert need == 0
    else:
        assert 0 < need <= after
        assert after - need <= total * low + 1  # at (or below) the low watermark


# ---- choose_victims -----------------------------------------------------------------------------


class Graph:
    """Manifests → children references, as the index stores them."""

    def __init__(self, refs: Iterable[tuple[str, str]] = ()) -> None:
        self.parents_of: dict[str, set[str]] = defaultdict(set)
        self.children_of: dict[str, set[str]] = defaultdict(set)
        for parent, child in refs:
            self.parents_of[child].add(parent)
            self.children_of[parent].add(child)

    def parents(self, digest: str) -> list[str]:
        return sorted(self.parents_of.get(digest, ()))

    def children(self, digest: str) -> list[str]:
        return sorted(self.children_of.get(digest, ()))

    def ancestors(self, digest: str) -> set[str]:
        """`digest` and everything above it (unbounded: test graphs are shallow and acyclic)."""
        found, todo = {digest}, [digest]
        while todo:
            for parent in self.parents_of.get(todo.pop(), ()):
                if parent not in found:
                    found.add(parent)
                    todo.append(parent)
        return found


def entries_of(spec: dict[str, tuple[int, float]]) -> list[Entry]:
    """In the order `Index.lru` reads them: oldest access first, then by digest."""
    return sorted((Entry(d, size, access) for d, (size, access) in spec.items()),
                  key=lambda e: (e.last_access, e.digest))


def sizes_of(spec: dict[str, tuple[int, float]]) -> dict[str, int]:
    return {d: size for d, (size, _) in spec.items()}


def size_of(spec: dict[str, tuple[int, float]]) -> Callable[[str], int]:
    return sizes_of(spec).__getitem__


def test_least_recently_used_goes_first_and_only_as_much_as_needed() -> None:
    spec = {"new": (10, 300.0), "old": (10, 100.0), "mid": (10, 200.0)}
    victims = choose_victims(entries_of(spec), 15, set(), Graph().parents, size_of(spec))
    assert victims == ["old", "mid"]


def test_nothing_needed_nothing_chosen() -> None:
    spec = {"a": (10, 1.0)}
    assert choose_victims(entries_of(spec), 0, set(), Graph().parents, size_of(spec)) == []


def test_a_protected_digest_is_never_chosen_even_when_that_frees_too_little() -> None:
    spec = {"pinned": (100, 1.0), "other": (10, 2.0)}
    victims = choose_victims(entries_of(spec), 1000, {"pinned"}, Graph().parents, size_of(spec))
    assert victims == ["other"]


def test_a_blob_takes_the_manifests_that_reference_it_along() -> None:
    # index → manifest → layer: evicting the old layer takes both manifests, transitively
    graph = Graph([("index", "manifest"), ("manifest", "layer"), ("manifest", "config")])
    spec = {"layer": (50, 1.0), "config": (1, 9.0), "manifest": (2, 9.0), "index": (1, 9.0),
            "unrelated": (50, 5.0)}
    victims = choose_victims(entries_of(spec), 10, set(), graph.parents, size_of(spec))
    assert sorted(victims) == ["index", "layer", "manifest"]
    assert "unrelated" not in victims


def test_a_blob_whose_parent_is_protected_stays() -> None:
    # the shared layer is oldest, but a pinned image references it: the next one goes instead
    graph = Graph([("pinned-manifest", "shared"), ("other-manifest", "shared"),
                   ("other-manifest", "own")])
    spec = {"shared": (50, 1.0), "own": (50, 2.0), "other-manifest": (1, 3.0),
            "pinned-manifest": (1, 4.0)}
    victims = choose_victims(entries_of(spec), 10, {"pinned-manifest"}, graph.parents,
                             size_of(spec))
    assert sorted(victims) == ["other-manifest", "own"]


def test_a_blob_whose_grandparent_is_protected_stays() -> None:
    graph = Graph([("pinned-index", "manifest"), ("manifest", "layer")])
    spec = {"layer": (50, 1.0), "manifest": (1, 1.0), "pinned-index": (1, 1.0)}
    victims = choose_victims(entries_of(spec), 10, {"pinned-index"}, graph.parents,
                             size_of(spec))
    assert victims == []


@st.composite
def cache_graphs(draw: st.DrawFn) -> tuple[dict[str, tuple[int, float]], Graph, set[str], int]:
    """A cache of layers, image manifests over them and indexes over the manifests, with random
    sizes, access times (ties included), protected digests and a need."""
    layers = [f"l{i}" for i in range(draw(st.integers(1, 8)))]
    manifests = [f"m{i}" for i in range(draw(st.integers(0, 5)))]
    indexes = [f"x{i}" for i in range(draw(st.integers(0, 2)))]
    refs = []
    for manifest in manifests:
        for child in draw(st.sets(st.sampled_from(layers), min_size=1, max_size=4)):
            refs.append((manifest, child))
    for index in indexes:
        if manifests:
            for child in draw(st.sets(st.sampled_from(manifests), min_size=1, max_size=3)):
                refs.append((index, child))
    spec = {d: (draw(st.integers(0, 100)), float(draw(st.integers(0, 5))))
            for d in layers + manifests + indexes}
    protected = draw(st.sets(st.sampled_from(sorted(spec)), max_size=3))
    need = draw(st.integers(0, 400))
    return spec, Graph(refs), protected, need


@settings(max_examples=300)
@given(cache_graphs())
def test_victims_are_the_shortest_lru_prefix_of_evictable_entries_with_their_parents(
        case: tuple[dict[str, tuple[int, float]], Graph, set[str], int]) -> None:
    spec, graph, protected, need = case
    sizes = sizes_of(spec)
    victims = choose_victims(entries_of(spec), need, protected, graph.parents,
                             sizes.__getitem__)

    assert len(victims) == len(set(victims))
    chosen = set(victims)
    assert not chosen & protected
    for digest in chosen:
        # whatever goes takes every manifest above it along, and nothing above it is protected
        assert graph.ancestors(digest) <= chosen
        assert not graph.ancestors(digest) & protected

    # The rule, stated declaratively: walk the evictable entries oldest first (ties by digest);
    # the victims are the smallest prefix of that walk, with ancestors, that frees `need`.
    evictable = sorted((d for d in spec if not graph.ancestors(d) & protected),
                       key=lambda d: (spec[d][1], d))
    expected: set[str] = set()
    for digest in evictable:
        if sum(sizes[d] for d in expected) >= need:
            break
        expected |= graph.ancestors(digest)
    assert chosen == expected


# ---- closure ------------------------------------------------------------------------------------


def test_closure_reaches_from_an_index_down_to_layers() -> None:
    graph = Graph([("index", "m1"), ("index", "m2"), ("m1", "config1"), ("m1", "layer"),
                   ("m2", "layer"), ("other", "layer2")])
    assert closure(["index"], graph.children) == {"index", "m1", "m2", "config1", "layer"}
    assert closure([], graph.children) == set()


@pytest.mark.parametrize("roots", [["m1"], ["layer"]])
def test_closure_includes_the_roots_themselves(roots: list[str]) -> None:
    graph = Graph([("m1", "layer")])
    assert set(roots) <= closure(roots, graph.children)
