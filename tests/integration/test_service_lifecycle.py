"""edgecache as a service: restarts, SIGHUP certificate reloads, SIGTERM mid-download, and the
systemd notify protocol, all on real processes on 127.0.0.1, signalled by PID.

Every wait is bounded. The one time bound asserted (exit after SIGTERM within 15 s, with
listen.shutdown_timeout 2s) is a liveness bound, not a speed measurement.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.certs import issue_server_cert
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.images import Blob
from tests.support.registry import DockerRegistry, free_port, stop
from tests.support.throttle import ThrottledRelay
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
NOWHERE = {"docker.io": "http://127.0.0.1:9"}  # an upstream these tests never reach


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    wait_until(predicate, what, timeout=timeout)


def served_cert(port: int) -> x509.Certificate:
    """The certificate a new TLS connection to 127.0.0.1:port is given (not verified)."""
    return x509.load_pem_x509_certificate(
        ssl.get_server_certificate(("127.0.0.1", port), timeout=10).encode())


def san_names(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)) | {
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}


def https_port(ec: EdgecacheProcess) -> int:
    assert ec.https_port is not None
    return ec.https_port


def verified_get(port: int, cafile: Path, name: str, path: str = "/v2/") -> int:
    context = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection(name, port, context=context, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- certificates across restarts and reloads -----------------------------------------------


def test_restart_with_other_extra_names_serves_a_new_cert_from_the_same_ca(
        edgecaches: StartEdgecache) -> None:
    first = edgecaches("first", NOWHERE, tls=True,
                       extra={"tls": {"extra_names": ["one.edge.test", "192.0.2.61"]}})
    ca_file = first.storage / "tls" / "ca.crt"
    ca_pem = ca_file.read_bytes()
    ca = x509.load_pem_x509_certificate(ca_pem)
    old = served_cert(https_port(first))
    old.verify_directly_issued_by(ca)
    assert {"one.edge.test", "192.0.2.61", "localhost", "127.0.0.1", "::1"} <= san_names(old)
    first.close()

    second = edgecaches("second", NOWHERE, tls=True, storage=first.storage,
                        extra={"tls": {"extra_names": ["two.edge.test"]}})
    new = served_cert(https_port(second))
    assert new.serial_number != old.serial_number
    assert ca_file.read_bytes() == ca_pem  # clients that trust the CA keep trusting edgecache
    new.verify_directly_issued_by(ca)
    names = san_names(new)
    assert "two.edge.test" in names
    assert not names & {"one.edge.test", "192.0.2.61"}
    assert {"localhost", "127.0.0.1", "::1"} <= names
    for name in ("127.0.0.1", "localhost"):
        assert verified_get(https_port(second), ca_file, name) == 200


def test_sighup_renews_a_self_managed_certificate_near_expiry(
        edgecaches: StartEdgecache) -> None:
    """The ExecReload path for the self-managed CA: a certificate on disk that nears expiry is
    re-issued from the same CA on SIGHUP, and new connections get the renewed one."""
    ec = edgecaches("edgecache", NOWHERE, tls=True,
                    extra={"tls": {"extra_names": ["one.edge.test"]}})
    tls_dir = ec.storage / "tls"
    ca_pem = (tls_dir / "ca.crt").read_bytes()
    started_with = served_cert(https_port(ec))
    # as if a year had passed: the certificate on disk now expires in 10 days
    expiring = issue_server_cert(tls_dir, ("one.edge.test",), datetime.datetime.now(
        datetime.UTC) + datetime.timedelta(days=10))

    os.kill(ec.proc.pid, signal.SIGHUP)
    wait_for("a renewed certificate", lambda: served_cert(https_port(ec)).serial_number
             not in (started_with.serial_number, expiring.serial_number))
    renewed = served_cert(https_port(ec))
    assert renewed.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > \
        datetime.timedelta(days=300)
    assert (tls_dir / "ca.crt").read_bytes() == ca_pem
    renewed.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    assert verified_get(https_port(ec), tls_dir / "ca.crt", "localhost") == 200


def install(leaf: trustme.LeafCert, cert_file: Path, key_file: Path) -> bytes:
    """Put an operator certificate in place the way a renewal would (atomic renames); returns
    the leaf's DER."""
    for path, data in ((cert_file, b"".join(b.bytes() for b in leaf.cert_chain_pems)),
                       (key_file, leaf.private_key_pem.bytes())):
        tmp = path.with_suffix(".new")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_bytes(
        Encoding.DER)


