"""Security with real processes: edgecache as `edgecache serve`, real clients and upstreams.

- Access control: skopeo without credentials is refused, with `--src-creds` it pulls byte for
  byte; a static bearer token works from an aiohttp client and from containerd (a header in
  hosts.toml); a public upstream on the same edgecache needs nothing.
- mTLS: without a client certificate signed by `tls.client_ca_file`, no request completes.
- Hostile input against the server's own limits (request line, header count and size, idle
  timeout as the slow-loris guard): refused, nothing logged as an error, others served.
- No downgrade: an https upstream's redirect to plain http is refused, nothing is sent there.
- Secrets: inline passwords refused by check-config; secret files readable by others named at
  start; no password, token or client Authorization in logs, metrics or bodies of two chained
  edgecaches (one the other's authenticated upstream) failing in several ways.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
import yaml

from tests.support.containerd import Containerd, write_hosts
from tests.support.corpus import HUB, REGISTRY_B, Corpus, Seeded
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.htpasswd import entry
from tests.support.httpclient import fetch
from tests.support.registry import DockerRegistry, free_port
from tests.support.skopeo import Skopeo, verify_oci_layout

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "puller", "Pw-integration-5Tg8Yh2Uj"
TOKEN = "tok-integration-Qa1Ws3Ed5Rf7"
TOKENS = "/v2/token"  # edgecache's own token endpoint, the realm of its Bearer challenge


def challenge(ec: EdgecacheProcess) -> str:
    return f'Bearer realm="{ec.url}{TOKENS}",service="edgecache"'


def b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def write_secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def htpasswd(path: Path, user: str, password: str, mode: int = 0o600) -> Path:
    return write_secret(path, entry(user, password) + "\n", mode)


@pytest.fixture
def auth(tmp_path: Path) -> dict[str, str]:
    return {"htpasswd_file": str(htpasswd(tmp_path / "htpasswd", USER, PASSWORD)),
            "tokens_file": str(write_secret(tmp_path / "tokens", f"ci:{TOKEN}\n"))}


@pytest.fixture
def locked(hub: DockerRegistry, registry_b: DockerRegistry, edgecaches: StartEdgecache,
           auth: dict[str, str]) -> EdgecacheProcess:
    """docker.io authenticated, registry-b.test public."""
    return edgecaches("edgecache", {}, extra={
        "upstreams": {HUB: {"url": hub.url, "access": "authenticated"},
                      REGISTRY_B: {"url": registry_b.url}},
        "auth": auth})


def reference(registry: str, seeded: Seeded) -> str:
    return f"docker://{registry}/{seeded.repository}:{seeded.tag}"


# ---- 1. access control with real clients -------------------------------------------------------

def test_skopeo_needs_credentials_only_for_the_authenticated_upstream(
        locked: EdgecacheProcess, hub: DockerRegistry, corpus: Corpus, skopeo: Skopeo,
        tmp_path: Path) -> None:
    ec = locked
    seeded = corpus.alpha
    # pulling from edgecache by its own address (docker.io named in the path), `--src-creds`
    direct = f"docker://{ec.address}/docker.io/{seeded.repository}:{seeded.tag}"
    hub_mark, ec_mark = hub.mark(), ec.mark()

    for creds in (None, f"{USER}:wrong-password", f"{USER.upper()}:{PASSWORD}",
                  f"nobody:{PASSWORD}"):
        refused = skopeo.copy(direct, f"oci:{tmp_path / 'refused'}", tls_verify=False,
                              src_creds=creds, check=False)
        assert refused.returncode != 0, creds
        assert "unauthorized" in refused.stderr.lower(), refused.stderr[-2000:]
    seen = ec.requests_since(ec_mark)
    answered = [r for r in seen if r.path.startswith("/v2/") and not r.path.startswith(TOKENS)]
    assert answered and {r.status for r in answered} == {401}, answered
    # the token endpoint gave the anonymous attempt a token (which opens nothing private) and
    # refused every wrong password
    assert {r.status for r in seen if r.path.startswith(TOKENS)} == {200, 401}
    assert hub.pulls_since(hub_mark) == []  # nothing reached the upstream

    out = tmp_path / "oci"
    skopeo.copy(direct, f"oci:{out}", tls_verify=False, src_creds=f"{USER}:{PASSWORD}")
    verify_oci_layout(out, seeded)  # byte for byte
    served = {(r.method, r.path) for r in ec.requests_since(ec_mark) if r.status == 200}
    assert ("GET", f"/v2/docker.io/{seeded.repository}/manifests/{seeded.tag}") in served

    # as a registries.conf mirror: skopeo sends the mirror the credentials its auth file holds
    # for the mirror's address (--src-creds is for the named registry, docker.io)
    conf = skopeo.registries_conf({"docker.io": f"{ec.address}/docker.io",
                                   "registry-b.test": f"{ec.address}/registry-b.test"})
    beta = corpus.beta
    refused = skopeo.copy(reference("docker.io", beta), f"oci:{tmp_path / 'refused-mirror'}",
                          registries_conf=conf, check=False)
    assert refused.returncode != 0 and "unauthorized" in refused.stderr.lower()
    assert f"log in to {ec.address}" in refused.stderr  # what to send, and to whom
    # the public upstream, anonymously: /v2/'s Bearer challenge gets skopeo an anonymous token
    anonymous = tmp_path / "oci-anonymous"
    skopeo.copy(reference("registry-b.test", corpus.app), f"oci:{anonymous}",
                registries_conf=conf)
    verify_oci_layout(anonymous, corpus.app)
    skopeo.login(ec.address, USER, PASSWORD)
    mirrored = tmp_path / "oci-mirror"
    skopeo.copy(reference("docker.io", beta), f"oci:{mirrored}", registries_conf=conf)
    verify_oci_layout(mirrored, beta)

    # the public upstream on the same edgecache: no credentials needed (and those skopeo now
    # sends are ignored)
    public = tmp_path / "oci-public"
    skopeo.copy(reference("registry-b.test", corpus.app), f"oci:{public}", registries_conf=conf)
    verify_oci_layout(public, corpus.app)


async def pull_with_aiohttp(url: str, seeded: Seeded,
                            headers: dict[str, str]) -> dict[str, bytes]:
    """Manifest and every blob of one image, as a client with a fixed header fetches them."""
    got = {}
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json, "
                        "application/vnd.docker.distribution.manifest.v2+json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        path = f"{url}/v2/{seeded.repository}/manifests/{seeded.tag}?ns=docker.io"
        async with session.get(path, headers=accept) as resp:
            assert resp.status == 200, await resp.text()
            got[resp.headers["Docker-Content-Digest"]] = await resp.read()
        for digest in seeded.blobs:
            path = f"{url}/v2/{seeded.repository}/blobs/{digest}?ns=docker.io"
            async with session.get(path) as resp:
                assert resp.status == 200
                got[digest] = await resp.read()
    return got


def test_api_root_and_a_static_bearer_token(locked: EdgecacheProcess, corpus: Corpus) -> None:
    ec = locked
    root = fetch(f"{ec.url}/v2/")
    assert root.status == 401 and root.headers["WWW-Authenticate"] == challenge(ec)
    assert json.loads(root.body)["errors"][0]["code"] == "UNAUTHORIZED"
    assert fetch(f"{ec.url}/v2/", headers={"Authorization": f"Basic {b64(USER, 'x')}"}
                 ).status == 401
    assert fetch(f"{ec.url}/v2/", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
    assert fetch(f"{ec.url}/v2/",
                 headers={"Authorization": f"Basic {b64(USER, PASSWORD)}"}).status == 200

    seeded = corpus.beta  # docker.io, the authenticated one (no default upstream: ns routing)
    url = f"{ec.url}"
    refused = fetch(f"{url}/v2/{seeded.repository}/manifests/{seeded.tag}?ns=docker.io")
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"] == (
        challenge(ec) + f',scope="repository:{seeded.repository}:pull"')
    assert f"docker login {ec.address}" in json.loads(refused.body)["errors"][0]["message"]
    got = asyncio.run(pull_with_aiohttp(url, seeded, {"Authorization": f"Bearer {TOKEN}"}))
    assert got[seeded.top.digest] == seeded.top.manifest
    assert {d: got[d] for d in seeded.blobs} == seeded.blobs
    # public: nothing needed, a bogus Authorization ignored
    app = corpus.app
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic !!"}):
        answer = fetch(f"{url}/v2/registry-b.test/{app.repository}/manifests/{app.tag}",
                       headers=headers)
        assert answer.status == 200 and answer.body == app.top.manifest


def test_containerd_pulls_with_a_bearer_token_header(
        locked: EdgecacheProcess, corpus: Corpus, containerd: Containerd,
        tmp_path: Path) -> None:
    seeded = corpus.classic  # one image, Docker schema 2
    ref = f"docker.io/{seeded.repository}:{seeded.tag}"
    without = write_hosts(tmp_path / "hosts-none", "docker.io", locked.url).parent.parent
    # containerd fetches an anonymous token, then reports the challenge's RFC 6750 error
    with pytest.raises(AssertionError, match=r"(?i)insufficient_scope: authorization failed"):
        containerd.pull(ref, without, "--platform", "linux/amd64")
    hosts = write_hosts(tmp_path / "hosts", "docker.io", locked.url,
                        headers={"Authorization": f"Bearer {TOKEN}"}).parent.parent

    containerd.pull(ref, hosts, "--platform", "linux/amd64")

    assert containerd.image_digest(ref) == seeded.top.digest
    for digest, data in seeded.content.items():
        assert containerd.content_get(digest) == data
    assert any(r.status == 401 for r in locked.requests())
    assert any(r.status == 200 and "/blobs/" in r.path for r in locked.requests())


# ---- 2. mTLS -------------------------------------------------------------------------------------

def https_get(port: int, context: ssl.SSLContext, path: str = "/v2/") -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_mtls_requires_a_client_certificate_from_the_configured_ca(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, tmp_path: Path) -> None:
    clients, strangers = trustme.CA(), trustme.CA()
    client_ca = tmp_path / "client-ca.pem"
    clients.cert_pem.write_to_path(str(client_ca))
    ec = edgecaches("edgecache", {HUB: hub.url}, default_upstream=HUB, tls=True,
                    extra={"tls": {"client_ca_file": str(client_ca)}})
    assert ec.https_port is not None
    server_ca = str(ec.storage / "tls" / "ca.crt")

    def context(issuer: trustme.CA | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=server_ca)
        if issuer is not None:
            issuer.issue_cert("edge-client@example.org").configure_cert(ctx)
        return ctx

    for issuer in (None, strangers):  # no certificate, or one the server does not trust
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            https_get(ec.https_port, context(issuer))

    status, body = https_get(ec.https_port, context(clients))
    assert status == 200 and json.loads(body) == {}
    seeded = corpus.alpha
    status, body = https_get(ec.https_port, context(clients),
                             f"/v2/{seeded.repository}/blobs/{next(iter(seeded.blobs))}")
    assert status == 200 and body == next(iter(seeded.blobs.values()))
    # curl, as an operator would check it
    curl = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
            "--cacert", server_ca, f"https://127.0.0.1:{ec.https_port}/v2/"]
    assert subprocess.run(curl, capture_output=True, text=True, timeout=30).stdout != "200"
    leaf = clients.issue_cert("curl@example.org")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    done = subprocess.run([*curl, "--cert", str(cert), "--key", str(key)], capture_output=True,
                          text=True, timeout=30)
    assert done.stdout == "200", done.stderr
    # the plain-http listener is a separate choice of the operator; mTLS guards https
    assert "Traceback" not in ec.log()


# ---- 3. hostile input against the server's own limits -------------------------------------------

def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


def get(path: str, headers: list[tuple[str, str]] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: edge", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture
def hostile_target(hub: DockerRegistry, edgecaches: StartEdgecache) -> EdgecacheProcess:
    return edgecaches("edgecache", {HUB: hub.url}, default_upstream=HUB,
                      listen={"idle_timeout": "1s"})


def test_request_line_and_header_limits(hostile_target: EdgecacheProcess,
                                        corpus: Corpus) -> None:
    ec = hostile_target
    manifest = f"/v2/{corpus.alpha.repository}/manifests/{corpus.alpha.tag}"
    cases = [
        ("request line over 8190 bytes", get("/v2/" + "a" * 9000 + "/manifests/x"), (400, 414)),
        ("65 headers", get("/v2/", [(f"X-H{i}", "v") for i in range(65)]), (400, 431)),
        ("100 headers", get("/v2/", [(f"X-H{i}", "v") for i in range(100)]), (400, 431)),
        ("a header value over 8190 bytes", get("/v2/", [("X-Big", "v" * 9000)]), (400, 431)),
        ("a header name over 8190 bytes", get("/v2/", [("X" * 9000, "v")]), (400, 431)),
        ("a credential with a control character", get("/v2/", [
            ("Authorization", f"Basic {b64(USER, PASSWORD)}\x01")]), (400,)),
        ("a Range of 8000 bytes of ranges", get(manifest, [("Range", "bytes=" + ",".join(
            ["0-"] * 2600))]), (200, 416)),
    ]
    for why, request, expected in cases:
        answer = raw_exchange(ec.port, request)
        assert status_of(answer) in expected, (why, answer[:200])
        # the server survives and serves the next client
        assert status_of(raw_exchange(ec.port, get("/v2/"))) == 200, why
    # at the limits but within them: served
    assert status_of(raw_exchange(ec.port, get("/v2/", [(f"X-H{i}", "v")
                                                        for i in range(60)]))) == 200
    assert status_of(raw_exchange(ec.port, get("/v2/", [("X-Big", "v" * 8000)]))) == 200
    # a scanner's garbage is the client's fault: no error, no traceback, no request bytes
    # (which aiohttp would log, credentials included) in the log
    log = ec.log()
    assert "Traceback" not in log, log[-3000:]
    assert " ERROR " not in log, log[-3000:]
    assert "a" * 100 not in log and "v" * 100 not in log
    assert b64(USER, PASSWORD) not in log
    # at debug level, one line each
    assert log.count("Error handling request") >= len(cases) - 1


def test_slow_loris_is_cut_at_the_idle_timeout_while_others_are_served(
        hostile_target: EdgecacheProcess) -> None:
    ec = hostile_target  # listen.idle_timeout: 1s
    request = b"GET /v2/ HTTP/1.1\r\nHost: edge\r\nX-Slow: " + b"a" * 400
    lorises = [socket.create_connection(("127.0.0.1", ec.port), timeout=1) for _ in range(5)]
    idle = socket.create_connection(("127.0.0.1", ec.port), timeout=1)  # never sends a byte
    keepalive = socket.create_connection(("127.0.0.1", ec.port), timeout=1)
    keepalive.sendall(b"GET /v2/ HTTP/1.1\r\nHost: edge\r\n\r\n")  # one request, then idles
    closed: dict[str, float] = {}
    received: dict[str, bytes] = {}
    started = time.monotonic()
    try:
        sent = 0
        deadline = started + 10  # liveness bound: each is cut long before this
        while time.monotonic() < deadline and len(closed) < len(lorises) + 2:
            for i, sock in enumerate(lorises):
                if f"loris{i}" in closed:
                    continue
                try:  # one byte at a time, never finishing the request
                    sock.sendall(request[sent % len(request):sent % len(request) + 1])
                    sock.settimeout(0.05)
                    if sock.recv(65536) == b"":
                        closed[f"loris{i}"] = time.monotonic() - started
                except TimeoutError:
                    pass
                except OSError:  # reset, broken pipe: closed by the server
                    closed[f"loris{i}"] = time.monotonic() - started
            sent += 1
            for name, sock in (("idle", idle), ("keepalive", keepalive)):
                if name in closed:
                    continue
                try:
                    sock.settimeout(0.01)
                    while data := sock.recv(65536):  # keepalive: its answer first; then EOF
                        received[name] = received.get(name, b"") + data
                    closed[name] = time.monotonic() - started
                except TimeoutError:
                    pass
                except OSError:
                    closed[name] = time.monotonic() - started
            # meanwhile, another client is served
            assert status_of(raw_exchange(ec.port, get("/v2/"), timeout=5)) == 200
            time.sleep(0.1)  # the lorises' drip rate: the attack's pace, not an event stand-in
    finally:
        for sock in [*lorises, idle, keepalive]:
            sock.close()
    assert set(closed) == {*(f"loris{i}" for i in range(5)), "idle", "keepalive"}, closed
    assert received["keepalive"].startswith(b"HTTP/1.1 200") and "idle" not in received
    assert "Traceback" not in ec.log()


# ---- 4. no downgrade: an https upstream redirecting to plain http ------------------------------

class _Recorder(BaseHTTPRequestHandler):
    """/v2/ answers 200; /v2/auth/... a token challenge naming `realm`; anything else a
    redirect to `location`. Every request is recorded with its Authorization."""

    seen: list[str]
    location: str
    realm: str = ""

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        self.seen.append(f"{self.command} {self.path} {self.headers.get('Authorization')}")
        if self.path == "/v2/":
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        elif self.path.startswith("/v2/auth/"):
            body = b""
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="{self.realm}",service="tls"')
        else:
            body = b""
            self.send_response(307)
            self.send_header("Location", self.location)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _answer


def serve_in_thread(handler: type[BaseHTTPRequestHandler],
                    context: ssl.SSLContext | None) -> tuple[ThreadingHTTPServer, int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def test_an_https_upstream_cannot_send_us_or_our_credentials_to_plain_http(
        edgecaches: StartEdgecache, tmp_path: Path) -> None:
    """A redirect to http, and a token realm on http (where edgecache would send the
    upstream's Basic credentials in the clear), are both refused; nothing reaches http."""
    ca = trustme.CA()
    cafile = tmp_path / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    plain_seen: list[str] = []
    tls_seen: list[str] = []
    plain_handler = type("Plain", (_Recorder,), {"seen": plain_seen, "location": "/"})
    plain, plain_port = serve_in_thread(plain_handler, None)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    tls_handler = type("Tls", (_Recorder,), {
        "seen": tls_seen, "location": f"http://127.0.0.1:{plain_port}/v2/stolen",
        "realm": f"http://127.0.0.1:{plain_port}/token"})
    upstream, tls_port = serve_in_thread(tls_handler, context)
    secret = "Tls-Upstream-Pw-2Wq4Er"
    password = write_secret(tmp_path / "password", secret + "\n")
    try:
        ec = edgecaches("edgecache", {}, default_upstream="secure.test", extra={"upstreams": {
            "secure.test": {"url": f"https://127.0.0.1:{tls_port}", "username": "robot",
                            "password_file": str(password), "access": "public"}}},
                        env={"SSL_CERT_FILE": str(cafile)})
        for path in ("/v2/team/app/manifests/1", f"/v2/team/app/blobs/sha256:{'ab' * 32}"):
            answer = fetch(ec.url + path)
            assert answer.status == 502, (path, answer.status, answer.body)
            assert b"redirect from https to plain http refused" in answer.body
        for path in ("/v2/auth/app/manifests/1", f"/v2/auth/app/blobs/sha256:{'cd' * 32}"):
            answer = fetch(ec.url + path)
            assert answer.status == 403, (path, answer.status, answer.body)
            assert b"token realm from https to plain http refused" in answer.body
            assert secret.encode() not in answer.body
    finally:
        for server in (upstream, plain):
            server.shutdown()
            server.server_close()
    assert tls_seen  # TLS to the upstream worked: the refusal is the redirect's
    assert any(entry.startswith("GET /v2/auth/") for entry in tls_seen)
    assert plain_seen == []
    assert secret not in ec.log()


# ---- 5. secrets ----------------------------------------------------------------------------------

def edgecache_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgecache", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_check_config_refuses_an_inline_password_in_one_line(tmp_path: Path) -> None:
    secret = "Inline-Secret-9Kj3Hn5"
    config = tmp_path / "edgecache.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"path": str(tmp_path / "storage")},
        "upstreams": {"registry.example": {"url": "https://registry.example",
                                           "username": "robot", "password": secret}}}))
    for command in ("check-config", "serve"):
        result = edgecache_cli(command, "--config", str(config))
        assert result.returncode == 2, result
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert " upstreams.registry.example.password:" in lines[0]
        assert "passwords are never inlined" in lines[0] and "password_file" in lines[0]
        assert secret not in result.stderr + result.stdout
    assert not (tmp_path / "storage").exists()


