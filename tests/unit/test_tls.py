"""The self-managed CA and server certificate (edgecache/tls/server.py), on real files.

Everything is checked with `cryptography` against what `ensure_self_managed` wrote: the key
files' modes, the chain, the SANs, and when (and only when) a new server certificate is issued.
"""

from __future__ import annotations

import datetime
import json
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from edgecache.errors import ConfigError
from edgecache.tls.server import RENEW_BEFORE, ServerTls, ensure_self_managed
from tests.support.certs import issue_server_cert

EXTRA = ("mirror.edge.test", "192.0.2.77")


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (set(ext.get_values_for_type(x509.DNSName)),
            {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ca_and_server_keys_are_private(tmp_path: Path) -> None:
    files = ensure_self_managed(tmp_path / "tls", EXTRA)
    assert files.ca is not None
    assert mode(tmp_path / "tls" / "ca.key") == 0o600
    assert mode(files.key) == 0o600
    # the certificates are public, the directory is not listable by others
    assert mode(tmp_path / "tls") & 0o077 == 0
    assert not list((tmp_path / "tls").glob("*.tmp"))


def test_server_cert_verifies_against_the_ca_and_names_this_host(tmp_path: Path) -> None:
    files = ensure_self_managed(tmp_path / "tls", EXTRA)
    assert files.ca is not None
    ca, server = load_cert(files.ca), load_cert(files.cert)

    server.verify_directly_issued_by(ca)  # raises on a wrong issuer or signature
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in list(eku)
    dns, ips = sans(server)
    assert {"localhost", "mirror.edge.test"} <= dns
    assert {"127.0.0.1", "::1", "192.0.2.77"} <= ips
    assert "192.0.2.77" not in dns  # an IP in extra_names is an IP SAN, not a DNS name
    # the key on disk is the certificate's key
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo,
    ) == server.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_openssl_accepts_the_chain_for_every_loopback_name(tmp_path: Path) -> None:
    """The same check a TLS client makes: Python's ssl (OpenSSL) verifies the chain and matches
    the host name or IP, here without any network: through a memory BIO handshake."""
    files = ensure_self_managed(tmp_path / "tls", EXTRA)
    assert files.ca is not None
    server_ctx = ServerTls("", "", EXTRA, tmp_path / "tls").context
    for name in ("localhost", "127.0.0.1", "::1", "mirror.edge.test", "192.0.2.77"):
        client_ctx = ssl.create_default_context(cafile=str(files.ca))
        handshake(client_ctx, server_ctx, name)


def handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, name: str) -> None:
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(20):  # bounded: a TLS 1.3 handshake takes two or three flights
        done = 0
        for side, out, peer_in in ((client, c_out, s_in), (server, s_out, c_in)):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            data = out.read()
            if data:
                peer_in.write(data)
        if done == 2:
            return
    raise AssertionError(f"TLS handshake for {name} did not complete")


def test_unchanged_names_keep_the_same_certificate(tmp_path: Path) -> None:
    first = ensure_self_managed(tmp_path / "tls", EXTRA)
    cert_bytes, key_bytes = first.cert.read_bytes(), first.key.read_bytes()
    second = ensure_self_managed(tmp_path / "tls", EXTRA)
    assert load_cert(second.cert).serial_number == x509.load_pem_x509_certificate(
        cert_bytes).serial_number
    assert second.cert.read_bytes() == cert_bytes
    assert second.key.read_bytes() == key_bytes


