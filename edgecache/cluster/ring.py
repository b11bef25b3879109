"""Who owns what: rendezvous (highest-random-weight) hashing over the live peers.

Each key (a digest, or a tag as upstream/repository:tag) gives every peer a weight, a hash of
the peer's URL and the key; the owner is the peer of highest weight and the rest, by weight,
are the fallback order. When a peer leaves only the keys it owned move (to their second
choice), and every node that sees the same live set computes the same owner with no
coordination: the scheme CARP and Varnish's shard director use to pick a parent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def weight(peer: str, key: str) -> int:
    """A 64-bit weight; blake2b so that no peer URL can be chosen to win every key."""
    digest = hashlib.blake2b(f"{peer}\n{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def order(peers: Iterable[str], key: str) -> list[str]:
    """`peers` from the owner of `key` down (ties broken by URL, so the order is total)."""
    return sorted(set(peers), key=lambda peer: (-weight(peer, key), peer))


def owner(peers: Iterable[str], key: str) -> str | None:
    ranked = order(peers, key)
    return ranked[0] if ranked else None


def tag_key(upstream: str, repository: str, tag: str) -> str:
    """A tag's key: a tag is owned apart from the digest it names (it moves; digests don't)."""
    return f"tag {upstream}/{repository}:{tag}"
