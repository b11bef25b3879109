"""Staying within quota: reservations, eviction, pins, uncacheable blobs, a full filesystem.

The first part drives `Quota` over a real blob tree and index, with the one seam it offers: the
disk-usage probe (a filesystem of a chosen size whose free space is computed from the files
really stored). The rest goes through edgecache's real app in front of the fake registry:
random pulls against a small quota (hypothesis), blobs bigger than the budget, pinned images,
access-time batching, and a real tiny tmpfs that runs out of space in the middle of a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import random
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from edgecache import cli
from edgecache import config as config_mod
from edgecache.app import build_app
from edgecache.config import Size, StorageConfig
from edgecache.metrics import Metrics
from edgecache.oci import Digest
from edgecache.storage import store as storage_store
from edgecache.storage.blobs import BlobStore
from edgecache.storage.eviction import pinned_digests
from edgecache.storage.index import Index
from edgecache.storage.layout import Layout
from edgecache.storage.quota import DiskUsage, Quota
from tests.fakes.registry import BlobFault, FakeRegistry
from tests.support.images import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    make_image,
    make_index,
    make_layer,
)
from tests.support.images import Index as ImageIndex
from tests.support.waiting import await_until
from tests.unit.conftest import UPSTREAM, Edge

KiB = 1 << 10
MiB = 1 << 20
READ_TIMEOUT = 20.0
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# =================================================================================================
# Quota over a real store, with a simulated filesystem as its disk probe
# =================================================================================================


class Disk:
    """A filesystem of `total` bytes: free space is what the blob tree really holds subtracted,
    and whatever `tenant` (other users of the disk) takes."""

    def __init__(self, root: Path, total: int) -> None:
        self.root = root
        self.total = total
        self.tenant = 0

    def stored(self) -> int:
        return sum(p.stat().st_size for p in (self.root / "blobs").rglob("*") if p.is_file())

    def __call__(self, path: str) -> DiskUsage:
        assert Path(path) == self.root
        return DiskUsage(self.total, max(0, self.total - self.tenant - self.stored()))


class Store:
    """A blob tree, an index and a Quota over them; `add` publishes like edgecache does."""

    def __init__(self, root: Path, max_size: int | None, disk_total: int = 1 << 40,
                 pins: tuple[str, ...] = (), min_free: int = 0) -> None:
        self.root = root
        self.layout = Layout(root)
        self.blobs = BlobStore(self.layout)
        self.blobs.prepare()
        self.index = Index(self.layout.index_file)
        self.disk = Disk(root, disk_total)
        self.metrics = Metrics()
        self.config = StorageConfig(path=root,
                                    max_size=None if max_size is None else Size(bytes=max_size),
                                    min_free=Size(bytes=min_free))
        self.quota = Quota(self.config, self.blobs, self.index, pins, self.metrics,
                           probe=self.disk)
        self._clock = 1000.0

    async def add(self, size: int = 0, data: bytes | None = None,
                  children: tuple[str, ...] | list[str] = (),
                  media_type: str | None = None) -> str:
        """Publish a blob (`size` random bytes, or `data`); each one is more recent than the
        last, so the order of `add` calls is the LRU order."""
        if data is None:
            data = random.Random(len(self.index.sizes()) + size).randbytes(size)
        digest = Digest.of(data)
        await storage_store.Store(self.blobs, self.index, self.quota).put(
            digest, data, media_type, children)
        self._clock += 1
        self.set_access(str(digest), self._clock)
        return str(digest)

    async def add_manifest(self, children: list[str]) -> str:
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "layers": [{"digest": d, "size": 1} for d in children]}).encode()
        return await self.add(data=body, children=children, media_type=OCI_MANIFEST)

    def restart(self, pins: tuple[str, ...]) -> None:
        """Reopen the index and start a new Quota over it, as edgecache does at start."""
        self.index.close()
        self.index = Index(self.layout.index_file)
        self.quota = Quota(self.config, self.blobs, self.index, pins, self.metrics,
                           probe=self.disk)

    def set_access(self, digest: str, when: float) -> None:
        with contextlib.closing(sqlite3.connect(self.layout.index_file)) as db:
            db.execute("UPDATE blobs SET last_access=? WHERE digest=?", (when, digest))
            db.commit()

    def on_disk(self, digest: str) -> bool:
        return self.blobs.size(Digest.parse(digest)) is not None

    def indexed(self, digest: str) -> bool:
        return self.index.size(digest) is not None

    def sample(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(name) or 0.0


@pytest.fixture
def stores() -> Iterator[list[Store]]:
    made: list[Store] = []
    yield made
    for store in made:
        store.index.close()


def new_store(stores: list[Store], tmp_path: Path, max_size: int | None, **kwargs: Any) -> Store:
    store = Store(tmp_path / f"store{len(stores)}", max_size, **kwargs)
    stores.append(store)
    return store


async def test_reserve_within_the_budget_evicts_nothing(stores: list[Store],
                                                        tmp_path: Path) -> None:
    store = new_store(stores, tmp_path, max_size=10_000)
    kept = [await store.add(3000), await store.add(3000)]
    assert await store.quota.reserve(3000)  # 9000 <= 95% of 10000
    assert store.quota.reserved == 3000
    assert all(store.on_disk(d) for d in kept)
    store.quota.release(3000)
    assert store.quota.reserved == 0
    assert store.sample("edgecache_evictions_total") == 0


async def test_crossing_the_high_watermark_evicts_lru_down_to_the_low_watermark(
        stores: list[Store], tmp_path: Path) -> None:
    store = new_store(stores, tmp_path, max_size=10_000)
    oldest, older, newer = await store.add(3000), await store.add(3000), await store.add(3000)
    store.index.touch(oldest)  # used since: the pending access counts before anything is chosen
    # 9000 + 1000 > 9500: free down to 8500 after the incoming 1000, i.e. at least 1500 bytes
    assert await store.quota.reserve(1000)
    assert not store.on_disk(older) and not store.indexed(older)
    assert store.on_disk(oldest) and store.on_disk(newer)
    assert store.quota.used == 6000
    assert store.sample("edgecache_evictions_total") == 1
    assert store.sample("edgecache_evicted_bytes_total") == 3000
    assert store.disk.stored() + store.quota.reserved <= 8500


async def test_an_evicted_layer_takes_its_manifests_along(stores: list[Store],
                                                          tmp_path: Path) -> None:
    store = new_store(stores, tmp_path, max_size=10_000)
    layer = await store.add(4000)
    other = await store.add(1000)
    manifest = await store.add_manifest([layer, other])
    store.index.set_tag(UPSTREAM, "team/app", "1", manifest)
    newest = await store.add(4000)
    assert await store.quota.reserve(2000)
    # the layer went, and so did the manifest: the index never claims an image it cannot serve
    assert not store.on_disk(layer) and not store.indexed(layer)
    assert not store.on_disk(manifest) and store.index.media_type(manifest) is None
    assert store.on_disk(other) and store.on_disk(newest)


async def test_a_blob_bigger_than_the_budget_is_refused_without_evicting_anything(
        stores: list[Store], tmp_path: Path) -> None:
    """It cannot be cached whatever goes, so nothing should go for it."""
    store = new_store(stores, tmp_path, max_size=10_000)
    cached = [await store.add(3000) for _ in range(3)]
    assert not await store.quota.reserve(20_000)
    assert store.quota.reserved == 0
    assert store.sample("edgecache_uncacheable_total") == 1
    assert [store.on_disk(d) for d in cached] == [True, True, True]
    assert store.sample("edgecache_evictions_total") == 0


async def test_reservations_in_flight_do_not_overcommit_a_disk_bound_budget(
        stores: list[Store], tmp_path: Path) -> None:
    """No max_size: the disk is the budget. Two blobs that each fit, but not together, must
    not both be admitted before either has written a byte."""
    store = new_store(stores, tmp_path, max_size=None, disk_total=10_000)
    assert await store.quota.reserve(6000)
    assert not await store.quota.reserve(6000)
    assert store.quota.reserved == 6000
    assert await store.quota.reserve(2000)  # what really is left still fits


async def test_check_evicts_when_other_tenants_fill_the_disk(stores: list[Store],
                                                             tmp_path: Path) -> None:
    store = new_store(stores, tmp_path, max_size=None, disk_total=20_000, min_free=2000)
    digests = [await store.add(2000) for _ in range(4)]  # 8000 cached, 12000 free
    assert await store.quota.enforce() == 0
    store.disk.tenant = 11_000  # free 1000 < min_free: budget 8000 + 1000 - 2000 = 7000
    freed = await store.quota.enforce()
    assert freed >= 8000 - int(7000 * 0.85)
    assert store.quota.used == 8000 - freed
    assert not store.on_disk(digests[0])  # oldest first
    assert store.on_disk(digests[-1])
    assert await store.quota.enforce() == 0  # below the high watermark now: nothing more goes


async def test_pinned_images_by_tag_and_digest_are_never_evicted(stores: list[Store],
                                                                 tmp_path: Path) -> None:
    store = new_store(stores, tmp_path, max_size=10_000)
    tagged_layer = await store.add(2000)
    tagged = await store.add_manifest([tagged_layer])
    store.index.set_tag(UPSTREAM, "team/pinned", "1", tagged)
    shared = await store.add(1000)
    own = await store.add(2000)
    by_digest = await store.add_manifest([own, shared])
    loose = await store.add(2000)
    pins = (f"{UPSTREAM}/team/pinned:1", f"{UPSTREAM}/team/other@{by_digest}")
    store.restart(pins)
    protected = {tagged_layer, tagged, shared, own, by_digest}
    assert pinned_digests(store.index, pins) == protected

    # over quota: only the unpinned blob can go, even though every pinned one is older
    assert await store.quota.reserve(2500)
    assert not store.on_disk(loose)
    assert all(store.on_disk(d) for d in protected)
    # and once only pinned content is left, what does not fit is refused
    assert not await store.quota.reserve(3000)
    assert all(store.on_disk(d) for d in protected)
    assert store.sample("edgecache_uncacheable_total") == 1


def test_pins_name_docker_hub_official_images_by_their_library_repository(
        tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    try:
        index.record_blob("sha256:" + "a" * 64, 10, OCI_MANIFEST, ["sha256:" + "b" * 64])
        index.record_blob("sha256:" + "b" * 64, 10)
        index.set_tag("docker.io", "library/alpine", "3", "sha256:" + "a" * 64)
        assert pinned_digests(index, ("docker.io/alpine:3",)) == {"sha256:" + "a" * 64,
                                                                   "sha256:" + "b" * 64}
        assert pinned_digests(index, ("docker.io/alpine:4", "not a reference")) == set()
    finally:
        index.close()


# =================================================================================================
# Through the app: the fake registry upstream, edgecache's real app, a small quota
# =================================================================================================


@contextlib.asynccontextmanager
async def serving(fake_url: str, storage: Path, pins: list[str] | None = None,
                  **storage_settings: Any) -> AsyncIterator[Edge]:
    """edgecache's real app with its own storage section (and pins), on 127.0.0.1; closed,
    and so cleanly stopped (access times flushed), when the block ends."""
    config = config_mod.from_mapping({
        "listen": {"http": None},
        "storage": {"path": str(storage), "min_free": "0", **storage_settings},
        "upstreams": {UPSTREAM: {"url": fake_url}},
        "default_upstream": UPSTREAM,
        "cache": {"tag_ttl": "0s"},
        "pins": pins or [],
    })
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(build_app(config, Metrics()), host="127.0.0.1"))
    await client.start_server()
    try:
        yield Edge(client, storage)
    finally:
        await client.close()


async def start_fake(fake: FakeRegistry) -> TestServer:
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    return server


async def fetch(edge: Edge, path: str, headers: dict[str, str] | None = None
                ) -> tuple[int, bytes, dict[str, str]]:
    async with asyncio.timeout(READ_TIMEOUT):
        async with edge.client.get(path, headers=headers) as resp:
            return resp.status, await resp.read(), dict(resp.headers)


def content_of(*tops: Image | ImageIndex) -> dict[str, bytes]:
    """digest -> bytes of every manifest and blob an image (or index) consists of."""
    out: dict[str, bytes] = {}
    for top in tops:
        out[top.digest] = top.manifest
        images = top.images if isinstance(top, ImageIndex) else [top]
        for image in images:
            out[image.digest] = image.manifest
            out.update({blob.digest: blob.data for blob in image.blobs})
    return out


def references(body: bytes) -> tuple[list[str], list[str]]:
    """(child manifests, blobs) a manifest references, in document order."""
    doc = json.loads(body)
    manifests = [m["digest"] for m in doc.get("manifests", [])]
    blobs = ([doc["config"]["digest"]] if "config" in doc else []) + \
        [layer["digest"] for layer in doc.get("layers", [])]
    return manifests, blobs


async def pull(edge: Edge, repo: str, reference: str, content: dict[str, bytes],
               order: random.Random | None = None) -> set[str]:
    """Pull like a client: the manifest, its platform manifests, then every blob (in document
    order, or shuffled by `order`). Every answer must be 200 with the right bytes. Returns the
    digests pulled."""
    status, body, headers = await fetch(edge, f"/v2/{repo}/manifests/{reference}",
                                        {"Accept": ACCEPT})
    assert status == 200, (reference, status, body[:300])
    top = headers["Docker-Content-Digest"]
    assert body == content[top]
    pulled = {top}
    manifests, blobs = references(body)
    for child in manifests:
        status, body, _ = await fetch(edge, f"/v2/{repo}/manifests/{child}", {"Accept": ACCEPT})
        assert status == 200 and body == content[child], (child, status)
        pulled.add(child)
        blobs += references(body)[1]
    blobs = list(dict.fromkeys(blobs))
    if order is not None:
        order.shuffle(blobs)
    for digest in blobs:
        status, body, _ = await fetch(edge, f"/v2/{repo}/blobs/{digest}")
        assert status == 200, (digest, status)
        if body != content[digest]:  # not an assert: pytest would diff megabytes
            pytest.fail(f"{digest}: {len(body)} bytes differ from the upstream's")
        pulled.add(digest)
    return pulled


def published(storage: Path) -> dict[str, int]:
    """digest -> size of every file under blobs/."""
    root = storage / "blobs"
    return {f"{p.parent.parent.name}:{p.name}": p.stat().st_size
            for p in root.rglob("*") if p.is_file()}


class IndexView:
    """A read-only look at the index database, from another connection (as an operator's
    sqlite3 would)."""

    def __init__(self, storage: Path) -> None:
        self.db = sqlite3.connect(f"file:{storage / 'index.db'}?mode=ro", uri=True,
                                  isolation_level=None)

    def close(self) -> None:
        self.db.close()

    def sizes(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT digest, size FROM blobs"))

    def last_access(self) -> dict[str, float]:
        return dict(self.db.execute("SELECT digest, last_access FROM blobs"))

    def tags(self) -> list[tuple[str, str, str]]:
        return list(self.db.execute("SELECT repository, tag, digest FROM tags"))

    def data_version(self) -> int:
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])


@contextlib.contextmanager
def index_view(storage: Path) -> Iterator[IndexView]:
    view = IndexView(storage)
    try:
        yield view
    finally:
        view.close()


# ---- random pulls against a small quota (hypothesis) -------------------------------------------

QUOTA = 2 * MiB
_shared_a = make_layer(100 * KiB, 301)
_shared_d = make_layer(100 * KiB, 302)
RANDOM_IMAGES: dict[str, Image | ImageIndex] = {
    "team/a": make_image([make_layer(150 * KiB, 311), _shared_a]),
    "team/b": make_image([_shared_a, make_layer(800 * KiB, 312)]),
    "team/c": make_image([make_layer(600 * KiB, 313), make_layer(400 * KiB, 314)]),
    "team/d": make_image([_shared_d, make_layer(900 * KiB, 315)]),
    "team/e": make_index([make_image([_shared_d, make_layer(100 * KiB, 316)], "amd64"),
                          make_image([make_layer(150 * KiB, 317)], "arm64")]),
    "team/f": make_image([make_layer(950 * KiB, 318)]),
}
RANDOM_CONTENT = content_of(*RANDOM_IMAGES.values())
# team/a pinned by tag, team/e (an index) by digest: together with the largest unpinned image
# they stay below the low watermark, so no full pull ever has to be served uncached
RANDOM_PINS = [f"{UPSTREAM}/team/a:1", f"{UPSTREAM}/team/e@{RANDOM_IMAGES['team/e'].digest}"]
PINNED_CONTENT = set(content_of(RANDOM_IMAGES["team/a"], RANDOM_IMAGES["team/e"]))


def test_random_images_fit_the_quota_the_way_the_random_pull_test_assumes() -> None:
    pinned = sum(len(RANDOM_CONTENT[d]) for d in PINNED_CONTENT)
    largest = max(sum(map(len, content_of(top).values())) for repo, top in RANDOM_IMAGES.items()
                  if repo not in ("team/a", "team/e"))
    assert pinned + largest < QUOTA * 0.85
    assert sum(map(len, RANDOM_CONTENT.values())) > 1.5 * QUOTA  # eviction must happen


pull_steps = st.lists(
    st.tuples(st.sampled_from(sorted(RANDOM_IMAGES)), st.booleans(), st.integers(0, 1000)),
    min_size=3, max_size=10)
# pinned images first, then pressure: what an eviction that ignored pins would get wrong
PINNED_FIRST = [("team/a", False, 1), ("team/b", False, 2), ("team/c", True, 3),
                ("team/d", False, 4), ("team/f", False, 5)]
DIGEST_PINNED_FIRST = [("team/e", True, 1), ("team/b", False, 2), ("team/c", False, 3),
                       ("team/d", True, 4), ("team/f", False, 5), ("team/e", False, 6)]


# No shrinking: each example runs a whole cache, and a failure reports its steps anyway.
@settings(max_examples=25, deadline=None,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=pull_steps)
@example(steps=PINNED_FIRST)
@example(steps=DIGEST_PINNED_FIRST)
def test_random_pulls_stay_within_quota_keep_pins_and_serve_what_the_index_claims(
        tmp_path: Path, steps: list[tuple[str, bool, int]]) -> None:
    storage = Path(tempfile.mkdtemp(dir=tmp_path)) / "cache"
    asyncio.run(_random_pulls(storage, steps))


async def _random_pulls(storage: Path, steps: list[tuple[str, bool, int]]) -> None:
    fake = FakeRegistry()
    for repo, top in RANDOM_IMAGES.items():
        if isinstance(top, ImageIndex):
            fake.add_index(repo, top, tags=["1"])
        else:
            fake.add_image(repo, top, tags=["1"])
    server = await start_fake(fake)
    pinned_seen: set[str] = set()
    # What a pin protects is the closure edgecache knows: a tag pin once it has seen the tag
    # give a digest, either pin once the pinned image's manifests are cached.
    pins_known: set[str] = set()
    try:
        async with serving(fake.url, storage, pins=RANDOM_PINS, max_size=QUOTA) as edge:
            with index_view(storage) as view:
                for repo, by_digest, seed in steps:
                    reference = RANDOM_IMAGES[repo].digest if by_digest else "1"
                    await pull(edge, repo, reference, RANDOM_CONTENT, random.Random(seed))

                    on_disk = published(storage)
                    assert sum(on_disk.values()) <= QUOTA, (steps, on_disk)
                    # the index and the files agree, and every file is what its name says
                    assert view.sizes() == on_disk
                    for digest in on_disk:
                        assert sha256(edge.blob_path(digest).read_bytes()) == digest
                    # a pinned blob, once cached, stays
                    assert pinned_seen <= set(on_disk), (steps, pinned_seen - set(on_disk))
                    if repo == "team/e" or (repo == "team/a" and not by_digest):
                        pins_known.add(repo)
                    pinned = set(content_of(*(RANDOM_IMAGES[r] for r in pins_known)))
                    pinned_seen |= pinned & set(on_disk)
                    # every image the index claims (a tag whose manifest is indexed) is served
                    # whole, from the cache alone: the upstream is not asked for anything
                    asked = len(fake.requests)
                    for claimed_repo, _, digest in view.tags():
                        if digest in on_disk:
                            await pull(edge, claimed_repo, digest, RANDOM_CONTENT)
                    assert fake.requests[asked:] == [], (steps, fake.requests[asked:])
                assert edge.sample("edgecache_uncacheable_total") == 0
    finally:
        await server.close()


# ---- blobs that cannot be cached ----------------------------------------------------------------


async def read_all(edge: Edge, path: str, headers: dict[str, str] | None = None
                   ) -> tuple[int, bytes]:
    status, body, _ = await fetch(edge, path, headers)
    return status, body


async def test_a_blob_bigger_than_the_quota_is_served_uncached_to_concurrent_clients(
        fake: FakeRegistry, tmp_path: Path) -> None:
    small = make_image([make_layer(200 * KiB, 401)])
    fake.add_image("team/small", small, tags=["1"])
    huge = make_layer(3 * MiB, 402)
    fake.add_blob(huge)
    storage = tmp_path / "cache"
    async with serving(fake.url, storage, max_size="1MiB") as edge:
        await pull(edge, "team/small", "1", content_of(small))
        cached_before = published(storage)

        path = f"/v2/team/huge/blobs/{huge.digest}"
        start, end = 1_000_000, 2_500_000
        results = await asyncio.gather(
            *(read_all(edge, path) for _ in range(5)),
            read_all(edge, path, {"Range": f"bytes={start}-{end - 1}"}))

        for status, body in results[:5]:
            assert status == 200
            if body != huge.data:
                pytest.fail(f"a client got {len(body)} wrong bytes")
        status, body = results[5]
        assert status == 206 and body == huge.data[start:end]
        assert not edge.blob_path(huge.digest).exists()
        assert edge.tmp_files() == []
        assert edge.sample("edgecache_uncacheable_total") >= 1
        # what was cached is still there: nothing was evicted for a blob that could never fit
        assert published(storage) == cached_before
        assert edge.sample("edgecache_evictions_total") == 0


async def test_when_only_pinned_content_is_left_new_blobs_are_served_uncached(
        fake: FakeRegistry, tmp_path: Path) -> None:
    pinned = make_image([make_layer(900 * KiB, 411)])
    other = make_image([make_layer(300 * KiB, 412)])
    fake.add_image("team/pinned", pinned, tags=["1"])
    fake.add_image("team/other", other, tags=["1"])
    storage = tmp_path / "cache"
    async with serving(fake.url, storage, max_size="1MiB",
                       pins=[f"{UPSTREAM}/team/pinned:1"]) as edge:
        await pull(edge, "team/pinned", "1", content_of(pinned))
        pinned_files = published(storage)
        assert set(content_of(pinned)) <= set(pinned_files)

        await pull(edge, "team/other", "1", content_of(other))  # right bytes, all of it

        assert not edge.blob_path(other.layers[0].digest).exists()
        assert edge.sample("edgecache_uncacheable_total") >= 1
        assert edge.tmp_files() == []
        for digest in pinned_files:
            assert edge.blob_path(digest).exists(), digest


# ---- pins through the app -----------------------------------------------------------------------


async def test_pinned_images_by_tag_and_digest_survive_quota_pressure(
        fake: FakeRegistry, tmp_path: Path) -> None:
    by_tag = make_image([make_layer(300 * KiB, 421)])
    by_digest = make_index([make_image([make_layer(200 * KiB, 422)], "amd64"),
                            make_image([make_layer(200 * KiB, 423)], "arm64")])
    others = [make_image([make_layer(400 * KiB, 430 + i)]) for i in range(4)]
    fake.add_image("team/tagged", by_tag, tags=["1"])
    fake.add_index("team/digested", by_digest, tags=["1"])
    for i, image in enumerate(others):
        fake.add_image(f"team/other{i}", image, tags=["1"])
    pinned = content_of(by_tag, by_digest)
    storage = tmp_path / "cache"
    pins = [f"{UPSTREAM}/team/tagged:1", f"{UPSTREAM}/team/digested@{by_digest.digest}"]
    async with serving(fake.url, storage, max_size="1500KiB", pins=pins) as edge:
        # the pinned images are pulled first, so they are the least recently used
        await pull(edge, "team/tagged", "1", pinned)
        await pull(edge, "team/digested", "1", pinned)
        for i, image in enumerate(others):
            await pull(edge, f"team/other{i}", "1", content_of(image))
            on_disk = published(storage)
            assert set(pinned) <= set(on_disk), f"a pinned blob was evicted after other{i}"
            assert sum(on_disk.values()) <= 1500 * KiB
        assert edge.sample("edgecache_evictions_total") > 0

        # and they are served from the cache alone
        asked = len(fake.requests)
        await pull(edge, "team/tagged", by_tag.digest, pinned)
        await pull(edge, "team/digested", by_digest.digest, pinned)
        assert fake.requests[asked:] == []


async def test_a_tag_pin_protects_an_image_pulled_the_way_containerd_pulls(
        fake: FakeRegistry, tmp_path: Path) -> None:
    """containerd resolves a tag with a HEAD, then GETs the manifest by digest: the pin must
    protect that image from its first pull on."""
    pinned = make_image([make_layer(500 * KiB, 441)])
    fake.add_image("team/pinned", pinned, tags=["1"])
    others = [make_image([make_layer(400 * KiB, 442 + i)]) for i in range(3)]
    for i, image in enumerate(others):
        fake.add_image(f"team/other{i}", image, tags=["1"])
    storage = tmp_path / "cache"
    async with serving(fake.url, storage, max_size="1200KiB",
                       pins=[f"{UPSTREAM}/team/pinned:1"]) as edge:
        async with edge.client.head("/v2/team/pinned/manifests/1",
                                    headers={"Accept": ACCEPT}) as resp:
            assert resp.status == 200
            assert resp.headers["Docker-Content-Digest"] == pinned.digest
        await pull(edge, "team/pinned", pinned.digest, content_of(pinned))
        for i, image in enumerate(others):
            await pull(edge, f"team/other{i}", "1", content_of(image))
        assert edge.sample("edgecache_evictions_total") > 0
        missing = [d for d in content_of(pinned) if not edge.blob_path(d).exists()]
        assert missing == []


# ---- access times: batched, and a manifest ages its image as a whole ----------------------------


async def test_an_image_pulled_fresh_refreshes_the_cached_layers_it_shares(
        fake: FakeRegistry, tmp_path: Path) -> None:
    """Pulling a manifest (from the upstream, the first time) uses every blob it references: a
    layer it shares with an older image is recent again, so making room for the new image's
    own layers evicts the older image, not the shared layer and the image being pulled."""
    shared = make_layer(600 * KiB, 451)
    old = make_image([shared, make_layer(600 * KiB, 452)])
    new = make_image([make_layer(600 * KiB, 453), shared])
    fake.add_image("team/old", old, tags=["1"])
    fake.add_image("team/new", new, tags=["1"])
    storage = tmp_path / "cache"
    # 1800 KiB: the new image's own layer crosses the high watermark; evicting the old image's
    # own layer is enough to get back to the low one
    async with serving(fake.url, storage, max_size="1800KiB") as edge:
        await pull(edge, "team/old", "1", content_of(old))
        await pull(edge, "team/new", "1", content_of(new))  # its own layer first, then shared

        assert fake.completed[shared.digest] == 1  # never evicted and fetched again
        with index_view(storage) as view:
            held = view.sizes()
        assert set(content_of(new)) <= set(held)  # the new image is held whole
        assert old.digest not in held and old.layers[1].digest not in held


async def test_reads_of_cached_content_do_not_write_the_index_until_a_flush(
        fake: FakeRegistry, tmp_path: Path) -> None:
    image = make_image([make_layer(100 * KiB, 461), make_layer(100 * KiB, 462)])
    fake.add_image("team/app", image, tags=["1"])
    storage = tmp_path / "cache"
    # the janitor flushes at most every 60 s: within this test only a flush we cause counts
    async with serving(fake.url, storage, access_flush_interval="1h") as edge:
        await pull(edge, "team/app", "1", content_of(image))
        with index_view(storage) as view:
            before = view.last_access()
            version = view.data_version()
            for _ in range(20):  # cached manifest by digest and cached blobs only
                await pull(edge, "team/app", image.digest, content_of(image))
                for blob in image.blobs:
                    status, _ = await read_all(edge, f"/v2/team/app/blobs/{blob.digest}",
                                               {"Range": "bytes=0-9"})
                    assert status == 206
            assert view.data_version() == version  # no other connection committed anything
            assert view.last_access() == before
    # closing the app is a clean stop: pending access times are written once, now
    with index_view(storage) as view:
        after = view.last_access()
    assert set(after) == set(before)
    assert all(after[d] > before[d] for d in before), (before, after)


async def test_using_a_manifest_refreshes_everything_it_references_after_a_flush(
        fake: FakeRegistry, tmp_path: Path) -> None:
    index = make_index([make_image([make_layer(50 * KiB, 471)], "amd64"),
                        make_image([make_layer(50 * KiB, 472)], "arm64")])
    unrelated = make_image([make_layer(50 * KiB, 473)])
    fake.add_index("team/multi", index, tags=["1"])
    fake.add_image("team/unrelated", unrelated, tags=["1"])
    storage = tmp_path / "cache"
    async with serving(fake.url, storage, access_flush_interval="1h") as edge:
        await pull(edge, "team/multi", "1", content_of(index))
        await pull(edge, "team/unrelated", "1", content_of(unrelated))
    # stopped (every access time written): age everything, as if the last use was long ago
    with contextlib.closing(sqlite3.connect(storage / "index.db")) as db:
        db.execute("UPDATE blobs SET last_access=1000.0")
        db.commit()
    async with serving(fake.url, storage, access_flush_interval="1h") as edge:
        # only the top-level index manifest is requested, by digest
        status, body, _ = await fetch(edge, f"/v2/team/multi/manifests/{index.digest}",
                                      {"Accept": ACCEPT})
        assert status == 200 and body == index.manifest
        with index_view(storage) as view:
            assert set(view.last_access().values()) == {1000.0}  # not written yet
    with index_view(storage) as view:
        after = view.last_access()
    refreshed = {d for d, when in after.items() if when > 1000.0}
    assert refreshed == set(content_of(index))  # two levels down: manifests, configs, layers
    assert all(after[d] == 1000.0 for d in content_of(unrelated))


# ---- a real, tiny filesystem that runs out of space ---------------------------------------------

TINY_FS = 6 * MiB
MNT_DETACH = 2


@contextlib.contextmanager
def mounted_tmpfs(mountpoint: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes on `mountpoint` for the block (needs root: skips on EPERM)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    target = str(mountpoint).encode()
    if libc.mount(b"tmpfs", target, b"tmpfs", 0, f"size={size}".encode()) != 0:
        err = ctypes.get_errno()
        if err == errno.EPERM:
            pytest.skip("mount(2) of a tmpfs failed with EPERM: this test needs root with "
                        "CAP_SYS_ADMIN (an unprivileged container cannot mount)")
        raise OSError(err, f"mount tmpfs on {mountpoint}: {errno.errorcode.get(err, err)}")
    try:
        yield mountpoint
    finally:
        if libc.umount2(target, 0) != 0:  # still busy: detach it, the kernel frees it later
            libc.umount2(target, MNT_DETACH)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 6 MiB, mounted for this test only."""
    with mounted_tmpfs(tmp_path / "tiny", TINY_FS) as mountpoint:
        yield mountpoint


