"""The `cluster:` section: every problem reported at once, one line each."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecache.config import InvalidConfig, from_mapping
from edgecache.errors import ConfigError

LISTEN = {"http": "127.0.0.2:5000", "https": None}


def secret(tmp_path: Path, text: str = "x" * 32) -> str:
    path = tmp_path / "secret"
    path.write_text(text)
    return str(path)


def test_peers_are_normalised_and_self_is_derived_from_the_listener(tmp_path: Path) -> None:
    config = from_mapping({"listen": LISTEN, "cluster": {
        "peers": ["HTTP://127.0.0.1:5000/", "http://127.0.0.2:5000", "http://127.0.0.1:5000"],
        "secret_file": secret(tmp_path)}})
    assert config.cluster.peers == ("http://127.0.0.1:5000", "http://127.0.0.2:5000")
    assert config.cluster.self_url == "http://127.0.0.2:5000"
    assert config.cluster.enabled
    assert config.cluster.secret() == b"x" * 32
    assert not from_mapping({}).cluster.enabled


def test_every_problem_at_once(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig) as caught:
        from_mapping({"cluster": {"peers": ["ftp://a", 3, "http://a:1/x", "http://a:1"],
                                  "dns": "b c", "port": 70000, "self": "nope", "ask_timeout": "0s",
                                  "bogus": 1}})
    problems = caught.value.problems
    for expected in ("cluster.bogus: unknown key", "cluster.peers[0]", "cluster.peers[1]",
                     "cluster.peers[2]: a peer URL has no path", "cluster.dns",
                     "cluster: set peers or dns, not both", "cluster.port",
                     "cluster.secret_file: required", "cluster.self", "cluster.ask_timeout"):
        assert any(p.startswith(expected) for p in problems), (expected, problems)
    assert all("\n" not in p for p in problems)


def test_a_short_secret_stops_the_start_with_one_line(tmp_path: Path) -> None:
    config = from_mapping({"cluster": {"dns": "edgecache.site.svc",
                                       "secret_file": secret(tmp_path, "short\n")}})
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        config.cluster.secret()
