"""Secrets stay secret: upstream passwords, client passwords and tokens never appear in a log
record (at debug level), a metric or a response body, whatever fails; inline passwords are
refused without being echoed; secret files readable by others are named at start.

Every secret here is a distinctive string, searched for as itself and in the base64 form it
takes in a Basic Authorization header.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from pytest_aiohttp import AiohttpServer

from edgecache import config as config_mod
from edgecache.app import warn_open_secrets
from edgecache.errors import ConfigError
from tests.fakes.registry import FakeRegistry
from tests.support.htpasswd import write_htpasswd
from tests.support.images import make_image, make_layer
from tests.unit.conftest import Edge, MakeEdge

REPO = "team/app"
ROBOT, UPSTREAM_SECRET = "robot", "upstream-pw-7Hq2ZxW9dLf3"
USER, CLIENT_PASSWORD = "alice", "client-pw-Kp4Lm8RtQe1"
CLIENT_TOKEN = "client-token-Vb3Nc6YdUo5"


def b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


SECRETS = [UPSTREAM_SECRET, b64(ROBOT, UPSTREAM_SECRET), CLIENT_PASSWORD,
           b64(USER, CLIENT_PASSWORD), b64(USER, "wrong-" + CLIENT_PASSWORD), CLIENT_TOKEN]


def leaks(text: str | bytes) -> list[str]:
    data = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return [secret for secret in SECRETS if secret in data]


@pytest.fixture
def secret_files(tmp_path: Path) -> dict[str, Path]:
    password = tmp_path / "upstream-password"
    password.write_text(UPSTREAM_SECRET + "\n")
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, USER, CLIENT_PASSWORD)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ci:{CLIENT_TOKEN}\n")
    for path in (password, htpasswd, tokens):
        path.chmod(0o600)
    return {"password": password, "htpasswd": htpasswd, "tokens": tokens}


@pytest.fixture
async def edge(make_edge: MakeEdge, secret_files: dict[str, Path]) -> Edge:
    """Authenticated for clients, with credentials of its own for the upstream."""
    return await make_edge(username=ROBOT, password_file=str(secret_files["password"]),
                           access="authenticated",
                           top={"auth": {"htpasswd_file": str(secret_files["htpasswd"]),
                                         "tokens_file": str(secret_files["tokens"])}})


GOOD = {"Authorization": f"Basic {b64(USER, CLIENT_PASSWORD)}"}
CLIENT_HEADERS = [
    GOOD,
    {"Authorization": f"Bearer {CLIENT_TOKEN}"},
    {"Authorization": f"Basic {b64(USER, 'wrong-' + CLIENT_PASSWORD)}"},
    {"Authorization": f"Bearer {CLIENT_TOKEN}-revoked"},
    {"Authorization": CLIENT_TOKEN},
]


async def exercise(edge: Edge, paths: list[str]) -> list[bytes]:
    """Every path with every client header, GET and HEAD; the bodies and header values."""
    seen = []
    for path in paths:
        for headers in CLIENT_HEADERS:
            for method in ("GET", "HEAD"):
                async with edge.client.request(method, path, headers=headers) as resp:
                    seen.append(await resp.read())
                    seen.append(repr(dict(resp.headers)).encode())
    return seen


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("failure", [
    "upstream-refuses-basic", "token-service-refuses", "token-service-500",
    "token-service-unreachable", "token-service-garbage", "upstream-down", "works",
])
async def test_no_secret_in_logs_metrics_or_bodies(
        fake: FakeRegistry, edge: Edge, caplog: pytest.LogCaptureFixture,
        aiohttp_server: AiohttpServer, failure: str) -> None:
    caplog.set_level(logging.DEBUG)
    image = make_image([make_layer(20_000, seed=1)])
    fake.add_image(REPO, image, tags=("1",))
    if failure == "upstream-refuses-basic":
        fake.require_basic(ROBOT, "not-" + UPSTREAM_SECRET)
    elif failure == "token-service-refuses":
        fake.require_bearer(credentials=(ROBOT, "not-" + UPSTREAM_SECRET))
    elif failure == "token-service-500":
        fake.require_bearer(credentials=(ROBOT, UPSTREAM_SECRET))
        fake.fail(500, path_contains="/token")
    elif failure == "token-service-unreachable":
        fake.require_bearer(realm=f"http://127.0.0.1:{closed_port()}/token")
    elif failure == "token-service-garbage":
        other = await FakeRegistry().start(aiohttp_server)  # its /v2/ answers `{}`: no token
        fake.require_bearer(realm=f"{other.url}/v2/")
    elif failure == "upstream-down":
        fake.down = True
    else:
        fake.require_bearer(credentials=(ROBOT, UPSTREAM_SECRET))

    paths = [f"/v2/{REPO}/manifests/1", f"/v2/{REPO}/manifests/{image.digest}",
             f"/v2/{REPO}/blobs/{image.layers[0].digest}", f"/v2/{REPO}/tags/list", "/v2/"]
    seen = await exercise(edge, paths)

    # the scenario happened: credentials reached the upstream side where they should
    if failure in ("token-service-refuses", "token-service-500", "works"):
        assert any(r.authorization == f"Basic {b64(ROBOT, UPSTREAM_SECRET)}"
                   for r in fake.token_requests), failure
    if failure == "upstream-refuses-basic":
        assert any(r.authorization == f"Basic {b64(ROBOT, UPSTREAM_SECRET)}"
                   for r in fake.requests)
    for body in seen:
        assert leaks(body) == [], body[:300]
    assert leaks(caplog.text) == []
    for record in caplog.records:
        assert leaks(record.getMessage()) == [] and leaks(str(record.args)) == []
    assert leaks(generate_latest(edge.metrics.registry)) == []
    # never forwarded: the client's credentials stay with edgecache
    client_secrets = [CLIENT_PASSWORD, CLIENT_TOKEN, b64(USER, CLIENT_PASSWORD),
                      b64(USER, "wrong-" + CLIENT_PASSWORD)]
    for recorded in [*fake.requests, *fake.token_requests]:
        sent = f"{recorded.raw_path} {dict(recorded.headers)}"
        assert not [secret for secret in client_secrets if secret in sent], sent


def test_an_inline_password_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as info:
        config_mod.from_mapping({"upstreams": {"registry.example": {
            "url": "https://registry.example", "username": ROBOT, "password": UPSTREAM_SECRET}}})
    message = str(info.value)
    assert message.startswith("upstreams.registry.example.password:")
    assert "never inlined" in message and "password_file" in message and "\n" not in message
    assert UPSTREAM_SECRET not in message


@pytest.mark.parametrize("url", [
    f"https://{ROBOT}:{UPSTREAM_SECRET}@registry.example",
    f"https://{ROBOT}:{UPSTREAM_SECRET}@",
    f"ftp://{ROBOT}:{UPSTREAM_SECRET}@registry.example",
    f"https://registry.example/?token={UPSTREAM_SECRET}",
])
def test_credentials_in_an_upstream_url_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_mod.from_mapping({"upstreams": {"registry.example": {"url": url}}})
    assert str(info.value).startswith("upstreams.registry.example.url:")
    assert UPSTREAM_SECRET not in str(info.value)


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o400, False), (0o640, True),
                                              (0o644, True), (0o604, True), (0o660, True)])
def test_secret_files_readable_by_others_are_named(
        secret_files: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture,
        mode: int, warned: bool) -> None:
    caplog.set_level(logging.WARNING, logger="edgecache.app")
    key = tmp_path / "server.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    cert = tmp_path / "server.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    files = {"upstreams.registry.example.password_file": secret_files["password"],
             "auth.htpasswd_file": secret_files["htpasswd"],
             "auth.tokens_file": secret_files["tokens"], "tls.key_file": key}
    config = config_mod.from_mapping({
        "storage": {"path": str(tmp_path / "storage")},
        "upstreams": {"registry.example": {"url": "https://registry.example", "username": ROBOT,
                                           "password_file": str(secret_files["password"])}},
        "auth": {"htpasswd_file": str(secret_files["htpasswd"]),
                 "tokens_file": str(secret_files["tokens"])},
        "tls": {"cert_file": str(cert), "key_file": str(key)},
    })
    for which in files:  # one file at a time is open; the others stay private
        for path in files.values():
            os.chmod(path, 0o600)
        os.chmod(files[which], mode)
        caplog.clear()

        warn_open_secrets(config)

        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        if warned:
            assert len(warnings) == 1, warnings
            assert which in warnings[0] and str(files[which]) in warnings[0]
            assert f"{mode:o}" in warnings[0]
        else:
            assert warnings == []
        assert leaks("\n".join(warnings)) == []