def test_open_secret_files_are_named_at_start(hub: DockerRegistry, edgecaches: StartEdgecache,
                                              tmp_path: Path) -> None:
    password = write_secret(tmp_path / "upstream-password", "Open-Secret-4Rt6\n", 0o644)
    htpasswd_file = htpasswd(tmp_path / "htpasswd", USER, PASSWORD, 0o640)
    tokens = write_secret(tmp_path / "tokens", f"{TOKEN}\n", 0o600)
    ec = edgecaches("edgecache", {}, extra={
        "upstreams": {HUB: {"url": hub.url, "username": "robot",
                            "password_file": str(password)}},
        "auth": {"htpasswd_file": str(htpasswd_file), "tokens_file": str(tokens)}})
    warnings = [line for line in ec.log().splitlines() if "readable by others" in line]
    assert len(warnings) == 2, warnings
    assert any(f"upstreams.{HUB}.password_file {password}" in w and "644" in w
               for w in warnings)
    assert any(f"auth.htpasswd_file {htpasswd_file}" in w and "640" in w for w in warnings)
    assert not any(str(tokens) in w for w in warnings)
    assert "Open-Secret-4Rt6" not in ec.log()


def test_no_secret_in_logs_metrics_or_bodies_of_chained_edgecaches(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, auth: dict[str, str],
        tmp_path: Path) -> None:
    """A: docker.io authenticated (clients log in). B: A is its upstream, with B's own
    credentials for A; C: the same, with a wrong password. Clients of B and C send their own
    Authorization values (which must never travel upstream or be written anywhere)."""
    a = edgecaches("a", {}, metrics=True, extra={
        "upstreams": {HUB: {"url": hub.url, "access": "authenticated"}}, "auth": auth,
        "default_upstream": HUB})
    secrets = {"right": PASSWORD, "wrong": "Wrong-Upstream-Pw-8Ik9Ol"}
    client_values = ["Bearer Client-Token-3Ed4Rf", f"Basic {b64('client', 'Client-Pw-6Yh7Uj')}"]
    chained = {}
    for name, secret in secrets.items():
        password = write_secret(tmp_path / f"{name}-password", secret + "\n")
        chained[name] = edgecaches(name, {}, metrics=True, extra={
            "upstreams": {HUB: {"url": a.url, "username": USER, "password_file": str(password),
                                "access": "public"},
                          "down.test": {"url": f"http://127.0.0.1:{free_port()}",
                                        "username": USER, "password_file": str(password),
                                        "access": "public"}},
            "default_upstream": HUB})
    seeded = corpus.alpha
    layer = next(iter(seeded.blobs))
    bodies: list[bytes] = []
    for name, ec in chained.items():
        for value in [None, *client_values]:
            headers = {"Authorization": value} if value else {}
            for path in (f"/v2/{seeded.repository}/manifests/{seeded.tag}",
                         f"/v2/{seeded.repository}/blobs/{layer}",
                         f"/v2/{seeded.repository}/tags/list",
                         "/v2/down.test/team/app/manifests/1", "/v2/nowhere.test/x/manifests/1"):
                answer = fetch(ec.url + path, headers=headers, timeout=30)
                bodies += [answer.body, str(dict(answer.headers)).encode()]
                if name == "right" and "down.test" not in path and "nowhere" not in path:
                    assert answer.status == 200, (path, answer.body[:300])
                if name == "wrong" and path.endswith("manifests/1") is False \
                        and "tags" not in path:
                    assert answer.status == 403, (path, answer.status, answer.body[:300])
    # A saw B's and C's credentials (right and wrong) and refused the wrong ones
    assert any(r.status == 401 for r in a.requests())
    texts = [a.log(), *(ec.log() for ec in chained.values())]
    for ec in (a, *chained.values()):
        assert ec.metrics_url is not None
        texts.append(fetch(ec.metrics_url + "/metrics").body.decode())
    forbidden = [*secrets.values(), *(b64(USER, s) for s in secrets.values()),
                 "Client-Token-3Ed4Rf", "Client-Pw-6Yh7Uj", b64("client", "Client-Pw-6Yh7Uj"),
                 TOKEN]
    for text in [*texts, *(b.decode("utf-8", "replace") for b in bodies)]:
        assert not [s for s in forbidden if s in text]