def test_sighup_swaps_the_certificate_for_new_connections_while_a_download_streams(
        docker_registry: DockerRegistry, edgecaches: StartEdgecache, tmp_path: Path) -> None:
    authority = trustme.CA()
    cert_file, key_file = tmp_path / "server.crt", tmp_path / "server.key"
    one = install(authority.issue_cert("127.0.0.1", "localhost", "one.edge.test"),
                  cert_file, key_file)
    two_leaf = authority.issue_cert("127.0.0.1", "localhost", "two.edge.test")
    blob = Blob(os.urandom(64 * MiB), "application/octet-stream")
    docker_registry.push_blob("library/big", blob)
    ec = edgecaches("edgecache", {"docker.io": docker_registry.url}, tls=True,
                    extra={"tls": {"cert_file": str(cert_file), "key_file": str(key_file)}})
    port = https_port(ec)
    assert served_cert(port).public_bytes(Encoding.DER) == one
    assert not (ec.storage / "tls").exists()  # operator certificates: no CA of our own

    context = ssl.create_default_context()
    authority.configure_trust(context)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        conn.request("GET", f"/v2/docker.io/library/big/blobs/{blob.digest}")
        response = conn.getresponse()
        assert response.status == 200
        hasher, received = hashlib.sha256(), 0

        def read_slowly(until: int) -> None:
            nonlocal received
            for _ in range(until // (64 * 1024) + 2):  # bounded; each read returns <= 256 KiB
                if received >= until:
                    return
                chunk = response.read(256 * 1024)
                if not chunk:
                    return
                hasher.update(chunk)
                received += len(chunk)
                time.sleep(0.002)  # a slow client is the scenario, not a wait for an event

        read_slowly(8 * MiB)
        assert 8 * MiB <= received < len(blob.data)
        assert conn.sock is not None
        assert conn.sock.getpeercert(binary_form=True) == one

        two = install(two_leaf, cert_file, key_file)
        os.kill(ec.proc.pid, signal.SIGHUP)
        wait_for("a new connection to get the new certificate",
                 lambda: served_cert(port).public_bytes(Encoding.DER) == two)
        assert "TLS certificate reloaded" in ec.log()
        assert ec.proc.poll() is None
        # a fresh, verified connection is served with the new chain
        fresh = http.client.HTTPSConnection("localhost", port, timeout=10, context=context)
        try:
            fresh.request("GET", "/v2/")
            assert fresh.getresponse().status == 200
            assert fresh.sock is not None
            assert fresh.sock.getpeercert(binary_form=True) == two
        finally:
            fresh.close()

        # the download that was streaming carries on, on its original TLS session, to the end
        assert received < len(blob.data)
        assert conn.sock.getpeercert(binary_form=True) == one
        read_slowly(len(blob.data) + 1)
        assert received == len(blob.data)
        assert "sha256:" + hasher.hexdigest() == blob.digest
        assert response.read() == b""
    finally:
        conn.close()


def test_sighup_with_a_half_renewed_certificate_keeps_serving_the_old_one(
        edgecaches: StartEdgecache, tmp_path: Path) -> None:
    """The new certificate is on disk, its key not yet (a renewal in progress) when SIGHUP
    comes: the reload fails, and new connections still get the old, working chain."""
    authority = trustme.CA()
    cert_file, key_file = tmp_path / "server.crt", tmp_path / "server.key"
    old_leaf = authority.issue_cert("127.0.0.1", "localhost")
    one = install(old_leaf, cert_file, key_file)
    ec = edgecaches("edgecache", NOWHERE, tls=True,
                    extra={"tls": {"cert_file": str(cert_file), "key_file": str(key_file)}})
    port = https_port(ec)
    cafile = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(cafile))
    new_leaf = authority.issue_cert("127.0.0.1", "localhost")
    cert_file.write_bytes(new_leaf.cert_chain_pems[0].bytes())  # the key file is still the old

    os.kill(ec.proc.pid, signal.SIGHUP)
    wait_for("the failed reload to be logged", lambda: "TLS reload failed" in ec.log())
    assert ec.proc.poll() is None
    assert verified_get(port, cafile, "127.0.0.1") == 200
    assert served_cert(port).public_bytes(Encoding.DER) == one


# ---- SIGTERM in the middle of a cold pull ---------------------------------------------------


class SlowReader(threading.Thread):
    """GETs a URL and reads it to the end or the first error, bounded in time."""

    def __init__(self, url: str, deadline: float) -> None:
        super().__init__(daemon=True)
        self.url, self.deadline = url, deadline
        self.received = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=30) as response:
                while time.monotonic() < self.deadline:
                    chunk = response.read(64 * 1024)
                    if not chunk:
                        return
                    self.received += len(chunk)
        except Exception as exc:  # the test inspects what happened, whatever it was
            self.error = exc


def blob_file(storage: Path, digest: str) -> Path:
    algorithm, _, hexpart = digest.partition(":")
    return storage / "blobs" / algorithm / hexpart[:2] / hexpart


