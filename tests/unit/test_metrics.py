"""The metrics endpoint, parsed with prometheus-client's own parser: each kind of event moves
the right series by the right amount."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

from edgecache import __version__
from edgecache.app import METRICS, READY
from edgecache.web.observability import metrics_app
from tests.fakes.registry import FakeRegistry
from tests.support.images import make_image, make_layer
from tests.unit.conftest import UPSTREAM, Edge, MakeEdge

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "images" / "monitoring"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape_text(client: TestClient[web.Request, web.Application]) -> str:
    async with client.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return await resp.text()


async def scrape(client: TestClient[web.Request, web.Application]) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(await scrape_text(client)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def scraper(aiohttp_client: AiohttpClient, edge: Edge
                  ) -> TestClient[web.Request, web.Application]:
    app = edge.client.app
    assert app is not None
    return await aiohttp_client(metrics_app(app[METRICS], lambda: app.get(READY)))


def seed(fake: FakeRegistry) -> tuple[str, bytes, str]:
    layer = make_layer(300_000, seed=41)
    image = make_image([layer])
    fake.add_image("team/app", image, tags=["1"])
    return layer.digest, layer.data, image.digest


async def test_cold_then_warm_pull_moves_the_right_series(
        fake: FakeRegistry, edge: Edge,
        scraper: TestClient[web.Request, web.Application]) -> None:
    digest, data, _ = seed(fake)
    before = await scrape(scraper)

    async with edge.client.get("/v2/team/app/manifests/1") as resp:
        assert resp.status == 200
    async with edge.client.get(f"/v2/team/app/blobs/{digest}") as resp:
        assert await resp.read() == data
    cold = await scrape(scraper)
    assert value(cold, "edgecache_requests_total", route="blob", result="miss") == 1
    assert value(cold, "edgecache_requests_total", route="manifest", result="miss") == 1
    assert value(cold, "edgecache_upstream_fetched_bytes_total", upstream=UPSTREAM) == len(data)
    assert value(cold, "edgecache_served_bytes_total", source="upstream") == len(data)
    assert value(cold, "edgecache_saved_bytes_total") == 0
    assert value(cold, "edgecache_cached_blobs") == 1
    assert value(cold, "edgecache_cached_manifests") == 1
    assert value(cold, "edgecache_cache_size_bytes") > value(before, "edgecache_cache_size_bytes")
    assert value(cold, "edgecache_upstream_requests_total", upstream=UPSTREAM) >= 3
    assert value(cold, "edgecache_upstream_up", upstream=UPSTREAM) == 1
    assert value(cold, "edgecache_upstream_last_success_timestamp_seconds",
                 upstream=UPSTREAM) > 0
    assert value(cold, "edgecache_request_duration_seconds_count", route="blob") == 1

    async with edge.client.get(f"/v2/team/app/blobs/{digest}") as resp:
        assert await resp.read() == data
    warm = await scrape(scraper)
    assert value(warm, "edgecache_requests_total", route="blob", result="hit") == 1
    assert value(warm, "edgecache_served_bytes_total", source="cache") == len(data)
    assert value(warm, "edgecache_saved_bytes_total") == len(data)
    assert (value(warm, "edgecache_upstream_fetched_bytes_total", upstream=UPSTREAM)
            == len(data))  # nothing more fetched
    assert value(warm, "process_resident_memory_bytes") > 0
    assert value(warm, "edgecache_filesystem_free_bytes") > 0


async def test_an_outage_serve_counts_stale_and_errors(
        fake: FakeRegistry, make_edge: MakeEdge, aiohttp_client: AiohttpClient) -> None:
    edge = await make_edge(top={"cache": {"tag_ttl": "0s"},
                                "health": {"failure_threshold": 1, "probe_min_interval": "1h",
                                           "probe_max_interval": "1h"}})
    app = edge.client.app
    assert app is not None
    scraper = await aiohttp_client(metrics_app(app[METRICS], lambda: app.get(READY)))
    seed(fake)
    async with edge.client.get("/v2/team/app/manifests/1") as resp:
        assert resp.status == 200
    fake.fail(503)

    async with edge.client.get("/v2/team/app/manifests/1") as resp:
        assert resp.status == 200
    samples = await scrape(scraper)
    assert value(samples, "edgecache_requests_total", route="manifest", result="stale") == 1
    assert value(samples, "edgecache_stale_serves_total", upstream=UPSTREAM) == 1
    assert value(samples, "edgecache_upstream_errors_total", upstream=UPSTREAM,
                 kind="status_5xx") == 1
    assert value(samples, "edgecache_upstream_up", upstream=UPSTREAM) == 0

    async with edge.client.get("/v2/team/app/blobs/sha256:" + "0" * 64) as resp:
        assert resp.status == 503
    samples = await scrape(scraper)
    assert value(samples, "edgecache_requests_total", route="blob", result="error") == 1


async def test_an_eviction_moves_eviction_series(
        fake: FakeRegistry, make_edge: MakeEdge, aiohttp_client: AiohttpClient,
        tmp_path: Path) -> None:
    edge = await make_edge(top={"storage": {"path": str(tmp_path / "small"), "max_size": "1MB",
                                            "min_free": "0"}})
    app = edge.client.app
    assert app is not None
    scraper = await aiohttp_client(metrics_app(app[METRICS], lambda: app.get(READY)))
    first, second = make_layer(600_000, seed=51), make_layer(600_000, seed=52)
    for blob in (first, second):
        digest = fake.add_blob(blob)
        async with edge.client.get(f"/v2/team/app/blobs/{digest}") as resp:
            assert await resp.read() == blob.data
    samples = await scrape(scraper)
    assert value(samples, "edgecache_evictions_total") == 1
    assert value(samples, "edgecache_evicted_bytes_total") == len(first.data)
    assert value(samples, "edgecache_cache_size_bytes") == len(second.data)
    assert value(samples, "edgecache_cache_budget_bytes") == 1_000_000
    assert value(samples, "edgecache_cache_watermark_bytes", level="high") == 950_000
    assert value(samples, "edgecache_cache_watermark_bytes", level="low") == 850_000
    assert value(samples, "edgecache_eviction_shortfall_bytes") == 0


async def test_an_eviction_that_cannot_reach_the_low_watermark_shows_its_shortfall(
        fake: FakeRegistry, make_edge: MakeEdge, aiohttp_client: AiohttpClient,
        tmp_path: Path) -> None:
    """A pinned image fills the budget: the next blob cannot make room, and the gauge the
    EdgecacheEvictionStuck alert reads says by how much."""
    layer = make_layer(700_000, seed=53)
    image = make_image([layer])
    fake.add_image("team/app", image, tags=["1"])
    edge = await make_edge(top={
        "storage": {"path": str(tmp_path / "pinned"), "max_size": "1MB", "min_free": "0"},
        "pins": [f"{UPSTREAM}/team/app:1"]})
    app = edge.client.app
    assert app is not None
    scraper = await aiohttp_client(metrics_app(app[METRICS], lambda: app.get(READY)))
    async with edge.client.get("/v2/team/app/manifests/1") as resp:
        assert resp.status == 200
    async with edge.client.get(f"/v2/team/app/blobs/{layer.digest}") as resp:
        assert await resp.read() == layer.data
    other = make_layer(600_000, seed=54)
    digest = fake.add_blob(other)
    async with edge.client.get(f"/v2/team/app/blobs/{digest}") as resp:
        assert await resp.read() == other.data
    samples = await scrape(scraper)
    assert value(samples, "edgecache_evictions_total") == 0
    assert value(samples, "edgecache_uncacheable_total") == 1
    assert value(samples, "edgecache_eviction_shortfall_bytes") > 0


async def test_build_info_responses_by_class_and_no_created_series(
        fake: FakeRegistry, edge: Edge,
        scraper: TestClient[web.Request, web.Application]) -> None:
    digest, _, _ = seed(fake)
    async with edge.client.get(f"/v2/team/app/blobs/{digest}") as resp:
        assert resp.status == 200
    async with edge.client.get("/v2/team/app/manifests/absent") as resp:
        assert resp.status == 404
    fake.fail(503)
    async with edge.client.get("/v2/team/app/blobs/sha256:" + "3" * 64) as resp:
        assert resp.status == 503
    text = await scrape_text(scraper)
    samples = await scrape(scraper)
    assert value(samples, "edgecache_build_info", version=__version__) == 1
    assert value(samples, "edgecache_responses_total", code="2xx") == 1
    assert value(samples, "edgecache_responses_total", code="4xx") == 1
    assert value(samples, "edgecache_responses_total", code="5xx") == 1
    assert "_created" not in text


async def test_health_endpoints(edge: Edge,
                                scraper: TestClient[web.Request, web.Application]) -> None:
    for client in (edge.client, scraper):
        async with client.get("/healthz") as resp:
            assert resp.status == 200
        async with client.get("/readyz") as resp:
            assert resp.status == 200, await resp.text()
    (edge.storage / "tmp").chmod(0o500)
    try:
        async with scraper.get("/readyz") as resp:
            body = await resp.json()
        if resp.status == 200:  # root ignores directory permissions: make tmp a file instead
            (edge.storage / "tmp").chmod(0o700)
            shutil.rmtree(edge.storage / "tmp")
            (edge.storage / "tmp").write_text("not a directory")
            async with scraper.get("/readyz") as resp:
                body = await resp.json()
        assert resp.status == 503
        assert any("storage" in problem for problem in body["problems"])
    finally:
        path = edge.storage / "tmp"
        if path.is_file():
            path.unlink()
            path.mkdir()
        path.chmod(0o700)


async def test_request_id_is_echoed_and_generated(edge: Edge) -> None:
    async with edge.client.get("/v2/", headers={"X-Request-Id": "abc-123"}) as resp:
        assert resp.headers["X-Request-Id"] == "abc-123"
    insane = "not a sane id; " + "x" * 80
    async with edge.client.get("/v2/", headers={"X-Request-Id": insane}) as resp:
        generated = resp.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", generated)


# ---- the dashboard and the alert rules only use what the service exports --------------------

def exported_names(text: str) -> set[str]:
    """Every series name the exposition declares, labelled families without samples included."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
        names.update(family.name + s for s in suffixes.get(family.type, ()))
    return names


def referenced_names(text: str) -> set[str]:
    return set(re.findall(r"\b((?:edgecache|process)_[a-z_]+)\b", text))


async def test_dashboard_and_alerts_use_exported_metric_names(
        fake: FakeRegistry, edge: Edge,
        scraper: TestClient[web.Request, web.Application]) -> None:
    digest, _, _ = seed(fake)
    async with edge.client.get(f"/v2/team/app/blobs/{digest}") as resp:
        await resp.read()
    names = exported_names(await scrape_text(scraper))
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    expressions = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    alerts = (MONITORING / "alerts.yaml").read_text()
    alert_tests = (MONITORING / "alerts.test.yaml").read_text()
    for source, text in (("dashboard", expressions), ("alerts", alerts),
                         ("alert tests", alert_tests)):
        used = referenced_names(text)
        assert used, source
        assert used <= names, f"{source} uses metrics edgecache does not export: {used - names}"


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (apt-get install prometheus; make system-deps)"
    result = subprocess.run([promtool, "check", "rules", str(MONITORING / "alerts.yaml")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