def fill_disk(directory: Path, size: int = TINY_FS) -> Path:
    """Take every free byte of the filesystem (another tenant); bounded by its size."""
    filler = directory / "other-tenant.bin"
    chunk = b"\0" * (64 * KiB)
    with filler.open("wb") as handle:
        for _ in range(size // len(chunk) + 2):
            try:
                handle.write(chunk)
                handle.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        else:
            pytest.fail("the tmpfs never filled up")
    return filler


async def wait_for(edge: Edge, metric: str, value: float, rounds: int = 400) -> None:
    """Bounded poll until a gauge reaches `value` (it reports state, not time)."""
    await await_until(lambda: edge.sample(metric) == value, f"{metric} to reach {value}",
                      timeout=rounds * 0.01, describe=lambda: f"at {edge.sample(metric)}")


def write_config(tmp_path: Path, storage: Path, fake_url: str) -> Path:
    path = tmp_path / "edgecache.yaml"
    path.write_text(json.dumps({
        "listen": {"http": "127.0.0.1:0", "https": None},
        "storage": {"path": str(storage), "min_free": "0"},
        "upstreams": {UPSTREAM: {"url": fake_url}},
        "default_upstream": UPSTREAM,
    }))
    return path


def run_verify(config: Path, capsys: pytest.CaptureFixture[str],
               *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["verify", "--config", str(config), *extra])
    return code, capsys.readouterr().out


async def test_a_disk_that_fills_during_a_download_still_serves_every_client(
        fake: FakeRegistry, tiny_fs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """The blob fits when its download starts; another tenant takes the disk while it is
    being written; the next write fails with ENOSPC. Every client (whole blob and ranges) still
    gets the right bytes, from the upstream; nothing partial is published; tmp/ is emptied."""
    blob = make_layer(4 * MiB, 481)
    digest = fake.add_blob(blob)
    fault = fake.fault(digest, BlobFault(gate_after=1 * MiB))
    storage = tiny_fs / "cache"
    path = f"/v2/team/app/blobs/{digest}"
    ranges = [(100, 2_000_100), (3_000_000, len(blob.data))]  # across the point it stalls at
    async with serving(fake.url, storage) as edge:  # no max_size: the disk is the budget
        async with asyncio.timeout(READ_TIMEOUT), edge.client.get(path) as whole:
            assert whole.status == 200
            head = await whole.content.readexactly(512 * KiB)  # the download is under way
            partial = [asyncio.create_task(
                read_all(edge, path, {"Range": f"bytes={start}-{end - 1}"}))
                for start, end in ranges]
            await wait_for(edge, "edgecache_download_readers", 3)  # all joined the one fill
            assert edge.sample("edgecache_downloads_in_flight") == 1

            filler = fill_disk(tiny_fs)
            fault.gate.set()
            rest = await whole.read()
            results = await asyncio.gather(*partial)

        if head + rest != blob.data:
            pytest.fail(f"the whole-blob client got {len(head + rest)} wrong bytes")
        for (start, end), (status, body) in zip(ranges, results, strict=True):
            assert status == 206 and body == blob.data[start:end], (start, end, status)
        assert edge.sample("edgecache_uncacheable_total") == 1
        assert f"cannot cache {digest} ([Errno {errno.ENOSPC}]" in caplog.text
        assert not edge.blob_path(digest).exists()
        assert edge.tmp_files() == []
        assert published(storage) == {}

        filler.unlink()  # the tenant leaves: the same blob is cached by the next pull
        status, body = await read_all(edge, path)
        assert status == 200 and body == blob.data
        assert edge.blob_path(digest).read_bytes() == blob.data
        assert edge.tmp_files() == []

    code, out = run_verify(write_config(tmp_path, storage, fake.url), capsys)
    assert code == 0, out
    assert "checked 1 blobs: 0 corrupt, 0 missing, 0 not indexed" in out


def unsized_upstream(blobs: dict[str, bytes]) -> web.Application:
    """An upstream that sends blob bodies chunked, without a size (some registries and CDNs
    do); Range requests get a 206 with a Content-Range."""

    async def base(request: web.Request) -> web.StreamResponse:
        return web.json_response({})

    async def blob(request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        data = blobs[digest]
        headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"}
        wanted = request.headers.get("Range", "")
        if wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[6:-1])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return web.Response(status=206, body=data[start:], headers=headers)
        response = web.StreamResponse(headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for pos in range(0, len(data), 256 * KiB):
            await response.write(data[pos:pos + 256 * KiB])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/v2/", base)
    app.router.add_get("/v2/{repo:.+}/blobs/{digest}", blob)
    return app


async def test_a_blob_bigger_than_the_free_space_hits_enospc_and_is_still_served(
        tiny_fs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """No size announced, so nothing can be reserved: the write runs into ENOSPC after about
    6 MiB of 10. Both clients get all 10 MiB right; nothing is published; tmp/ is empty."""
    blob = make_layer(10 * MiB, 491)
    server = TestServer(unsized_upstream({blob.digest: blob.data}), host="127.0.0.1")
    await server.start_server()
    storage = tiny_fs / "cache"
    url = str(server.make_url("")).rstrip("/")
    try:
        async with serving(url, storage) as edge:
            path = f"/v2/team/app/blobs/{blob.digest}"
            results = await asyncio.gather(read_all(edge, path), read_all(edge, path))
            for status, body in results:
                assert status == 200
                if body != blob.data:
                    pytest.fail(f"a client got {len(body)} wrong bytes")
            assert edge.sample("edgecache_uncacheable_total") >= 1
            assert f"cannot cache {blob.digest} ([Errno {errno.ENOSPC}]" in caplog.text
            assert edge.sample("edgecache_upstream_fetched_bytes_total",
                               upstream=UPSTREAM) < len(blob.data)  # the fill stopped midway
            assert not edge.blob_path(blob.digest).exists()
            assert edge.tmp_files() == []
    finally:
        await server.close()
    code, out = run_verify(write_config(tmp_path, storage, url), capsys)
    assert code == 0, out
    assert "checked 0 blobs: 0 corrupt, 0 missing, 0 not indexed" in out


async def test_a_blob_announced_bigger_than_the_free_space_is_never_written(
        fake: FakeRegistry, tiny_fs: Path) -> None:
    blob = make_layer(10 * MiB, 492)
    digest = fake.add_blob(blob)
    storage = tiny_fs / "cache"
    async with serving(fake.url, storage) as edge:
        path = f"/v2/team/app/blobs/{digest}"
        status, body = await read_all(edge, path)
        assert status == 200 and body == blob.data
        status, body = await read_all(edge, path, {"Range": "bytes=7000000-7999999"})
        assert status == 206 and body == blob.data[7_000_000:8_000_000]
        assert edge.sample("edgecache_uncacheable_total") >= 1
        assert edge.sample("edgecache_upstream_fetched_bytes_total", upstream=UPSTREAM) == 0
        assert published(storage) == {}
        assert edge.tmp_files() == []


async def test_nothing_is_evicted_when_even_evicting_all_unpinned_content_would_not_do(
        stores: list[Store], tmp_path: Path) -> None:
    """6000 pinned + 2000 loose in 10000: a 5000-byte blob cannot fit whatever goes, so the
    loose image stays cached and the blob is served uncached."""
    store = new_store(stores, tmp_path, max_size=10_000)
    pinned_layer = await store.add(6000)
    pinned = await store.add_manifest([pinned_layer])
    store.index.set_tag(UPSTREAM, "team/pinned", "1", pinned)
    loose = await store.add(2000)
    store.restart((f"{UPSTREAM}/team/pinned:1",))

    assert not await store.quota.reserve(5000)
    assert store.on_disk(loose)
    assert store.sample("edgecache_evictions_total") == 0
    assert store.sample("edgecache_uncacheable_total") == 1
    # while a blob that fits once the loose one goes still evicts it
    assert await store.quota.reserve(3000)
    assert not store.on_disk(loose)
