"""The CLI's side of the configuration: `--storage-path` moves the cache without lifting its
quota, and a bad configuration is one stderr line per problem with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgecache import cli
from edgecache.config import Size
from tests.support.registry import free_port

# every subcommand that takes --storage-path, with the arguments it needs to parse
SUBCOMMANDS = [
    ["serve"], ["verify"], ["du"], ["warm", "docker.io/library/alpine:3.20"],
    ["export", "--all", "--output", "-"], ["import", "bundle.tar"], ["ca"], ["client-config"],
]


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=[c[0] for c in SUBCOMMANDS])
def test_storage_path_replaces_only_the_path(tmp_path: Path, command: list[str]) -> None:
    """`make run` passes --storage-path: the config's max_size, min_free and watermarks must
    still bound the cache there (a fresh StorageConfig lifted the quota without a word)."""
    config = tmp_path / "edgecache.yaml"
    config.write_text(yaml.safe_dump({"storage": {
        "path": str(tmp_path / "configured"), "max_size": "3MiB", "min_free": "7%",
        "high_watermark": 0.9, "low_watermark": 0.5, "access_flush_interval": "5s"}}))
    args = cli._parser().parse_args(
        [*command, "--config", str(config), "--storage-path", str(tmp_path / "override")])

    storage = cli._load(args).storage

    assert storage.path == tmp_path / "override"
    assert storage.max_size == Size(bytes=3 * 1024 * 1024)
    assert storage.min_free == Size(percent=7.0)
    assert (storage.high_watermark, storage.low_watermark) == (0.9, 0.5)
    assert storage.access_flush_interval == 5.0


def test_an_empty_storage_path_is_refused_not_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["du", "--storage-path", ""]) == 2
    assert capsys.readouterr().err == "edgecache: config: --storage-path: must not be empty\n"


def test_check_config_prints_one_line_per_problem(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "edgecache.yaml"
    config.write_text("storage:\n  min_free: 5\n  max_size: 0\n"
                      "cache:\n  revalidate_timeout: .nan\n"
                      "upstreams:\n  x.io: {url: 'http://:secret@x.io'}\n"
                      "default_upstream: null\n")

    code = cli.main(["check-config", "--config", str(config)])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert [line.split(":", 3)[2].strip() for line in captured.err.splitlines()] == [
        "storage.max_size", "storage.min_free", "upstreams.x.io.url",
        "cache.revalidate_timeout"]
    assert all(line.startswith("edgecache: config: ") for line in captured.err.splitlines())
    assert "secret" not in captured.err


def test_an_upstream_password_file_that_is_not_utf8_stops_serve_in_one_line(
        tmp_path: Path) -> None:
    """The password is read when the upstream's client is made (at start), not at load: a
    file that is not UTF-8 must still be one line naming the key, not a traceback."""
    password, tokens = tmp_path / "password", tmp_path / "tokens"
    password.write_bytes(b"\xff\xfe\n")
    tokens.write_text("a-client-token-of-enough-length-0123456789\n")
    for secret in (password, tokens):
        secret.chmod(0o600)
    config = tmp_path / "edgecache.yaml"
    config.write_text(yaml.safe_dump({
        "listen": {"http": f"127.0.0.1:{free_port()}", "https": None},
        "storage": {"path": str(tmp_path / "cache")}, "metrics": {"listen": None},
        "auth": {"tokens_file": str(tokens)},
        "upstreams": {"private.test": {"url": "http://127.0.0.1:9", "username": "u",
                                       "password_file": str(password)}},
        "default_upstream": "private.test"}))

    # its own process: serve configures the root logger
    done = subprocess.run([sys.executable, "-m", "edgecache", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    err = done.stderr.strip().splitlines()
    assert err == [f"edgecache: upstreams.private.test.password_file {password}: not UTF-8"], err
