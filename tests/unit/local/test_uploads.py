"""Blob uploads into the local registry: monolithic, POST then PUT, chunked with resume,
416 for chunks out of order, cancel, mount, disk full; nothing unverified is published."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

from tests.support.images import sha256
from tests.unit.conftest import MakeEdge
from tests.unit.local.conftest import LOCAL, Pusher, basic


async def test_monolithic_upload_is_served_by_every_routing_style(pusher: Pusher) -> None:
    data = random.Random(1).randbytes(300_000)
    digest = await pusher.blob(data)
    for path in (f"/v2/{LOCAL}/other/blobs/{digest}",
                 f"/v2/other/blobs/{digest}?ns={LOCAL}"):
        resp = await pusher.edge.client.get(path)  # pulls need no credentials
        assert resp.status == 200
        assert await resp.read() == data
    resp = await pusher.edge.client.get(f"/v2/{LOCAL}/x/blobs/{digest}",
                                        headers={"Range": "bytes=10-19"})
    assert resp.status == 206 and await resp.read() == data[10:20]


async def test_chunked_upload_out_of_order_and_repeated_chunks_are_416(pusher: Pusher) -> None:
    data = random.Random(2).randbytes(10_000)
    resp = await pusher.request("POST", pusher.url("blobs/uploads/"))
    assert resp.status == 202 and resp.headers["Docker-Upload-UUID"]
    location = resp.headers["Location"]
    assert location.startswith(f"/v2/{LOCAL}/team/app/blobs/uploads/")

    skipped = await pusher.request("PATCH", location, data=data[5000:],
                                   headers={"Content-Range": "5000-9999"})
    assert skipped.status == 416
    first = await pusher.request("PATCH", location, data=data[:5000],
                                 headers={"Content-Range": "0-4999"})
    assert first.status == 202 and first.headers["Range"] == "0-4999"
    again = await pusher.request("PATCH", location, data=data[:5000],
                                 headers={"Content-Range": "0-4999"})
    assert again.status == 416
    status = await pusher.request("GET", location)
    assert status.status == 204 and status.headers["Range"] == "0-4999"
    assert status.headers["Location"] == location

    digest = sha256(data)
    done = await pusher.request("PUT", f"{location}?digest={digest}", data=data[5000:],
                                headers={"Content-Range": "5000-9999"})
    assert done.status == 201
    assert done.headers["Location"] == f"/v2/{LOCAL}/team/app/blobs/{digest}"
    got = await pusher.edge.client.get(pusher.url(f"blobs/{digest}"))
    assert await got.read() == data
    gone = await pusher.request("GET", location)
    assert gone.status == 404


async def test_wrong_digest_publishes_nothing_and_leaves_no_file(pusher: Pusher) -> None:
    data = b"not what the digest says"
    wrong = sha256(b"something else")
    resp = await pusher.request("POST", pusher.url(f"blobs/uploads/?digest={wrong}"), data=data)
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["code"] == "DIGEST_INVALID"
    assert pusher.edge.blob_files() == [] and pusher.edge.tmp_files() == []
    head = await pusher.edge.client.head(pusher.url(f"blobs/{wrong}"))
    assert head.status == 404


async def test_cancelled_upload_is_gone_and_its_file_removed(pusher: Pusher) -> None:
    resp = await pusher.request("POST", pusher.url("blobs/uploads/"))
    location = resp.headers["Location"]
    await pusher.request("PATCH", location, data=b"x" * 1000)
    assert len(pusher.edge.tmp_files()) == 1
    assert (await pusher.request("DELETE", location)).status == 204
    assert pusher.edge.tmp_files() == []
    assert (await pusher.request("GET", location)).status == 404


async def test_mount_of_local_blob_is_201_and_of_unknown_blob_a_session(pusher: Pusher) -> None:
    digest = await pusher.blob(b"layer bytes")
    other = f"/v2/{LOCAL}/elsewhere/blobs/uploads/"
    for query in (f"?mount={digest}&from=team/app", f"?mount={digest}"):  # `from` optional
        resp = await pusher.request("POST", other + query)
        assert resp.status == 201
        assert resp.headers["Location"] == f"/v2/{LOCAL}/elsewhere/blobs/{digest}"
    unknown = await pusher.request("POST", other + f"?mount={sha256(b'nope')}&from=team/app")
    assert unknown.status == 202 and "/blobs/uploads/" in unknown.headers["Location"]


async def test_push_needs_credentials_and_the_challenge_asks_for_push(pusher: Pusher) -> None:
    client = pusher.edge.client
    resp = await client.post(pusher.url(f"blobs/uploads/?digest={sha256(b'a')}"), data=b"a")
    assert resp.status == 401
    assert 'scope="repository:registry.local/team/app:pull,push"' in \
        resp.headers["WWW-Authenticate"]
    wrong = await client.post(pusher.url("blobs/uploads/"), headers=basic(password="wrong"))
    assert wrong.status == 401
    # an anonymous token opens /v2/ but never a push
    token = (await (await client.get("/v2/token")).json())["token"]
    anon = await client.post(pusher.url("blobs/uploads/"),
                             headers={"Authorization": f"Bearer {token}"})
    assert anon.status == 401
    assert pusher.edge.tmp_files() == []


async def test_anonymous_push_only_when_configured(make_edge: MakeEdge) -> None:
    edge = await make_edge(top={"local": {"registry": LOCAL, "push": "anonymous"}})
    resp = await edge.client.post(f"/v2/{LOCAL}/a/blobs/uploads/?digest={sha256(b'a')}",
                                  data=b"a")
    assert resp.status == 201


async def test_a_push_that_does_not_fit_on_disk_is_refused_at_once(make_edge: MakeEdge) -> None:
    # min_free 100 %: no byte may be written above it, whatever the disk holds
    edge = await make_edge(top={"local": {"registry": LOCAL, "push": "anonymous"},
                                "storage": {"min_free": "100%"}})
    data = b"z" * 4096
    resp = await edge.client.post(f"/v2/{LOCAL}/a/blobs/uploads/?digest={sha256(data)}",
                                  data=data)
    assert resp.status == 413
    error = (await resp.json())["errors"][0]
    assert error["code"] == "SIZE_INVALID" and "disk is full" in error["message"]
    assert edge.blob_files() == [] and edge.tmp_files() == []


async def test_a_chunk_longer_than_its_content_range_is_refused(pusher: Pusher) -> None:
    resp = await pusher.request("POST", pusher.url("blobs/uploads/"))
    location = resp.headers["Location"]

    async def body() -> AsyncIterator[bytes]:  # chunked transfer: no Content-Length
        yield b"x" * 100

    long = await pusher.request("PATCH", location, data=body(),
                                headers={"Content-Range": "0-9"})
    assert long.status == 400
    assert (await long.json())["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
    status = await pusher.request("GET", location)
    assert status.headers["Range"] == "0-0"  # nothing past the range was kept
