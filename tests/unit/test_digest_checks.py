"""`Hashing`: the one comparison of content against the digest that names it."""

from __future__ import annotations

import pytest

from edgecache.errors import DigestMismatch
from edgecache.oci import Digest, Hashing


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_hashing_matches_its_digest_across_pieces(algorithm: str) -> None:
    data = b"edgecache" * 1000
    hashing = Hashing(Digest.of(data, algorithm))
    for start in range(0, len(data), 777):
        hashing.update(memoryview(data)[start:start + 777])
    assert hashing.matches()
    assert hashing.actual() == Digest.of(data, algorithm)
    hashing.check()


def test_a_mismatch_names_both_digests() -> None:
    expected = Digest.of(b"one")
    hashing = Hashing(expected)
    hashing.update(b"two")
    assert not hashing.matches()
    with pytest.raises(DigestMismatch) as caught:
        hashing.check()
    assert caught.value.expected == str(expected)
    assert caught.value.actual == str(Digest.of(b"two"))
