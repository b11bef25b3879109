"""The command line as an operator meets it: exit codes and one-line configuration errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def edgecache(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgecache", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def good_config(tmp_path: Path) -> dict[str, Any]:
    password = tmp_path / "password"
    password.write_text("secret\n")
    return {
        "listen": {"http": "127.0.0.1:0", "https": None},
        "storage": {"path": str(tmp_path / "storage")},
        "default_upstream": "docker.io",
        "upstreams": {
            "docker.io": {"url": "http://127.0.0.1:1", "connect_timeout": "2s"},
            "registry-b.test": {"url": "https://127.0.0.1:2/", "username": "robot",
                                "password_file": str(password), "access": "public"},
        },
        "log": {"level": "info"},
    }


# (test id, where in the config, the bad value, the key the one-line error must name)
BAD_CONFIGS = [
    ("unknown-key", ("cacheing",), {"size": "10G"}, "cacheing"),
    ("unknown-nested-key", ("upstreams", "docker.io", "mirror"), True,
     "upstreams.docker.io.mirror"),
    ("wrong-type-listen", ("listen", "http"), 5000, "listen.http"),
    ("wrong-type-timeout", ("upstreams", "docker.io", "read_timeout"), [1, 2],
     "upstreams.docker.io.read_timeout"),
    ("bad-url-scheme", ("upstreams", "docker.io", "url"), "ftp://127.0.0.1/",
     "upstreams.docker.io.url"),
    ("bad-url-no-scheme", ("upstreams", "docker.io", "url"), "registry-1.docker.io",
     "upstreams.docker.io.url"),
    ("missing-password-file", ("upstreams", "registry-b.test", "password_file"),
     "/nonexistent/edgecache/password", "upstreams.registry-b.test.password_file"),
]


def with_value(config: dict[str, Any], where: tuple[str, ...], value: object) -> None:
    for name in where[:-1]:
        config = config[name]
    config[where[-1]] = value


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "edgecache.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_check_config_accepts_a_good_config(tmp_path: Path) -> None:
    path = write(tmp_path, good_config(tmp_path))
    result = edgecache("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "ok" in result.stdout


@pytest.mark.parametrize(("command", "where", "value", "key"), [
    pytest.param(command, where, value, key, id=f"{command}-{name}")
    for command in ("check-config", "serve") for name, where, value, key in BAD_CONFIGS
])
def test_a_bad_config_exits_2_with_one_line_naming_the_key(
        tmp_path: Path, command: str, where: tuple[str, ...], value: object, key: str) -> None:
    config = good_config(tmp_path)
    with_value(config, where, value)
    path = write(tmp_path, config)
    result = edgecache(command, "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]
    # the key path is named as such, not just mentioned: "edgecache: config: <key>: ..."
    assert f" {key}:" in lines[0]
    if command == "serve":
        assert not (tmp_path / "storage").exists()
