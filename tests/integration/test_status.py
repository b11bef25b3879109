"""Day two, seen from outside: `/v2/_catalog`, tag lists while the upstream is gone, and the
status page in a real browser.

The upstreams are real docker-registry processes seeded with the generated corpus; skopeo
pulls through a real edgecache process. The browser is Debian's Chromium, headless, driven by
Playwright (PyPI `playwright`, never its own browser download); a missing Chromium fails the
test. Its screenshots are written to tests/artifacts/ (gitignored), named in the test's
report (`record_property`) and in its failure message.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from tests.support.corpus import HUB, REGISTRY_B, Corpus, seed
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.httpclient import fetch
from tests.support.registry import DockerRegistry
from tests.support.skopeo import Skopeo
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
HELD = [f"{HUB}/library/alpha", f"{HUB}/library/beta", f"{HUB}/library/classic",
        f"{HUB}/library/multi", f"{REGISTRY_B}/team/app"]


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory, hub: DockerRegistry,
         registry_b: DockerRegistry) -> Iterator[EdgecacheProcess]:
    """edgecache with a metrics listener and five images pulled through it by skopeo."""
    workdir = tmp_path_factory.mktemp("status")
    ec = EdgecacheProcess(workdir / "edgecache", {HUB: hub.url, REGISTRY_B: registry_b.url},
                          default_upstream=HUB, metrics=True)
    skopeo = Skopeo(workdir / "skopeo")
    try:
        for name in HELD:
            path = name.removeprefix(f"{HUB}/")  # docker.io's: the default upstream
            skopeo.copy(f"docker://{ec.address}/{path}:1",
                        f"dir:{workdir / name.replace('/', '_')}", tls_verify=False)
        yield ec
    finally:
        skopeo.close()
        ec.close()


def get_json(url: str) -> tuple[int, Message, object]:
    answer = fetch(url)
    return answer.status, answer.headers, json.loads(answer.body)


def test_the_catalog_lists_what_is_held_per_routing_style(warm: EdgecacheProcess) -> None:
    assert get_json(f"{warm.url}/v2/_catalog")[2] == {"repositories": HELD}
    assert get_json(f"{warm.url}/v2/_catalog?ns={HUB}")[2] == {"repositories": [
        "library/alpha", "library/beta", "library/classic", "library/multi"]}
    assert get_json(f"{warm.url}/v2/{REGISTRY_B}/_catalog")[2] == {"repositories": ["team/app"]}
    pages, url = [], f"{warm.url}/v2/_catalog?n=2"
    for _ in range(10):  # bounded: three pages expected
        status, headers, doc = get_json(url)
        assert status == 200 and isinstance(doc, dict)
        pages.append(doc["repositories"])
        link = headers.get("Link")
        if link is None:
            break
        url = warm.url + link.split(">")[0].lstrip("<")
    assert pages == [HELD[0:2], HELD[2:4], HELD[4:]]


def test_tag_lists_are_answered_from_cache_while_the_upstream_is_gone(
        docker_registry: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache,
        skopeo: Skopeo, tmp_path: Path) -> None:
    seed(docker_registry, [corpus.alpha])
    docker_registry.push_image(corpus.alpha.repository, "2", corpus.alpha.top)  # never pulled
    ec = edgecaches("edgecache", {HUB: docker_registry.url}, default_upstream=HUB, extra={
        "health": {"failure_threshold": 2, "probe_min_interval": "200ms",
                   "probe_max_interval": "500ms"}})
    skopeo.copy(f"docker://{ec.address}/library/alpha:1", f"dir:{tmp_path / 'a'}",
                tls_verify=False)
    tags = f"{ec.url}/v2/library/alpha/tags/list"
    status, headers, doc = get_json(tags)
    assert status == 200 and doc == {"name": "library/alpha", "tags": ["1", "2"]}
    assert headers["X-Edgecache-Cache"] == "miss" and "Warning" not in headers

    docker_registry.proc.kill()  # by PID: a real outage
    docker_registry.proc.wait(timeout=10)
    for _ in range(3):  # refused, refused (now marked down), then failing at once
        status, headers, doc = get_json(tags)
        assert status == 200 and doc == {"name": "library/alpha", "tags": ["1"]}
        assert headers["X-Edgecache-Cache"] == "stale"
        assert headers["Warning"].startswith('110 edgecache "Response is Stale')
    wait_until(lambda: f"upstream {HUB} is down" in ec.log(), "the upstream marked down")
    answer = fetch(f"{ec.url}/v2/library/beta/tags/list")  # nothing known of it
    assert answer.status == 503 and b"UNAVAILABLE" in answer.body


def test_the_status_page_in_a_browser(warm: EdgecacheProcess,
                                      tmp_path: Path,
                                      record_property: pytest.RecordProperty) -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: scripts/install-system-deps.sh installs it")
    from playwright.sync_api import expect, sync_playwright

    assert warm.metrics_url is not None
    ARTIFACTS.mkdir(exist_ok=True)
    overview, detail = ARTIFACTS / "status-page.png", ARTIFACTS / "status-image.png"
    record_property("screenshots", f"{overview} {detail}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900}, timeout=60_000)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{warm.metrics_url}/")
            rows = page.locator("#images tr:has(td)")
            expect(rows).to_have_count(len(HELD))
            expect(page.locator("#disk")).to_contain_text("free of")
            expect(page.locator("#peers")).to_have_text("cluster mode off")
            expect(page.locator("#upstreams")).to_contain_text(REGISTRY_B)
            page.fill("input[name=q]", "multi")
            page.click("button")
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("linux/amd64, linux/arm64")
            page.goto(f"{warm.metrics_url}/?sort=size&order=desc")
            expect(rows.first).to_contain_text("library/alpha")  # the biggest: 9 MiB
            page.screenshot(path=str(overview), full_page=True)
            page.click("text=library/alpha")
            expect(page.locator("h2").first).to_have_text(f"{HUB}/library/alpha:1")
            blobs = page.locator("#blobs tr:has(td)")
            expect(blobs).to_have_count(5)  # the manifest, its config and three layers
            expect(page.locator("#blobs")).not_to_contain_text("not cached")
            expect(page.locator("#referrers")).to_have_text("no referrers cached")
            page.screenshot(path=str(detail), full_page=True)
        finally:
            browser.close()
    assert overview.stat().st_size > 0 and detail.stat().st_size > 0, f"see {ARTIFACTS}"
