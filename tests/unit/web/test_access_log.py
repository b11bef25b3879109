"""The JSON access line: one JSON object per request, its fields at the top level beside the
formatter's own, and the same fields as JSON text for any other handler."""

from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from edgecache.web.observability import ACCESS, REQUEST_ID, JsonAccessLogger, _JsonFormatter


class Lines(logging.Handler):
    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self.lines: list[str] = []
        if formatter is not None:
            self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_json_access_line_has_the_fields_once_at_top_level() -> None:
    logger = logging.getLogger("aiohttp.access")
    saved = logger.handlers[:], logger.propagate, logger.level
    as_json, as_text = Lines(_JsonFormatter()), Lines(None)
    logger.handlers[:], logger.propagate = [as_json, as_text], False
    logger.setLevel(logging.INFO)
    request = make_mocked_request("GET", "/v2/team/app/manifests/1?n=2")
    request[REQUEST_ID] = "abc"
    request[ACCESS] = {"route": "manifest", "upstream": "fake.test", "result": "hit"}
    try:
        JsonAccessLogger(logger, "").log(request, web.Response(body=b"12345"), 0.25)
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])
    fields = {"id": "abc", "method": "GET", "path": "/v2/team/app/manifests/1?n=2",
              "status": 200, "duration_s": 0.25, "route": "manifest",
              "upstream": "fake.test", "result": "hit"}
    [line] = as_json.lines
    doc = json.loads(line)
    assert doc["logger"] == "access" and doc["level"] == "INFO" and "time" in doc
    assert "message" not in doc
    assert {k: doc[k] for k in fields} == fields
    assert set(doc) == {"time", "level", "logger", "remote", "bytes", *fields}
    [text] = as_text.lines
    assert {k: v for k, v in json.loads(text).items() if k in fields} == fields
