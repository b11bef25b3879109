"""Shared fixtures. Real components missing is a failure, never a skip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.registry import DockerRegistry


@pytest.fixture
def docker_registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    registry = DockerRegistry(tmp_path / "upstream")
    try:
        yield registry
    finally:
        registry.close()
