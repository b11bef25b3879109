"""The command line as an operator meets it: exit codes and one-line configuration errors."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.corpus import HUB, Corpus
from tests.support.edgecache import StartEdgecache
from tests.support.registry import DockerRegistry
from tests.support.skopeo import Skopeo
from tests.support.waiting import wait_until

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


# ---- the commands that read the cache: ls, du --json, verify with progress and --repair -------

def test_ls_du_and_verify_on_a_cache_skopeo_filled(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, skopeo: Skopeo,
        tmp_path: Path) -> None:
    alpha, beta = corpus.alpha, corpus.beta  # they share one layer
    ec = edgecaches("ec", {HUB: hub.url}, default_upstream=HUB,
                    extra={"pins": [f"{HUB}/{alpha.repository}:{alpha.tag}"]})
    for seeded in (alpha, beta):
        skopeo.copy(f"docker://{ec.address}/{seeded.repository}:{seeded.tag}",
                    f"oci:{tmp_path / seeded.repository.replace('/', '-')}", tls_verify=False)
    ec.close()  # flushes the access times
    config = str(ec.config_path)
    names = {f"{HUB}/{s.repository}:{s.tag}": s for s in (alpha, beta)}

    listed = edgecache("ls", "--json", "--config", config)
    assert listed.returncode == 0, listed.stderr
    images = {row["image"]: row for row in json.loads(listed.stdout)}
    assert set(images) == set(names)
    for name, seeded in names.items():
        row = images[name]
        assert row["digest"] == seeded.top.digest
        assert row["bytes"] == sum(len(b) for b in seeded.content.values())
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["last_use"])
        assert row["pinned"] == (seeded is alpha)
    table = edgecache("ls", "--config", config)
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[0] == "IMAGE"
    assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == sorted(names)

    usage = edgecache("du", "--json", "--config", config)
    assert usage.returncode == 0, usage.stderr
    doc = json.loads(usage.stdout)
    assert doc["used_bytes"] == sum(ec.stored_blobs().values())
    assert doc["pinned_bytes"] == images[f"{HUB}/{alpha.repository}:{alpha.tag}"]["bytes"]
    assert {row["image"]: row["last_use"] for row in doc["images"]} == {
        name: row["last_use"] for name, row in images.items()}

    shared = corpus.shared.digest
    path = ec.storage / "blobs" / "sha256" / shared[7:9] / shared[7:]
    path.write_bytes(b"\0" * path.stat().st_size)  # bit rot, same size
    checked = edgecache("verify", "--config", config)
    assert checked.returncode == 1
    assert f"corrupt: {shared}" in checked.stdout.splitlines()
    assert {line for line in checked.stdout.splitlines() if line.startswith("damaged: ")} == {
        f"damaged: {name} (verify --repair removes what it cannot serve whole)"
        for name in names}
    progress = checked.stderr.splitlines()
    count = len(ec.stored_blobs())
    assert progress and progress[-1].startswith("verifying: ")
    assert f" {count}/{count} blobs " in progress[-1]
    assert len(progress) <= 2  # bounded: a line every few seconds at most, and the last

    repaired = edgecache("verify", "--repair", "--config", config)
    assert repaired.returncode == 0, repaired.stderr
    lines = repaired.stdout.splitlines()
    assert f"corrupt: {shared} (removed)" in lines
    assert {line for line in lines if line.startswith("unpullable ")} == {
        f"unpullable until fetched again from {HUB}: {HUB}/{alpha.repository}:{alpha.tag} "
        "(pinned)",
        f"unpullable until fetched again from {HUB}: {HUB}/{beta.repository}:{beta.tag}"}
    assert lines[-1].endswith("; 2 images need their upstream")
    again = edgecache("verify", "--config", config)
    assert again.returncode == 0 and "damaged" not in again.stdout, again.stdout
    assert json.loads(edgecache("ls", "--json", "--config", config).stdout) == []


def test_the_cache_commands_refuse_a_damaged_index_in_one_line(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "index.db").write_bytes(b"not a database at all" * 100)
    for command in (["ls"], ["du", "--json"], ["verify"]):
        result = edgecache(*command, "--storage-path", str(storage))
        assert result.returncode == 1, result
        assert result.stderr.splitlines() == [
            f"edgecache: index {storage / 'index.db'}: file is not a database"], result.stderr


def test_serve_says_where_the_data_is_the_quota_the_urls_and_a_command_that_works(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, skopeo: Skopeo,
        tmp_path: Path) -> None:
    storage = tmp_path / "data"
    ec = edgecaches("ec", {HUB: hub.url}, default_upstream=HUB, metrics=True, storage=storage,
                    extra={"storage": {"path": str(storage), "max_size": "3GiB",
                                       "min_free": "0"}})
    assert ec.metrics_url is not None
    wait_until(lambda: "try: " in ec.log(), what="the start-up lines")
    said = [line.split(" INFO edgecache: ", 1)[1] for line in ec.log().splitlines()
            if " INFO edgecache: " in line]
    assert said[0] == f"data in {storage} (blobs/, index.db; 0 B cached)"
    assert said[1] == ("quota 3.0 GiB now (max_size 3.0 GiB, min_free 0 B; evicts from 95% "
                       "down to 85% of it)")
    assert said[2] == f"HTTP    {ec.url}"
    assert said[3] == f"metrics {ec.metrics_url}/metrics"
    command = said[4].removeprefix("try: ").split()
    assert command[:3] == ["skopeo", "inspect", "--tls-verify=false"]
    assert command[3] == f"docker://{ec.address}/library/alpine:latest"
    # the same command on an image the test upstream has
    command[3] = f"docker://{ec.address}/{corpus.alpha.repository}:{corpus.alpha.tag}"
    result = subprocess.run([skopeo.binary, *command[1:]], env=skopeo.env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["Digest"] == corpus.alpha.top.digest
