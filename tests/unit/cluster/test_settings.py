"""The `cluster:` section: every problem reported at once, one line each."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
import yaml

from edgecache import cli
from edgecache.cluster.settings import ClusterConfig
from edgecache.config import InvalidConfig, from_mapping
from edgecache.errors import ConfigError
from tests.unit.test_site_ca import write_ca

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
    short = ClusterConfig(secret_file=secret(tmp_path, "short\n"))
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        short.secret()


def test_check_config_says_a_short_secret_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"storage": {"path": str(tmp_path / "storage")},
                                    "cluster": {"dns": "edgecache.site.svc",
                                                "secret_file": secret(tmp_path, "short\n")}}))
    assert cli.main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "cluster.secret_file" in err[0] and "at least 16 bytes" in err[0]


def test_https_peers_need_a_ca_every_node_trusts(tmp_path: Path) -> None:
    cluster = {"peers": ["https://127.0.0.1:5001", "https://127.0.0.2:5001"],
               "secret_file": secret(tmp_path)}
    with pytest.raises(InvalidConfig) as caught:
        from_mapping({"listen": LISTEN, "cluster": cluster})
    assert [p for p in caught.value.problems if "CA" in p] == [
        "cluster: https peers need a CA every node trusts: set tls.ca_cert_file and "
        "tls.ca_key_file (the site CA) or tls.cert_file (a certificate the system CAs trust); "
        "a self-managed CA is each node's own"]
    with pytest.raises(InvalidConfig, match="https peers need a CA"):
        from_mapping({"listen": LISTEN, "cluster": {"dns": "edgecache.site.svc",
                                                    "scheme": "https",
                                                    "secret_file": secret(tmp_path)}})
    cert, key = write_ca(tmp_path, trustme.CA())
    config = from_mapping({"listen": LISTEN, "cluster": cluster,
                           "tls": {"ca_cert_file": str(cert), "ca_key_file": str(key)}})
    assert config.cluster.peers == tuple(cluster["peers"])
    plain = {"peers": ["http://127.0.0.1:5001"], "secret_file": secret(tmp_path)}
    assert from_mapping({"listen": LISTEN, "cluster": plain}).cluster.enabled
