from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecache.errors import RangeNotSatisfiable
from edgecache.web.responses import parse_range


@pytest.mark.parametrize(("header", "size", "expected"), [
    (None, 10, None),
    ("bytes=0-9", 10, (0, 10)),
    ("bytes=2-4", 10, (2, 5)),
    ("bytes=5-", 10, (5, 10)),
    ("bytes=-3", 10, (7, 10)),
    ("bytes=-30", 10, (0, 10)),
    ("bytes=8-100", 10, (8, 10)),
    ("BYTES = 1-1", 10, (1, 2)),
])
def test_valid_ranges(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [
    ("bytes=10-", 10), ("bytes=5-2", 10), ("bytes=-0", 10), ("bytes=0-1,3-4", 10),
    ("items=0-1", 10), ("bytes=", 10), ("bytes=-", 10), ("bytes=a-b", 10), ("bytes=0-0", 0),
    ("bytes 0-1", 10), ("bytes=+1-2", 10), ("bytes=1--2", 10),
])
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, size)
    assert info.value.size == size


@given(st.text(max_size=40), st.integers(min_value=0, max_value=1 << 40))
def test_parse_range_is_total(header: str, size: int) -> None:
    try:
        span = parse_range(header, size)
    except RangeNotSatisfiable:
        return
    assert span is not None
    start, end = span
    assert 0 <= start < end <= size
