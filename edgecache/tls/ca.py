"""The local CA and the server certificate it issues: the only module that imports `cryptography`.
With a site CA (`tls.ca_cert_file`, edgecache/tls/site.py) the issuer is the operator's CA instead,
checked here the slow way and never written.

`cryptography` costs ~9 MiB of RSS for as long as a process has imported it, and a server needs
it only on the rare occasions a certificate is checked the slow way or (re)issued. So the server
never imports this module: `tls.ensure_self_managed` first asks the record (`server.json`, see
`tls.py`) written here, and only when it does not vouch for the files on disk runs
`python -m edgecache.tls.ca DIR` as a short-lived child, the wanted SANs as JSON on stdin. The child
writes key, certificate and record each by atomic rename, in that order, and the server loads the
chain only after the child exited 0: it never sees a half-written pair.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import sys
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgecache.errors import ConfigError
from edgecache.tls.server import (
    RENEW_BEFORE,
    IPAddress,
    SiteCa,
    now_utc,
    sorted_ips,
    write_private,
    write_public,
    write_record,
)

CA_VALIDITY = datetime.timedelta(days=3650)
SERVER_VALIDITY = datetime.timedelta(days=397)
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    """The CA's certificate and key, created on first use; and whether it was just created."""
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{key_path}: expected an EC private key")
        return cert, key, False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgecache"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"edgecache CA {socket.gethostname()}"),
    ])
    now = now_utc()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, True


def _load_site_ca(site: tuple[Path, Path]
                  ) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    """The operator's site CA, checked the way a verifier will use it: one line if it cannot
    issue (config parsing already checked the key matches and that it is a CA, with `ssl`)."""
    cert_path, key_path = site
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as exc:
        raise ConfigError(f"tls.ca_cert_file: {cert_path} holds no PEM certificate") from exc
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"tls.ca_key_file: {key_path} holds no unencrypted PEM private "
                          "key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
                      | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        raise ConfigError(f"tls.ca_key_file: {key_path}: an EC, RSA or EdDSA key is needed")
    if key.public_key().public_bytes(*_SPKI) != cert.public_key().public_bytes(*_SPKI):
        raise ConfigError(f"tls.ca_key_file: {key_path} is not the key of {cert_path}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise ConfigError(f"tls.ca_cert_file: {cert_path} is not a CA certificate (it needs "
                          "basicConstraints CA:TRUE and keyUsage keyCertSign)") from exc
    if not constraints.ca or not usage.key_cert_sign:
        raise ConfigError(f"tls.ca_cert_file: {cert_path} is not a CA certificate (it needs "
                          "basicConstraints CA:TRUE and keyUsage keyCertSign)")
    now = now_utc()
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise ConfigError(f"tls.ca_cert_file: {cert_path} is valid from "
                          f"{cert.not_valid_before_utc:%Y-%m-%d} to "
                          f"{cert.not_valid_after_utc:%Y-%m-%d}, not now")
    return cert, key


def _current(cert_path: Path, key_path: Path, ca: x509.Certificate
             ) -> tuple[set[str], set[IPAddress], datetime.datetime] | None:
    """SANs and expiry of a still-valid server certificate issued by `ca` whose key is the one
    on disk (a child killed between writing the key and the certificate leaves a mismatched
    pair), or None."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if (cert.issuer != ca.subject or cert.not_valid_after_utc - now_utc() < RENEW_BEFORE
            or not isinstance(key, ec.EllipticCurvePrivateKey)
            or key.public_key().public_bytes(*_SPKI) != cert.public_key().public_bytes(*_SPKI)):
        return None
    try:
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return None
    ips = {ip for ip in sans.get_values_for_type(x509.IPAddress)
           if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)}
    return set(sans.get_values_for_type(x509.DNSName)), ips, cert.not_valid_after_utc


def _issue(directory: Path, ca_cert: x509.Certificate, ca_key: CertificateIssuerPrivateKeyTypes,
           dns: set[str], ips: set[IPAddress]) -> datetime.datetime:
    key = ec.generate_private_key(ec.SECP256R1())
    now = now_utc()
    try:  # the issuer's own key identifier: verifiers match it, however the CA computed it
        authority = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value)
    except x509.ExtensionNotFound:
        authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    eddsa = isinstance(ca_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(dns)]
    sans += [x509.IPAddress(ip) for ip in sorted_ips(ips)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname())]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(authority, critical=False)
        .sign(ca_key, None if eddsa else hashes.SHA256())
    )
    write_private(directory / "server.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    write_public(directory / "server.crt", cert.public_bytes(serialization.Encoding.PEM))
    return cert.not_valid_after_utc


def ensure(directory: Path, dns: set[str], ips: set[IPAddress], site: SiteCa = None
           ) -> dict[str, bool]:
    """The CA (created once) and a server certificate for exactly these SANs, checked the slow
    way (signature, issuer, key match, expiry) and re-issued unless all hold; then the record
    that lets the server skip this next time. What was done, for the caller to log. With
    `site` the CA is the operator's (edgecache/tls/site.py), never created here."""
    ca_cert: x509.Certificate
    ca_key: CertificateIssuerPrivateKeyTypes
    if site is None:
        ca_cert, ca_key, created = _load_ca(directory)
    else:
        (ca_cert, ca_key), created = _load_site_ca(site), False
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    current = _current(directory / "server.crt", directory / "server.key", ca_cert)
    if current is not None and current[:2] == (dns, ips):
        not_after, issued = current[2], False
    else:
        not_after, issued = _issue(directory, ca_cert, ca_key, dns, ips), True
    write_record(directory, dns, ips, not_after, site)
    return {"created_ca": created, "issued": issued}


def main(argv: list[str]) -> int:
    """`python -m edgecache.tls.ca DIR` with {"dns": [...], "ips": [...]} on stdin (and "ca":
    [cert, key] for a site CA); prints what was
    done as JSON; exit 2 with a one-line message on stderr if it cannot."""
    if len(argv) != 1:
        print("usage: python -m edgecache.tls.ca DIR < {\"dns\": [...], \"ips\": [...]}",
              file=sys.stderr)
        return 2
    try:
        wanted = json.load(sys.stdin)
        dns = {str(name) for name in wanted["dns"]}
        ips = {ipaddress.ip_address(str(ip)) for ip in wanted["ips"]}
        site = (Path(wanted["ca"][0]), Path(wanted["ca"][1])) if "ca" in wanted else None
        done = ensure(Path(argv[0]), dns, ips, site)
    except (ConfigError, OSError, ValueError, KeyError, TypeError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
