"""Integration fixtures: real docker-registry upstreams, edgecache processes, skopeo.

The upstreams are seeded once per module and shared; each test starts its own edgecache (cold
cache) and counts upstream requests from a log mark taken after its own setup, so tests do not
see each other's traffic. A missing docker-registry or skopeo raises: it fails, never skips.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.containerd import Containerd, ContainerdCannotRun
from tests.support.corpus import HUB, REGISTRY_B, Corpus, build_corpus, seed
from tests.support.docker import Dockerd
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.registry import DockerRegistry
from tests.support.skopeo import Skopeo

_corpus = functools.cache(build_corpus)


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return _corpus()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, corpus: Corpus) -> Iterator[DockerRegistry]:
    """The upstream edgecache calls `docker.io` (repositories under library/)."""
    registry = DockerRegistry(tmp_path_factory.mktemp("hub"))
    try:
        seed(registry, corpus.hub)
        yield registry
    finally:
        registry.close()


@pytest.fixture(scope="module")
def registry_b(tmp_path_factory: pytest.TempPathFactory,
               corpus: Corpus) -> Iterator[DockerRegistry]:
    """The upstream edgecache calls `registry-b.test`."""
    registry = DockerRegistry(tmp_path_factory.mktemp("registry-b"))
    try:
        seed(registry, corpus.registry_b)
        yield registry
    finally:
        registry.close()


@pytest.fixture
def edgecaches(tmp_path: Path) -> Iterator[StartEdgecache]:
    """Start edgecache processes (`start(name, upstreams, default_upstream=..., storage=...)`);
    all are stopped, by PID, when the test ends."""
    started: list[EdgecacheProcess] = []

    def start(name: str, upstreams: dict[str, str], **kwargs: object) -> EdgecacheProcess:
        process = EdgecacheProcess(tmp_path / name, upstreams, **kwargs)  # type: ignore[arg-type]
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in reversed(started):
            process.close()


@pytest.fixture
def both_upstreams(hub: DockerRegistry, registry_b: DockerRegistry) -> dict[str, str]:
    """edgecache's `upstreams` for the two seeded registries."""
    return {HUB: hub.url, REGISTRY_B: registry_b.url}


@pytest.fixture
def skopeo(tmp_path: Path) -> Iterator[Skopeo]:
    client = Skopeo(tmp_path / "skopeo")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Containerd]:
    """A private containerd. A missing binary raises (the test fails); only containerd dying
    at start-up in this environment skips, with its reason."""
    try:
        daemon = Containerd(tmp_path / "c")
    except ContainerdCannotRun as exc:
        pytest.skip(f"containerd cannot run in this environment: {exc}")
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
def dockerds() -> Iterator[list[Dockerd]]:
    """Daemons the test starts (with the config file it generated); stopped by PID."""
    started: list[Dockerd] = []
    try:
        yield started
    finally:
        for daemon in started:
            daemon.close()
