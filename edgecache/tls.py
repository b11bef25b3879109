"""TLS for the client listener: a local CA, a server certificate every client accepts, reloads.

When the operator gives no certificate, edgecache keeps its own CA under `storage.path/tls/`
(key mode 0600) and issues a server certificate whose SANs hold `localhost`, 127.0.0.1, ::1,
every address of the host, its host names and `tls.extra_names`: the fix for the "x509: cannot
validate certificate for <ip> because it doesn't contain any IP SANs" that NodePort mirrors are
known for. The certificate is re-issued from the same CA when the address set changes (checked
at start and on SIGHUP) or when it nears expiry. Reloading swaps the chain in the live
`SSLContext`: new handshakes get the new certificate, open connections carry on.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import psutil
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgecache.errors import ConfigError

log = logging.getLogger(__name__)

CA_VALIDITY = datetime.timedelta(days=3650)
SERVER_VALIDITY = datetime.timedelta(days=397)
RENEW_BEFORE = datetime.timedelta(days=30)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path  # server certificate (PEM)
    key: Path
    ca: Path | None  # the local CA's certificate, when self-managed


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write a key so that it is never readable by others, not even for a moment."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def host_names(extra: tuple[str, ...] = ()) -> tuple[set[str], set[IPAddress]]:
    """DNS names and IP addresses this host answers to, for the certificate's SANs."""
    dns = {"localhost"}
    ips: set[IPAddress] = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name and not name.startswith("localhost"):
            dns.add(name.lower())
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                ip = ipaddress.ip_address(address.address.split("%", 1)[0])
            except ValueError:
                continue
            if not ip.is_link_local:
                ips.add(ip)
    for name in extra:
        try:
            ips.add(ipaddress.ip_address(name))
        except ValueError:
            dns.add(name.lower())
    return dns, ips


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{key_path}: expected an EC private key")
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgecache"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"edgecache CA {socket.gethostname()}"),
    ])
    now = _now()
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
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    log.info("created a local CA at %s", cert_path)
    return cert, key


def _current_sans(path: Path, ca: x509.Certificate) -> tuple[set[str], set[IPAddress]] | None:
    """The SANs of a still-valid server certificate issued by `ca`, or None."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    if cert.issuer != ca.subject or cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return None
    try:
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return None
    ips = {ip for ip in sans.get_values_for_type(x509.IPAddress)
           if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)}
    return set(sans.get_values_for_type(x509.DNSName)), ips


def ensure_self_managed(directory: Path, extra_names: tuple[str, ...]) -> TlsFiles:
    """The CA (created once) and a server certificate covering this host's current names."""
    ca_cert, ca_key = _load_ca(directory)
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    dns, ips = host_names(extra_names)
    if _current_sans(cert_path, ca_cert) == (dns, ips) and key_path.exists():
        return TlsFiles(cert_path, key_path, directory / "ca.crt")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(dns)]
    sans += [x509.IPAddress(ip) for ip in sorted(ips, key=lambda a: (a.version, int(a)))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname())]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    log.info("issued a server certificate for %s", ", ".join(
        [*sorted(dns), *(str(ip) for ip in sorted(ips, key=lambda a: (a.version, int(a))))]))
    return TlsFiles(cert_path, key_path, directory / "ca.crt")


def server_context(files: TlsFiles, client_ca: str = "") -> ssl.SSLContext:
    """TLS 1.2+; with `client_ca`, clients must present a certificate it signed (mTLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    load_chain(context, files)
    if client_ca:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls.client_ca_file: cannot load {client_ca}: {exc}") from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def load_chain(context: ssl.SSLContext, files: TlsFiles) -> None:
    try:
        context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load {files.cert} / {files.key}: {exc}") from exc


class ServerTls:
    """The listener's live `SSLContext` and where its chain comes from; `reload` on SIGHUP."""

    def __init__(self, cert_file: str, key_file: str, extra_names: tuple[str, ...],
                 directory: Path, client_ca: str = "") -> None:
        self._client_ca = client_ca
        self._cert_file = cert_file
        self._key_file = key_file
        self._extra_names = extra_names
        self._directory = directory
        self.files = self._resolve()
        self.context = server_context(self.files, client_ca)
        self._loaded = self._fingerprint(self.files)

    @staticmethod
    def _fingerprint(files: TlsFiles) -> bytes:
        try:
            return files.cert.read_bytes() + files.key.read_bytes()
        except OSError:
            return b""

    def _resolve(self) -> TlsFiles:
        if self._cert_file:
            return TlsFiles(Path(self._cert_file), Path(self._key_file), None)
        return ensure_self_managed(self._directory, self._extra_names)

    def reload(self) -> None:
        """Re-read operator certificates, or re-issue ours if the host's names changed.

        The chain is tried on a scratch context first: a failed load into the live context
        would leave OpenSSL holding the new certificate without a matching key, and every new
        handshake would fail."""
        files = self._resolve()
        fingerprint = self._fingerprint(files)
        if fingerprint == self._loaded and files == self.files:
            return  # nothing changed (the hourly re-check, usually)
        server_context(files)
        load_chain(self.context, files)
        self.files = files
        self._loaded = fingerprint
        log.info("TLS certificate reloaded from %s", self.files.cert)