def test_sigterm_during_a_cold_pull_exits_and_leaves_no_partial_blob(
        docker_registry: DockerRegistry, edgecaches: StartEdgecache) -> None:
    blob = Blob(os.urandom(16 * MiB), "application/octet-stream")
    docker_registry.push_blob("library/slow", blob)
    relay = ThrottledRelay(docker_registry.port, rate=1 * MiB)  # 16 s for the whole blob
    try:
        ec = edgecaches("edgecache", {"docker.io": relay.url},
                        listen={"shutdown_timeout": "2s"})
        path = f"/v2/docker.io/library/slow/blobs/{blob.digest}"
        reader = SlowReader(ec.url + path, time.monotonic() + 40)
        reader.start()
        tmp_dir = ec.storage / "tmp"
        wait_for("the download to be under way",
                 lambda: reader.received > 0 and any(
                     p.stat().st_size >= 256 * 1024 for p in tmp_dir.glob("*.part")))
        assert not blob_file(ec.storage, blob.digest).exists()

        os.kill(ec.proc.pid, signal.SIGTERM)
        try:
            ec.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"edgecache still running 15 s after SIGTERM; log ends:\n"
                        f"{ec.log()[-3000:]}")
        assert ec.proc.returncode == 0, ec.log()[-3000:]
        assert "shutting down (in-flight requests get 2s)" in ec.log()
        reader.join(timeout=15)
        assert not reader.is_alive()
        assert reader.received < len(blob.data)  # the client's download was cut, not finished

        # nothing partial was left behind, and the stop was recorded as clean
        assert list(tmp_dir.iterdir()) == []
        published = blob_file(ec.storage, blob.digest)
        assert not published.exists() or sha256(published.read_bytes()) == blob.digest
        assert (ec.storage / "clean-shutdown").exists()
        verify = subprocess.run(
            [sys.executable, "-m", "edgecache", "verify", "--config", str(ec.config_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr

        # a restart on the same storage: still nothing partial; the blob is fetched whole
        relay.set_rate(None)
        again = edgecaches("restarted", {"docker.io": relay.url}, storage=ec.storage)
        assert list(tmp_dir.iterdir()) == []
        assert not published.exists() or sha256(published.read_bytes()) == blob.digest
        with urllib.request.urlopen(again.url + path, timeout=30) as response:
            data = response.read()
        if data != blob.data:  # not an assert: pytest would diff 16 MiB
            pytest.fail(f"the blob served after the restart differs ({len(data)} bytes)")
        wait_for("the blob to be published", published.exists)
        assert sha256(published.read_bytes()) == blob.digest
    finally:
        relay.close()


# ---- systemd notify protocol ----------------------------------------------------------------


def receive(sock: socket.socket, messages: list[str], want: str, timeout: float,
            count: int = 1) -> None:
    """Collect datagrams until `want` has been seen `count` times (bounded)."""
    deadline = time.monotonic() + timeout
    while messages.count(want) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{want} x{count} not received within {timeout}s: {messages}")
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        messages.extend(data.decode().splitlines())


def test_systemd_notify_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    sock_dir = Path(tempfile.mkdtemp(prefix="ecnotify-", dir="/tmp"))  # AF_UNIX paths are short
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    proc: subprocess.Popen[bytes] | None = None
    log = open(tmp_path / "edgecache.log", "wb")  # noqa: SIM115 - closed in finally
    try:
        sock.bind(str(sock_dir / "notify"))
        sock.settimeout(0.2)
        http_port, tls_port = free_port(), free_port()
        config = tmp_path / "edgecache.yaml"
        config.write_text(yaml.safe_dump({
            "listen": {"http": f"127.0.0.1:{http_port}", "https": f"127.0.0.1:{tls_port}",
                       "shutdown_timeout": "2s"},
            "storage": {"path": str(tmp_path / "storage")},
            "upstreams": {name: {"url": url} for name, url in NOWHERE.items()},
            "metrics": {"listen": None},
        }))
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_dir / "notify"),
               "WATCHDOG_USEC": "200000"}
        env.pop("WATCHDOG_PID", None)
        proc = subprocess.Popen([sys.executable, "-m", "edgecache", "serve", "--config",
                                 str(config)], stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=ROOT)
        messages: list[str] = []
        receive(sock, messages, "READY=1", timeout=20)
        assert messages == ["READY=1"]  # nothing (no watchdog ping) before READY
        # READY came after the listeners accept: connect at once, no retry
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/", timeout=5) as resp:
            assert resp.status == 200
        socket.create_connection(("127.0.0.1", tls_port), timeout=5).close()

        # WATCHDOG_USEC=200000: a ping every 0.1 s while the loop turns
        receive(sock, messages, "WATCHDOG=1", timeout=10, count=3)
        assert proc.poll() is None

        proc.send_signal(signal.SIGTERM)
        receive(sock, messages, "STOPPING=1", timeout=10)
        assert proc.wait(timeout=15) == 0
        assert messages.count("READY=1") == 1
        assert messages.index("READY=1") < messages.index("WATCHDOG=1") < messages.index(
            "STOPPING=1")
    finally:
        if proc is not None:
            stop(proc)
        log.close()
        sock.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
