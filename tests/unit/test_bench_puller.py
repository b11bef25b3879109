"""The benchmark client's sampled check (bench/puller.py): it stands in for hashing 49 of 50
copies, so it must not depend on how the bytes arrived, and must see a wrong or misplaced byte
in the sampled windows and in the tail."""

from __future__ import annotations

import random

from bench.puller import SAMPLE_EVERY, SAMPLE_SPAN, Body


def sample(data: bytes, pieces: list[int]) -> int:
    body = Body(len(data), sample=True, hasher=None)
    view, at = memoryview(data), 0
    for size in pieces:
        body.feed(view[at:at + size])
        at += size
    body.feed(view[at:])
    assert body.pos == len(data)
    return body.crc


def test_sample_does_not_depend_on_how_the_body_arrived() -> None:
    rng = random.Random(7)
    data = rng.randbytes(5 * SAMPLE_EVERY + 12345)
    whole = sample(data, [])
    for _ in range(20):
        pieces = [rng.choice([1, 100, SAMPLE_SPAN - 1, SAMPLE_SPAN, SAMPLE_EVERY + 3, 65536])
                  for _ in range(rng.randrange(1, 40))]
        assert sample(data, pieces) == whole


def test_sample_sees_a_changed_byte_in_a_window_and_in_the_tail() -> None:
    data = random.Random(8).randbytes(3 * SAMPLE_EVERY + 10000)
    whole = sample(data, [])
    for at in (0, SAMPLE_SPAN - 1, 2 * SAMPLE_EVERY + 5, len(data) - 1, len(data) - SAMPLE_SPAN):
        changed = bytearray(data)
        changed[at] ^= 1
        assert sample(bytes(changed), [1000]) != whole, at


def test_sample_sees_swapped_chunks() -> None:
    data = random.Random(9).randbytes(4 * SAMPLE_EVERY)
    swapped = data[SAMPLE_EVERY:2 * SAMPLE_EVERY] + data[:SAMPLE_EVERY] + data[2 * SAMPLE_EVERY:]
    assert sample(swapped, []) != sample(data, [])
