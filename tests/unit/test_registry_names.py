"""Registry names, one handling for the router, the air-gap commands and the configuration."""

from __future__ import annotations

import pytest

from edgecache.oci import canonical_registry, is_registry_name, names_registry

UPSTREAMS = frozenset({"docker.io", "ghcr.io", "registry.local:5000"})


@pytest.mark.parametrize(("name", "means"), [
    ("docker.io", "docker.io"), ("INDEX.docker.io", "docker.io"),
    ("registry-1.docker.io", "docker.io"), ("GHCR.IO", "ghcr.io"),
    ("registry.local:5000", "registry.local:5000"), ("registry.local", None), ("quay.io", None),
])
def test_canonical_registry(name: str, means: str | None) -> None:
    assert canonical_registry(name, UPSTREAMS) == means
    assert canonical_registry(name, {"ghcr.io"}) == (means if means == "ghcr.io" else None)


@pytest.mark.parametrize(("text", "ok"), [
    ("ghcr.io", True), ("localhost:5000", True), ("a-b.example:65535", True),
    ("host:0", False), ("host:65536", False), ("host:", False), ("-bad.io", False),
    ("a" * 64 + ".io", False), ("ho st", False), ("host:５０", False), ("", False),
])
def test_is_registry_name(text: str, ok: bool) -> None:
    assert is_registry_name(text) is ok


def test_docker_rule_for_a_first_component() -> None:
    assert names_registry("ghcr.io") and names_registry("host:5000")
    assert names_registry("localhost")
    assert not names_registry("library") and not names_registry("team")
