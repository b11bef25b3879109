"""Every 4XX error code edgecache can send is one of the distribution spec's (v1.1.1, code-1..14):
"If the response body is in JSON format ... The `code` field MUST be one of the following"."""

from __future__ import annotations

import pytest

from edgecache.web.errors import ERROR_TABLE, HTTP_CODES
from tests.fakes.registry import FakeRegistry
from tests.unit.conftest import Edge

SPEC_CODES = frozenset({
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID",
    "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS",
})


@pytest.mark.parametrize(("cls", "status", "code"), ERROR_TABLE,
                         ids=[cls.__name__ for cls, _, _ in ERROR_TABLE])
def test_every_client_error_row_uses_a_spec_code(cls: type, status: int, code: str) -> None:
    if status < 500:
        assert code in SPEC_CODES, (cls.__name__, code)


def test_aiohttp_refusals_use_spec_codes() -> None:
    assert set(HTTP_CODES.values()) <= SPEC_CODES


@pytest.mark.parametrize("path", ["/nothing", "/v1/", "/v3/x", "/favicon.ico",
                                  "/v2x/a/manifests/1"])  # `/` is the status page
async def test_a_path_outside_the_api_is_a_404_in_spec_words(
        fake: FakeRegistry, edge: Edge, path: str) -> None:
    resp = await edge.raw("GET", path)
    assert resp.status == 404
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.body.startswith(b'{"errors": [{"code": "UNSUPPORTED"')
    assert fake.requests == []


async def test_a_manifest_name_that_is_no_tag_is_unknown_without_asking(
        fake: FakeRegistry, edge: Edge) -> None:
    """The conformance suite's `.INVALID_MANIFEST_NAME` (pull: HEAD and GET must be 404)."""
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    for method in ("HEAD", "GET"):
        async with edge.client.request(method, "/v2/team/app/manifests/.INVALID_MANIFEST_NAME",
                                       headers=accept) as resp:
            assert resp.status == 404
            if method == "GET":
                assert (await resp.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    async with edge.client.get("/v2/team/app/manifests/sha256:totallywrong") as resp:
        assert resp.status == 400
        assert (await resp.json())["errors"][0]["code"] == "DIGEST_INVALID"
    assert fake.requests == []


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"],
                         ids=["unclosed", "closed"])
async def test_a_manifest_nested_past_the_parser_is_invalid_not_a_crash(
        fake: FakeRegistry, edge: Edge, body: bytes) -> None:
    digest = fake.add_manifest("team/app", body, "application/vnd.oci.image.manifest.v1+json",
                               tags=["deep"])
    for reference in ("deep", digest):
        async with edge.client.get(f"/v2/team/app/manifests/{reference}") as resp:
            assert resp.status == 502, await resp.text()
            assert (await resp.json())["errors"][0]["code"] == "MANIFEST_INVALID"
    assert edge.blob_files() == []
