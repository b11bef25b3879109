"""`client-config --username U --password-file F` (issue 14, item 5): credentials for the mirror
go where they reach it (containerd hosts.toml `header`, k3s `configs.<mirror>.auth`), written
readable by their owner only, with the password read from a file; other keys are kept."""

from __future__ import annotations

import base64
import tomllib
from pathlib import Path

import pytest
import yaml

from edgecache.cli import main
from tests.unit.clientconfig.test_client_config_merge import HOSTS, write_config

USER, PASSWORD = "node", "Pw-4Rf:5Tg 6Yh"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
ADDRESS = "127.0.0.1:30080"


def password_file(tmp_path: Path, text: str = PASSWORD + "\n") -> Path:
    path = tmp_path / "password"
    path.write_text(text)
    path.chmod(0o600)
    return path


def run(tmp_path: Path, root: Path, *extra: str) -> int:
    return main(["client-config", "--config", str(write_config(tmp_path)), "--out", str(root),
                 *extra])


def test_credentials_go_into_hosts_toml_headers_and_k3s_configs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    hosts = root / "etc/containerd/certs.d/docker.io/hosts.toml"
    hosts.parent.mkdir(parents=True)
    hosts.write_text(HOSTS.replace('Authorization = "Basic dTpw"', 'X-Site = "7"'))
    hosts.chmod(0o644)
    assert run(tmp_path, root, "--username", USER,
               "--password-file", str(password_file(tmp_path))) == 0
    assert f"credentials for http://{ADDRESS} are sent in the clear" in capsys.readouterr().err

    certs = root / "etc/containerd/certs.d"
    for name in ("docker.io", "quay.io", "_default"):
        path = certs / name / "hosts.toml"
        doc = tomllib.loads(path.read_text())
        ours = doc["host"][f"http://{ADDRESS}"]
        assert ours["header"]["Authorization"] == BASIC, name
        assert path.stat().st_mode & 0o077 == 0, name  # a password inside: owner only
    kept = tomllib.loads(hosts.read_text())["host"][f"http://{ADDRESS}"]["header"]
    assert kept == {"X-Site": "7", "Authorization": BASIC}  # their header stays beside ours
    backup = hosts.with_name("hosts.toml.edgecache-bak")
    assert backup.stat().st_mode & 0o077 == 0

    registries = root / "etc/rancher/k3s/registries.yaml"
    doc = yaml.safe_load(registries.read_text())
    assert doc["configs"][ADDRESS]["auth"] == {"username": USER, "password": PASSWORD}
    assert registries.stat().st_mode & 0o077 == 0


def test_without_credentials_nothing_carries_a_header(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run(tmp_path, root) == 0
    text = (root / "etc/containerd/certs.d/docker.io/hosts.toml").read_text()
    assert "Authorization" not in text
    assert "configs" not in yaml.safe_load((root / "etc/rancher/k3s/registries.yaml").read_text())


@pytest.mark.parametrize(("args", "expected"), [
    (["--username", USER], "--username and --password-file go together"),
    (["--password-file", "PW"], "--username and --password-file go together"),
    (["--username", "a:b", "--password-file", "PW"], "must not hold ':'"),
    (["--username", USER, "--password-file", "/nonexistent/pw"], "/nonexistent/pw"),
    (["--username", USER, "--password-file", "EMPTY"], "expected the password on one line"),
])
def test_bad_credential_options_are_one_line_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
        expected: str) -> None:
    pw = str(password_file(tmp_path))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    args = [pw if a == "PW" else str(empty) if a == "EMPTY" else a for a in args]
    root = tmp_path / "root"
    assert run(tmp_path, root, *args) != 0
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert not root.exists()  # nothing written


@pytest.mark.parametrize("mode", [[], ["--diff"], ["--diff", "--out", "ROOT"]])
def test_printing_credentials_needs_show_secrets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: list[str]) -> None:
    """Without --out the files go to stdout (a terminal's scrollback, a CI log): the password
    is shown only when asked for by name."""
    root = tmp_path / "root"
    base = ["client-config", "--config", str(write_config(tmp_path)), "--username", USER,
            "--password-file", str(password_file(tmp_path)),
            *[str(root) if a == "ROOT" else a for a in mode]]
    assert main(base) == 2
    captured = capsys.readouterr()
    assert PASSWORD not in captured.out + captured.err and BASIC not in captured.out
    assert captured.err.strip().splitlines() == [
        "edgecache: client-config: with --username, printing the files (no --out) or --diff "
        "shows the password: add --show-secrets, or use --out"]
    assert main([*base, "--show-secrets"]) == 0
    shown = capsys.readouterr().out
    assert BASIC in shown
    assert not root.exists()  # printing and diffing write nothing
