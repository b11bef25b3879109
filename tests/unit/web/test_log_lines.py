"""Log lines other than the access line: an error logged while a request is handled names the
request's id (the one its answer carries in X-Request-Id), and timestamps are ISO 8601 UTC."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest

from edgecache.web import observability
from tests.fakes.registry import FakeRegistry
from tests.unit.conftest import Edge

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


class Lines(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(formatter)
        self.addFilter(observability._RequestContext())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def lines() -> Iterator[tuple[Lines, Lines]]:
    """What configure_logging's handler would write, plain and JSON, while the test runs."""
    plain, as_json = Lines(observability._PlainFormatter()), Lines(observability._JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(plain)
    root.addHandler(as_json)
    root.setLevel(logging.INFO)
    try:
        yield plain, as_json
    finally:
        root.removeHandler(plain)
        root.removeHandler(as_json)
        root.setLevel(level)


async def test_an_error_line_names_the_request_id(fake: FakeRegistry, edge: Edge,
                                                  lines: tuple[Lines, Lines]) -> None:
    plain, as_json = lines
    fake.fail(503)
    digest = "sha256:" + "1" * 64
    async with edge.client.get(f"/v2/team/app/blobs/{digest}") as resp:
        assert resp.status == 503
        request_id = resp.headers["X-Request-Id"]
    errors = [line for line in plain.lines if "-> 503" in line]
    assert errors, plain.lines
    for line in errors:
        assert re.fullmatch(rf"{ISO} WARNING edgecache\.web\.errors: .* id={request_id}", line)
    docs = [json.loads(line) for line in as_json.lines]
    [doc] = [d for d in docs if "-> 503" in d["message"]]
    assert doc["id"] == request_id and re.fullmatch(ISO, doc["time"])


async def test_a_client_request_id_is_the_one_logged(fake: FakeRegistry, edge: Edge,
                                                     lines: tuple[Lines, Lines]) -> None:
    plain, _ = lines
    fake.fail(503)
    async with edge.client.get("/v2/team/app/blobs/sha256:" + "2" * 64,
                               headers={"X-Request-Id": "ticket-42"}) as resp:
        assert resp.status == 503 and resp.headers["X-Request-Id"] == "ticket-42"
    assert any(line.endswith(" id=ticket-42") and "-> 503" in line for line in plain.lines)


def test_lines_outside_a_request_carry_no_id(lines: tuple[Lines, Lines]) -> None:
    plain, as_json = lines
    logging.getLogger("edgecache.test").warning("disk is %s", "fine")
    assert re.fullmatch(rf"{ISO} WARNING edgecache\.test: disk is fine", plain.lines[-1])
    doc = json.loads(as_json.lines[-1])
    assert "id" not in doc and doc["message"] == "disk is fine"


async def test_an_absent_blob_is_not_a_warning(fake: FakeRegistry, edge: Edge,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A scan of absent digests is each answered 404; none is edgecache's trouble."""
    caplog.set_level(logging.DEBUG)
    for n in range(3):
        async with edge.client.get(f"/v2/team/app/blobs/sha256:{n:064x}") as resp:
            assert resp.status == 404
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not warnings, [r.getMessage() for r in warnings]
