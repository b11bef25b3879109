"""Rendezvous hashing: every node computes the same owner, and a node leaving moves only the
keys it owned."""

from __future__ import annotations

from collections import Counter

from edgecache.cluster.ring import order, owner, tag_key

PEERS = [f"http://10.0.0.{i}:5000" for i in range(1, 6)]
KEYS = [f"sha256:{i:064x}" for i in range(2000)]


def test_the_owner_does_not_depend_on_how_the_list_is_written() -> None:
    for key in KEYS[:200]:
        assert owner(PEERS, key) == owner(list(reversed(PEERS)), key)
        assert order(PEERS, key) == order(PEERS + PEERS[:2], key)  # duplicates are one node


def test_a_node_leaving_moves_only_its_own_keys_to_their_second_choice() -> None:
    gone = PEERS[2]
    rest = [p for p in PEERS if p != gone]
    for key in KEYS:
        before = order(PEERS, key)
        after = owner(rest, key)
        if before[0] == gone:
            assert after == before[1]
        else:
            assert after == before[0]


def test_keys_spread_over_every_node() -> None:
    counts = Counter(owner(PEERS, key) for key in KEYS)
    assert set(counts) == set(PEERS)
    assert min(counts.values()) > len(KEYS) / len(PEERS) / 2  # no node starved


def test_a_tag_is_owned_apart_from_its_digest_and_by_its_route() -> None:
    assert tag_key("docker.io", "library/alpine", "3") != tag_key("ghcr.io", "library/alpine", "3")
    assert owner([], "anything") is None
