"""`warm` against the fake upstream: in-process and through a running app, platforms, quota.

Everything goes through edgecache's real app; what the fake upstream received is the evidence
of what warm fetched.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edgecache import config as config_mod
from edgecache.airgap.endpoint import find_service, local_service
from edgecache.airgap.platform import parse_platforms
from edgecache.airgap.progress import Progress
from edgecache.airgap.warm import Warmer, read_image_list, warm
from edgecache.cli import main
from edgecache.config import Config
from tests.fakes.registry import FakeRegistry
from tests.support.images import make_image, make_index, make_layer, sha256
from tests.support.registry import free_port
from tests.support.throttle import ThrottledRelay
from tests.unit.conftest import MakeEdge

UPSTREAM = "fake.test"
MiB = 1 << 20


def make_config(tmp_path: Path, fake: FakeRegistry, http: str | None = None,
                **storage: Any) -> Config:
    """No service listens on `listen.http` unless the test starts one there."""
    return config_mod.from_mapping({
        "listen": {"http": http or f"127.0.0.1:{free_port()}", "https": None},
        "storage": {"path": str(tmp_path / "cache"), **storage},
        "upstreams": {UPSTREAM: {"url": fake.url}},
        "default_upstream": UPSTREAM,
        "cache": {"tag_ttl": "0s"},
        "metrics": {"listen": None},
    })


def quiet() -> Progress:
    return Progress("warming", "images", io.StringIO(), tty=False)


def stored(root: Path) -> dict[str, bytes]:
    return {f"{p.parent.parent.name}:{p.name}": p.read_bytes()
            for p in (root / "blobs").glob("*/*/*")}


def blob_gets(fake: FakeRegistry, since: int = 0) -> list[str]:
    return [r.path.rpartition("/")[2] for r in fake.requests[since:]
            if r.method == "GET" and "/blobs/" in r.path]


async def test_in_process_warm_fetches_each_blob_once_and_a_second_run_nothing(
        fake: FakeRegistry, tmp_path: Path) -> None:
    shared = make_layer(1 * MiB, 1)
    one = make_image([make_layer(MiB, 2), shared])
    two = make_image([shared, make_layer(MiB, 3)], docker=True)
    multi = make_index([make_image([make_layer(MiB, 4)], "amd64"),
                        make_image([make_layer(MiB, 5)], "arm64")])
    fake.add_image("team/one", one, tags=["1"])
    fake.add_image("team/two", two, tags=["2"])
    fake.add_index("team/multi", multi, tags=["3"])
    config = make_config(tmp_path, fake)
    refs = [f"{UPSTREAM}/team/one:1", f"{UPSTREAM}/team/two:2", f"{UPSTREAM}/team/multi:3"]

    report = await warm(config, refs, quiet())

    assert not report.failed, report.lines()
    assert report.endpoint == "an in-process edgecache"
    expected = {sha256(b.data): b.data for img in (one, two, *multi.images) for b in img.blobs}
    expected |= {img.digest: img.manifest for img in (one, two, *multi.images)}
    expected[multi.digest] = multi.manifest
    assert stored(config.storage.path) == expected
    gets = blob_gets(fake)
    assert sorted(gets) == sorted(set(gets))  # the shared layer too: once
    assert set(gets) == {d for d in expected if d not in
                         {one.digest, two.digest, multi.digest, *(i.digest for i in multi.images)}}
    assert [str(r.digest) for r in report.results] == [one.digest, two.digest, multi.digest]
    assert all(r.fetched > 0 and r.status == "fetched" for r in report.results)
    assert (config.storage.path / "clean-shutdown").exists()  # the in-process app stopped

    mark = len(fake.requests)
    again = await warm(config, refs, quiet())
    assert not again.failed
    assert blob_gets(fake, mark) == []
    assert all(r.status == "cached" and r.fetched == 0 for r in again.results)
    assert again.fetched == 0


async def test_platform_filter_takes_only_that_platform(fake: FakeRegistry,
                                                        tmp_path: Path) -> None:
    amd, arm = make_image([make_layer(MiB, 6)], "amd64"), make_image([make_layer(MiB, 7)], "arm64")
    multi = make_index([amd, arm])
    fake.add_index("team/multi", multi, tags=["1"])
    config = make_config(tmp_path, fake)

    report = await warm(config, [f"{UPSTREAM}/team/multi:1"], quiet(),
                        parse_platforms("linux/arm64"))

    assert not report.failed, report.lines()
    have = set(stored(config.storage.path))
    assert have == {multi.digest, arm.digest, *(sha256(b.data) for b in arm.blobs)}
    assert not any(amd.digest in r.path for r in fake.requests)
    assert report.results[0].size == len(multi.manifest) + len(arm.manifest) + sum(
        len(b.data) for b in arm.blobs)

    missing = await warm(config, [f"{UPSTREAM}/team/multi:1"], quiet(),
                         parse_platforms("linux/s390x"))
    assert missing.failed
    assert "no manifest for linux/s390x" in (missing.results[0].error or "")


async def test_failures_are_per_image_and_a_blob_too_big_to_keep_fails(
        fake: FakeRegistry, tmp_path: Path) -> None:
    small = make_image([make_layer(64 * 1024, 8)])
    large = make_image([make_layer(3 * MiB, 9)])
    fake.add_image("team/small", small, tags=["1"])
    fake.add_image("team/large", large, tags=["1"])
    config = make_config(tmp_path, fake, max_size="1MiB")

    report = await warm(config, [f"{UPSTREAM}/team/small:1", f"{UPSTREAM}/team/large:1",
                                 f"{UPSTREAM}/team/absent:1", "not a reference"], quiet())

    assert report.failed
    small_r, large_r, absent_r, bad_r = report.results
    assert small_r.error is None
    assert large_r.error is not None and "not kept" in large_r.error
    assert absent_r.error is not None and "MANIFEST_UNKNOWN" in absent_r.error
    assert bad_r.error is not None and "registry" in bad_r.error
    assert sha256(large.layers[0].data) not in stored(config.storage.path)
    lines = report.lines()
    assert lines[0].split() == ["IMAGE", "DIGEST", "SIZE", "FETCHED", "CACHED", "STATUS"]
    assert len(lines) == 6 and lines[-1].startswith("warmed 1 of 4 images")


async def test_a_running_service_is_used_and_a_plain_registry_is_not_taken_for_one(
        fake: FakeRegistry, make_edge: MakeEdge, tmp_path: Path) -> None:
    image = make_image([make_layer(MiB, 10)])
    fake.add_image("team/app", image, tags=["1"])
    edge = await make_edge()
    running = make_config(tmp_path, fake, http=f"127.0.0.1:{edge.client.port}")
    found = await find_service(running)
    assert found is not None and found.url == f"http://127.0.0.1:{edge.client.port}"

    report = await warm(running, [f"{UPSTREAM}/team/app:1"], quiet())
    assert not report.failed, report.lines()
    assert report.endpoint.startswith("the running service at")
    assert set(stored(edge.storage)) == {image.digest, *(sha256(b.data) for b in image.blobs)}
    assert not (tmp_path / "cache").exists()  # nothing was started on the config's storage

    impostor = make_config(tmp_path, fake, http=fake.url.removeprefix("http://"))
    refused = await warm(impostor, [f"{UPSTREAM}/team/app:1"], quiet())
    assert refused.failed and "is not edgecache" in (refused.results[0].error or "")

    assert await find_service(make_config(tmp_path, fake)) is None


def test_image_list_file_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    listing = tmp_path / "images.txt"
    listing.write_text("# site images\n\ndocker.io/library/alpine:3.20  # base\n"
                       "  ghcr.io/owner/app@sha256:" + "a" * 64 + "\n#docker.io/x:1\n")
    assert read_image_list(str(listing)) == ["docker.io/library/alpine:3.20",
                                             "ghcr.io/owner/app@sha256:" + "a" * 64]


async def test_a_manifest_that_arrives_in_pieces_is_read_to_its_end(
        fake: FakeRegistry, make_edge: MakeEdge, tmp_path: Path) -> None:
    """Through a slow link (16 KiB pieces, a pause between them) a 64 KiB manifest comes in
    several reads: one `content.read(n)` took the first piece for the body (issue 13, item 17)."""
    image = make_image([make_layer(4096, 11)])
    doc = json.loads(image.manifest)
    doc["annotations"] = {"org.example.padding": "x" * (64 * 1024)}
    body = json.dumps(doc).encode()
    for blob in image.blobs:
        fake.add_blob(blob)
    fake.add_manifest("team/big", body, image.media_type, tags=["1"])
    edge = await make_edge()
    relay = ThrottledRelay(edge.client.port, rate=256 * 1024)
    try:
        running = make_config(tmp_path, fake, http=f"127.0.0.1:{relay.port}")
        report = await warm(running, [f"{UPSTREAM}/team/big:1"], quiet())
    finally:
        relay.close()
    assert not report.failed, report.lines()
    assert stored(edge.storage)[sha256(body)] == body


def test_an_image_list_that_is_not_utf8_is_one_line_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "images.txt"
    listing.write_bytes(b"docker.io/library/alpine:3.20\n\xff\xfe\n")
    assert main(["warm", "--file", str(listing), "--storage-path", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(listing) in err[0] and "UTF-8" in err[0], err


async def test_blob_fetches_do_not_outlive_a_cancelled_warm(
        fake: FakeRegistry, tmp_path: Path) -> None:
    """A blob fetch is shielded from the image waiting on it; cancelling the warm itself must
    still cancel and await it, whatever the session or server does next."""
    image = make_image([make_layer(64 * 1024, 11)])
    fake.add_image("team/held", image, tags=["1"])
    layer = sha256(image.layers[0].data)
    arrived = fake.arrival(f"/blobs/{layer}", method="GET")
    gate = fake.hold(f"/blobs/{layer}", method="GET")
    config = make_config(tmp_path, fake)
    async with local_service(config) as endpoint, aiohttp.ClientSession() as session:
        warmer = Warmer(session, endpoint, quiet())
        task = asyncio.create_task(warmer.warm([f"{UPSTREAM}/team/held:1"]))
        await asyncio.wait_for(arrived.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        fetches = [t for t in asyncio.all_tasks()
                   if getattr(t.get_coro(), "__qualname__", "") == "Warmer._fetch_blob"]
        gate.set()  # let the service's own fill finish before it stops
        assert fetches == []
