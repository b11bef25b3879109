from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecache.errors import RangeNotSatisfiable
from edgecache.web.responses import parse_range
from tests.fakes.registry import FakeRegistry
from tests.support.images import make_image, make_layer
from tests.unit.conftest import Edge


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


HUGE = "9" * 5000  # past Python's 4,300-digit int() limit


@pytest.mark.parametrize(("header", "size", "expected"), [
    (f"bytes=0-{HUGE}", 10, (0, 10)),  # a last position past the end is clamped
    (f"bytes=-{HUGE}", 10, (0, 10)),  # a suffix longer than the blob is the whole blob
    (f"bytes={'0' * 5000}3-4", 10, (3, 5)),  # leading zeros are not significant
    (f"bytes=2-{'0' * 5000}4", 10, (2, 5)),
])
def test_positions_of_any_length_follow_the_rfc(header: str, size: int,
                                                expected: tuple[int, int]) -> None:
    assert parse_range(header, size) == expected


def test_a_first_position_of_5000_digits_is_unsatisfiable() -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(f"bytes={HUGE}-", 10)


@pytest.mark.parametrize("cached", [False, True], ids=["download", "cached"])
@pytest.mark.parametrize(("header", "status"), [
    (f"bytes={HUGE}-", 416), (f"bytes=0-{HUGE}", 206), (f"bytes=-{HUGE}", 206)])
async def test_a_range_of_5000_digits_is_answered_not_a_500(
        fake: FakeRegistry, edge: Edge, caplog: pytest.LogCaptureFixture, cached: bool,
        header: str, status: int) -> None:
    blob = make_layer(50_000, seed=61)
    digest = fake.add_blob(blob)
    if cached:
        async with edge.client.get(f"/v2/team/app/blobs/{digest}") as resp:
            assert await resp.read() == blob.data
        assert await edge.wait_published(digest)
    async with edge.client.get(f"/v2/team/app/blobs/{digest}",
                               headers={"Range": header}) as resp:
        assert resp.status == status, await resp.text()
        if status == 206:
            assert await resp.read() == blob.data
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_page_size_of_5000_digits_is_all_not_a_500(
        fake: FakeRegistry, edge: Edge) -> None:
    """The tag list served from what is known when the upstream fails: `n` bounds it."""
    fake.add_image("team/app", make_image([make_layer(1000, seed=62)]), tags=("latest", "v1"))
    async with edge.client.get("/v2/team/app/manifests/latest") as resp:
        assert resp.status == 200
    fake.down = True
    async with edge.client.get(f"/v2/team/app/tags/list?n={HUGE}") as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["tags"] == ["latest"]