def test_changed_names_issue_a_new_certificate_from_the_same_ca(tmp_path: Path) -> None:
    # A change of extra_names stands in for a change of the host's address set: both feed the
    # same SAN set (host_names), and the host's interfaces cannot be changed from a test.
    directory = tmp_path / "tls"
    first = ensure_self_managed(directory, EXTRA)
    assert first.ca is not None
    ca_bytes, ca_key_bytes = first.ca.read_bytes(), (directory / "ca.key").read_bytes()
    old = load_cert(first.cert)

    second = ensure_self_managed(directory, ("other.edge.test", "192.0.2.78"))
    assert second.ca is not None
    new = load_cert(second.cert)
    assert new.serial_number != old.serial_number
    assert second.ca.read_bytes() == ca_bytes  # the same CA: clients keep trusting it
    assert (directory / "ca.key").read_bytes() == ca_key_bytes
    new.verify_directly_issued_by(load_cert(second.ca))
    dns, ips = sans(new)
    assert "other.edge.test" in dns and "mirror.edge.test" not in dns
    assert "192.0.2.78" in ips and "192.0.2.77" not in ips
    assert {"localhost"} <= dns and {"127.0.0.1", "::1"} <= ips


def _issue(directory: Path, not_after: datetime.datetime) -> int:
    """A server certificate with exactly the SANs edgecache wants for EXTRA; its serial."""
    return issue_server_cert(directory, EXTRA, not_after).serial_number


