"""What the local route answers where a push client or the spec looks closely: a repository
nobody pushed to, a digest algorithm uploads do not take, a method a route does not allow."""

from __future__ import annotations

import hashlib

from tests.support.images import sha256
from tests.unit.local.conftest import LOCAL, Pusher


async def _code(pusher: Pusher, method: str, path: str, **kwargs: object) -> tuple[int, str]:
    async with pusher.edge.client.request(method, path, headers=pusher.headers,
                                          **kwargs) as resp:  # type: ignore[arg-type]
        body = await resp.json() if resp.content_type == "application/json" else {}
        return resp.status, body.get("errors", [{}])[0].get("code", "") if body else ""


async def test_tags_of_a_repository_without_tags_is_404_name_unknown(pusher: Pusher) -> None:
    # Distribution 2.8 answers NAME_UNKNOWN for a repository it never had a tag for; the spec
    # allows 404 for end-8a. Content is per registry here, so a repository is its tags.
    assert await _code(pusher, "GET", f"/v2/{LOCAL}/nobody/tags/list") == (404, "NAME_UNKNOWN")
    assert await _code(pusher, "GET", "/v2/nobody/tags/list?ns=" + LOCAL) == (404, "NAME_UNKNOWN")
    digest = await pusher.blob(b"a blob, no tag")
    assert await _code(pusher, "GET", pusher.url("tags/list")) == (404, "NAME_UNKNOWN")
    await pusher.request("POST", pusher.url("blobs/uploads/"))  # a session is no repository
    assert await _code(pusher, "GET", pusher.url("tags/list")) == (404, "NAME_UNKNOWN")
    assert digest


async def test_blob_and_manifest_of_an_unknown_repository_are_404_as_distribution(
        pusher: Pusher) -> None:
    # end-2/end-3 say 404 only; Distribution 2.8 answers BLOB_UNKNOWN / MANIFEST_UNKNOWN there
    # (not NAME_UNKNOWN), and so do we
    missing = sha256(b"never pushed")
    base = f"/v2/{LOCAL}/nobody"
    assert await _code(pusher, "GET", f"{base}/blobs/{missing}") == (404, "BLOB_UNKNOWN")
    assert await _code(pusher, "GET", f"{base}/manifests/latest") == (404, "MANIFEST_UNKNOWN")
    assert await _code(pusher, "GET", f"{base}/manifests/{missing}") == (404, "MANIFEST_UNKNOWN")


def _sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


async def test_a_sha512_blob_upload_is_refused_digest_invalid_before_its_body(
        pusher: Pusher) -> None:
    data = b"sha512 bytes" * 100
    status, code = await _code(pusher, "POST", pusher.url(f"blobs/uploads/?digest={_sha512(data)}"),
                               data=data)
    assert (status, code) == (400, "DIGEST_INVALID")
    assert pusher.edge.tmp_files() == [] and pusher.edge.blob_files() == []

    started = await pusher.request("POST", pusher.url("blobs/uploads/"))
    location = started.headers["Location"]
    patched = await pusher.request("PATCH", location, data=data)
    assert patched.status == 202
    async with pusher.edge.client.put(f"{location}?digest={_sha512(data)}",
                                      headers=pusher.headers) as resp:
        assert resp.status == 400
        error = (await resp.json())["errors"][0]
        assert error["code"] == "DIGEST_INVALID" and "sha256" in error["message"]
    # the session is kept: the client can finish it with the sha256 digest
    status_resp = await pusher.request("GET", location)
    assert status_resp.status == 204 and status_resp.headers["Range"] == f"0-{len(data) - 1}"
    done = await pusher.request("PUT", f"{location}?digest={sha256(data)}")
    assert done.status == 201


async def test_405_names_the_methods_the_local_route_allows(pusher: Pusher) -> None:
    digest = await pusher.blob(b"some layer")
    started = await pusher.request("POST", pusher.url("blobs/uploads/"))
    session = started.headers["Location"]
    cases = [
        ("POST", pusher.url("manifests/v1"), "GET, HEAD, PUT, DELETE"),
        ("PATCH", pusher.url(f"blobs/{digest}"), "GET, HEAD, DELETE"),
        ("PUT", pusher.url(f"blobs/{digest}"), "GET, HEAD, DELETE"),
        ("DELETE", pusher.url("tags/list"), "GET"),
        ("PUT", pusher.url(f"referrers/{digest}"), "GET"),
        ("GET", pusher.url("blobs/uploads/"), "POST"),
        ("POST", session, "GET, HEAD, PATCH, PUT, DELETE"),
    ]
    for method, path, allow in cases:
        async with pusher.edge.client.request(method, path, headers=pusher.headers) as resp:
            assert resp.status == 405, (method, path)
            assert resp.headers["Allow"] == allow, (method, path)
            assert (await resp.json())["errors"][0]["code"] == "UNSUPPORTED"
