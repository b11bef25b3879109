from __future__ import annotations

from pathlib import Path

import pytest

from edgecache import config
from edgecache.errors import ConfigError


def test_embedded_defaults() -> None:
    cfg = config.load(None)
    assert cfg.listen.http == "127.0.0.1:5000"
    assert cfg.storage.path == Path("/var/lib/edgecache")
    assert set(cfg.upstreams) == {"docker.io", "ghcr.io", "registry.k8s.io", "quay.io"}
    assert cfg.default_upstream == "docker.io"


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.yaml"
    cfg = config.load(str(example))
    assert "docker.io" in cfg.upstreams


@pytest.mark.parametrize(("value", "seconds"), [
    ("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h", 3600), (12, 12), (1.5, 1.5), ("2", 2),
])
def test_durations(value: object, seconds: float) -> None:
    assert config.parse_duration(value, "k") == seconds


@pytest.mark.parametrize("value", ["soon", "-1s", True, None, "5 minutes", [1]])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^k: "):
        config.parse_duration(value, "k")


@pytest.mark.parametrize(("raw", "key"), [
    ({"listen": {"https": "x"}}, "listen.https"),
    ({"bogus": 1}, "bogus"),
    ({"listen": {"http": 5000}}, "listen.http"),
    ({"listen": {"http": "localhost"}}, "listen.http"),
    ({"listen": {"http": "127.0.0.1:\u00b2"}}, "listen.http"),  # a digit to isdigit(), not int()
    ({"storage": {"path": 3}}, "storage.path"),
    ({"upstreams": {"x.io": {"url": "ftp://x.io"}}}, "upstreams.x.io.url"),
    ({"upstreams": {"x.io": {"url": "https://u:p@x.io"}}}, "upstreams.x.io.url"),
    ({"upstreams": {"x.io": {"url": "https://x.io", "colour": 1}}}, "upstreams.x.io.colour"),
    ({"upstreams": {"x.io": {"url": "https://x.io", "username": "u",
                             "password_file": "/nonexistent/pw"}}}, "upstreams.x.io.password_file"),
    ({"upstreams": {"x.io": {"url": "https://x.io", "read_timeout": "forever"}}},
     "upstreams.x.io.read_timeout"),
    ({"upstreams": {"x.io": {"url": "https://x.io"}}, "default_upstream": "y.io"},
     "default_upstream"),
    ({"upstreams": {}}, "upstreams"),
    ({"log": {"level": "loud"}}, "log.level"),
])
def test_errors_name_the_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.from_mapping(raw)
    message = str(info.value)
    assert message.startswith(key + ":") or message.startswith(key + " ")
    assert "\n" not in message


def test_credentials_read_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    cfg = config.from_mapping({"upstreams": {"x.io": {
        "url": "https://x.io/", "username": "me", "password_file": str(secret),
        "access": "public"}}})
    upstream = cfg.upstreams["x.io"]
    assert upstream.url == "https://x.io"
    assert upstream.password() == "s3cret"
    assert "s3cret" not in repr(cfg)
    assert cfg.default_upstream is None


def test_invalid_yaml_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        config.load(str(bad))
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(str(tmp_path / "missing.yaml"))