def test_a_certificate_near_expiry_is_renewed(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    ensure_self_managed(directory, EXTRA)
    ca_bytes = (directory / "ca.crt").read_bytes()
    now = datetime.datetime.now(datetime.UTC)

    # Control: the same construction with plenty of validity left is kept as it is, so what
    # follows is renewed for its expiry alone, not for anything else about how it was built.
    healthy = _issue(directory, now + RENEW_BEFORE + datetime.timedelta(days=60))
    assert load_cert(ensure_self_managed(directory, EXTRA).cert).serial_number == healthy

    expiring = _issue(directory, now + RENEW_BEFORE - datetime.timedelta(days=1))
    files = ensure_self_managed(directory, EXTRA)
    renewed = load_cert(files.cert)
    assert renewed.serial_number != expiring
    assert renewed.not_valid_after_utc - now > RENEW_BEFORE + datetime.timedelta(days=300)
    assert (directory / "ca.crt").read_bytes() == ca_bytes
    renewed.verify_directly_issued_by(load_cert(directory / "ca.crt"))
    assert sans(renewed)[1] >= {"127.0.0.1", "::1", "192.0.2.77"}


def test_a_certificate_from_another_ca_is_replaced(tmp_path: Path) -> None:
    """A server.crt left by an older CA (e.g. ca.* restored from elsewhere) is not served."""
    directory = tmp_path / "tls"
    ensure_self_managed(directory, EXTRA)
    other = tmp_path / "other"
    ensure_self_managed(other, EXTRA)
    for name in ("server.crt", "server.key"):
        (directory / name).write_bytes((other / name).read_bytes())
    files = ensure_self_managed(directory, EXTRA)
    load_cert(files.cert).verify_directly_issued_by(load_cert(directory / "ca.crt"))


def test_sighup_reload_swaps_the_chain_in_the_live_context(tmp_path: Path) -> None:
    """ServerTls.reload with operator files: a new handshake on the SAME SSLContext object
    presents the new certificate (what the listener keeps using after SIGHUP)."""
    a, b = tmp_path / "a", tmp_path / "b"
    ensure_self_managed(a, ("one.edge.test",))
    ensure_self_managed(b, ("two.edge.test",))
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    cert.write_bytes((a / "server.crt").read_bytes())
    key.write_bytes((a / "server.key").read_bytes())
    tls = ServerTls(str(cert), str(key), (), tmp_path / "unused")
    context = tls.context
    handshake(ssl.create_default_context(cafile=str(a / "ca.crt")), context, "one.edge.test")

    cert.write_bytes((b / "server.crt").read_bytes())
    key.write_bytes((b / "server.key").read_bytes())
    tls.apply(tls.resolve())
    assert tls.context is context
    handshake(ssl.create_default_context(cafile=str(b / "ca.crt")), context, "two.edge.test")
    with pytest.raises(ssl.SSLCertVerificationError):  # the old chain is no longer served
        handshake(ssl.create_default_context(cafile=str(a / "ca.crt")), context, "one.edge.test")
    assert not (tmp_path / "unused").exists()  # operator certificates: no CA is created


def test_a_failed_reload_keeps_serving_the_current_certificate(tmp_path: Path) -> None:
    """SIGHUP in the middle of an operator's renewal (new certificate written, key not yet):
    the reload fails and the listener must keep handshaking with the chain it had."""
    a, b = tmp_path / "a", tmp_path / "b"
    ensure_self_managed(a, ("one.edge.test",))
    ensure_self_managed(b, ("two.edge.test",))
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    cert.write_bytes((a / "server.crt").read_bytes())
    key.write_bytes((a / "server.key").read_bytes())
    tls = ServerTls(str(cert), str(key), (), tmp_path / "unused")
    trust_a = ssl.create_default_context(cafile=str(a / "ca.crt"))

    for broken_key in ((a / "server.key").read_bytes(), b"not a key\n"):
        cert.write_bytes((b / "server.crt").read_bytes())  # the new certificate...
        key.write_bytes(broken_key)  # ...with the old key, or a key file cut short
        with pytest.raises(ConfigError):
            tls.apply(tls.resolve())
        handshake(trust_a, tls.context, "one.edge.test")


def test_the_serving_side_never_imports_cryptography(tmp_path: Path) -> None:
    """cryptography costs ~9 MiB of RSS for the life of a process: the listener's side
    (ServerTls: first issue, then the record's fast path, then a reload) must leave it to the
    short-lived `python -m edgecache.tls.ca` child."""
    code = ("import sys; from pathlib import Path; from edgecache.tls.server import ServerTls\n"
            f"tls = ServerTls('', '', {EXTRA!r}, Path({str(tmp_path / 'tls')!r}))\n"
            "tls.apply(tls.resolve())\n"
            "again = ServerTls('', '', (), tls.files.cert.parent); again.apply(again.resolve())\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"
    assert load_cert(tmp_path / "tls" / "server.crt")  # and it did issue


def test_a_key_that_does_not_match_the_certificate_is_reissued(tmp_path: Path) -> None:
    """An issue cut short between writing the key and the certificate leaves a new key with
    the old certificate: the record no longer matches the files, the slow check sees the pair
    is not one, and a fresh pair is issued (loading the mismatch would fail every start)."""
    directory = tmp_path / "tls"
    first = ensure_self_managed(directory, EXTRA)
    old_serial = load_cert(first.cert).serial_number
    other = ensure_self_managed(tmp_path / "other", EXTRA)
    first.key.write_bytes(other.key.read_bytes())

    files = ensure_self_managed(directory, EXTRA)
    assert load_cert(files.cert).serial_number != old_serial
    ServerTls("", "", EXTRA, directory)  # loads: the pair matches again


def test_a_record_that_lies_about_the_names_does_not_keep_a_certificate(tmp_path: Path) -> None:
    """The record is a cache of the slow check, never trusted for SANs it was not written for:
    asking for other names re-issues even though the files' hashes still match."""
    directory = tmp_path / "tls"
    first = ensure_self_managed(directory, EXTRA)
    old_serial = load_cert(first.cert).serial_number
    record = json.loads((directory / "server.json").read_text())
    assert set(record["sha256"]) == {"ca.crt", "server.crt", "server.key"}
    assert mode(directory / "server.json") == 0o600

    files = ensure_self_managed(directory, ("other.edge.test",))
    assert load_cert(files.cert).serial_number != old_serial
    assert "other.edge.test" in sans(load_cert(files.cert))[0]


def test_an_issuer_failure_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "tls"
    blocker.write_text("a file where the TLS directory should be\n")
    with pytest.raises(ConfigError, match="cannot issue a certificate"):
        ensure_self_managed(blocker, EXTRA)
