"""The command line as an operator meets it: exit codes and one-line configuration errors."""

from __future__ import annotations

import socket
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
    ("nan-timeout", ("upstreams", "docker.io", "read_timeout"), float("nan"),
     "upstreams.docker.io.read_timeout"),
    ("userinfo-url", ("upstreams", "docker.io", "url"), "http://:secret@127.0.0.1:1",
     "upstreams.docker.io.url"),
    ("bare-size", ("storage", "min_free"), 5, "storage.min_free"),
    ("huge-size", ("storage", "max_size"), "9" * 300, "storage.max_size"),
    ("zero-max-size", ("storage", "max_size"), 0, "storage.max_size"),
    ("bad-listen-host", ("listen", "http"), "bad host:0", "listen.http"),
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


def test_every_problem_is_one_line_and_a_file_that_is_not_utf8_too(tmp_path: Path) -> None:
    config = good_config(tmp_path)
    config["storage"]["min_free"] = 5
    config["cache"] = {"revalidate_timeout": float("nan")}
    config["upstreams"]["docker.io"]["url"] = "http://@127.0.0.1:1"
    path = write(tmp_path, config)
    for command in ("check-config", "serve"):
        result = edgecache(command, "--config", str(path))
        assert result.returncode == 2
        assert sorted(result.stderr.splitlines()) == [
            "edgecache: config: cache.revalidate_timeout: duration must be a finite number, "
            "got nan",
            "edgecache: config: storage.min_free: 5 would mean 5 bytes; give a unit such as "
            "'5GiB', '5MB' or '5%' (0 for none)",
            "edgecache: config: upstreams.docker.io.url: must not contain '@' (no user or "
            "password in the URL); set username and password_file instead"]
    path.write_bytes(b"log:\n  level: \xe9\n")
    result = edgecache("check-config", "--config", str(path))
    assert (result.returncode, result.stderr) == (
        2, f"edgecache: config: {path}: not UTF-8 text (byte 14 is 0xe9)\n")


@pytest.mark.parametrize("key", ["listen.http", "metrics.listen"])
def test_serve_on_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path, key: str) -> None:
    config = good_config(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        config["metrics"] = {"listen": address if key == "metrics.listen" else None}
        if key == "listen.http":
            config["listen"]["http"] = address
        result = edgecache("serve", "--config", str(write(tmp_path, config)))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"edgecache: {key} {address}: cannot listen: Address already in use")


def test_du_with_storage_path_keeps_the_configured_quota(tmp_path: Path) -> None:
    """`make run` passes --storage-path; the cache there is still bounded by max_size."""
    config = good_config(tmp_path)
    config["storage"].update({"max_size": "3MiB", "min_free": "0"})
    result = edgecache("du", "--config", str(write(tmp_path, config)),
                       "--storage-path", str(tmp_path / "elsewhere"))
    assert result.returncode == 0, result.stderr
    assert [line.split() for line in result.stdout.splitlines() if "budget" in line] == [
        ["budget", "3.0", "MiB"]]
    assert (tmp_path / "elsewhere" / "index.db").exists()
    assert not (tmp_path / "storage").exists()
