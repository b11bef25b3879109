"""TLS for the client listener: a local CA, a server certificate every client accepts, reloads.

When the operator gives no certificate, edgecache keeps its own CA under `storage.path/tls/`
(key mode 0600) and issues a server certificate whose SANs hold `localhost`, 127.0.0.1, ::1,
every address of the host, its host names and `tls.extra_names`: the fix for the "x509: cannot
validate certificate for <ip> because it doesn't contain any IP SANs" that NodePort mirrors are
known for. (With a site CA the same certificate comes from the operator's CA: tls/site.py.)
The certificate is re-issued from the same CA when the address set changes (checked
at start and on SIGHUP) or when it nears expiry. Reloading swaps the chain in the live
`SSLContext`: new handshakes get the new certificate, open connections carry on.

This module needs only the standard library: issuing and the thorough check of a
certificate are `edgecache/tls/ca.py`'s, run in a child process only when the record it leaves
(`server.json`) does not vouch for the files on disk; see `ensure_self_managed`.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgecache.children import child_env
from edgecache.errors import ConfigError

log = logging.getLogger(__name__)

RENEW_BEFORE = datetime.timedelta(days=30)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RECORD = "server.json"  # what edgecache/tls/ca.py last found good: see _record_vouches
RECORDED = ("ca.crt", "server.crt", "server.key")
CA_TIMEOUT = 120.0  # python + cryptography start and one EC signature: seconds on a slow node


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path  # server certificate (PEM)
    key: Path
    ca: Path | None  # the local CA's certificate, when self-managed


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def write_private(path: Path, data: bytes) -> None:
    """Write a key so that it is never readable by others, not even for a moment."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    """Readable by others (certificates), and whole or absent even after a power cut."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def host_names(extra: tuple[str, ...] = ()) -> tuple[set[str], set[IPAddress]]:
    """DNS names and IP addresses this host answers to, for the certificate's SANs."""
    dns = {"localhost"}
    ips: set[IPAddress] = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name and not name.startswith("localhost"):
            dns.add(name.lower())
    import psutil  # here, not at import: only an HTTPS listener with our own CA needs it

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


def sorted_ips(ips: set[IPAddress]) -> list[IPAddress]:
    return sorted(ips, key=lambda a: (a.version, int(a)))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


SiteCa = tuple[Path, Path] | None  # a site CA's certificate and key (edgecache/tls/site.py)


def recorded(directory: Path, site: SiteCa = None) -> dict[str, Path]:
    """The files a record's hashes cover: with a site CA, its certificate and key as well."""
    files = {name: directory / name for name in RECORDED}
    if site is not None:
        files["ca.crt"], files["ca.key"] = site
    return files


def write_record(directory: Path, dns: set[str], ips: set[IPAddress],
                 not_after: datetime.datetime, site: SiteCa = None) -> None:
    """After a slow check or an issue (edgecache/tls/ca.py): which files were found good, for which
    SANs, until when. Hashes tie the record to the very bytes checked: any other file (an
    operator's copy, a test's, a half-finished issue) makes the record void."""
    record = {"dns": sorted(dns), "ips": [str(ip) for ip in sorted_ips(ips)],
              "not_after": not_after.timestamp(),
              "sha256": {name: _sha256(path) for name, path in recorded(directory, site).items()}}
    write_private(directory / RECORD, json.dumps(record, indent=1).encode())


def _record_vouches(directory: Path, dns: set[str], ips: set[IPAddress],
                    site: SiteCa = None) -> bool:
    """Whether the record says the files on disk are a pair issued by our CA for exactly these
    SANs and not yet due for renewal: the server's check, without `cryptography`."""
    try:
        record = json.loads((directory / RECORD).read_bytes())
        if site is None and not (directory / "ca.key").exists():
            return False  # the slow path makes a new CA (and certificate), as before
        return bool(
            record["dns"] == sorted(dns)
            and record["ips"] == [str(ip) for ip in sorted_ips(ips)]
            and datetime.datetime.fromtimestamp(float(record["not_after"]), datetime.UTC)
            - now_utc() >= RENEW_BEFORE
            and all(record["sha256"][name] == _sha256(path)
                    for name, path in recorded(directory, site).items()))
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return False


def ensure_self_managed(directory: Path, extra_names: tuple[str, ...]) -> TlsFiles:
    """The CA (created once) and a server certificate covering this host's current names.

    Usually the record vouches for the files; otherwise `python -m edgecache.tls.ca` checks them
    with `cryptography` and re-issues what it must, in a child process, so that the ~9 MiB
    `cryptography` costs never stay in the server."""
    dns, ips = host_names(extra_names)
    ensure_issued(directory, dns, ips)
    return TlsFiles(directory / "server.crt", directory / "server.key", directory / "ca.crt")


def ensure_issued(directory: Path, dns: set[str], ips: set[IPAddress], site: SiteCa = None
                  ) -> None:
    """The server certificate in `directory` for exactly these SANs, from our CA there or from
    `site`: the record's word, else the child's slow check and (re)issue."""
    if not _record_vouches(directory, dns, ips, site):
        _run_ca(directory, dns, ips, site)


def _run_ca(directory: Path, dns: set[str], ips: set[IPAddress], site: SiteCa) -> None:
    wanted = json.dumps({"dns": sorted(dns), "ips": [str(ip) for ip in sorted_ips(ips)],
                         **({"ca": [str(path) for path in site]} if site else {})})
    try:
        done = subprocess.run([sys.executable, "-m", "edgecache.tls.ca", str(directory)],
                              input=wanted, capture_output=True, text=True, env=child_env(),
                              timeout=CA_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"tls: cannot run the certificate issuer: {exc}") from exc
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise ConfigError(f"tls: cannot issue a certificate in {directory}: {message[0]}")
    try:
        what = json.loads(done.stdout)
    except ValueError:
        what = {}
    if what.get("created_ca"):
        log.info("created a local CA at %s", directory / "ca.crt")
    if what.get("issued"):
        log.info("issued a server certificate for %s", ", ".join(
            [*sorted(dns), *(str(ip) for ip in sorted_ips(ips))]))


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
    """The listener's live `SSLContext` and where its chain comes from; on SIGHUP the server runs
    `resolve` off the loop, then `apply` on it."""

    def __init__(self, cert_file: str, key_file: str, extra_names: tuple[str, ...],
                 directory: Path, client_ca: str = "", site_ca: tuple[str, str] = ("", "")
                 ) -> None:
        self._site_ca = site_ca
        self._cert_file = cert_file
        self._key_file = key_file
        self._extra_names = extra_names
        self._directory = directory
        self.files = self.resolve()
        self.context = server_context(self.files, client_ca)
        self._loaded = self._fingerprint(self.files)

    @staticmethod
    def _fingerprint(files: TlsFiles) -> bytes:
        try:
            return files.cert.read_bytes() + files.key.read_bytes()
        except OSError:
            return b""

    def resolve(self) -> TlsFiles:
        """Where the chain comes from now; for a self-managed one this may run the issuer (a
        child process, a fraction of a second): the server calls it off the event loop."""
        if self._cert_file:
            return TlsFiles(Path(self._cert_file), Path(self._key_file), None)
        if self._site_ca[0]:
            from edgecache.tls.site import ensure_site_issued

            return ensure_site_issued(self._directory, *self._site_ca, self._extra_names)
        return ensure_self_managed(self._directory, self._extra_names)

    def apply(self, files: TlsFiles) -> None:
        """Load `files` into the live context if they differ from what it serves.

        The chain is tried on a scratch context first: a failed load into the live context
        would leave OpenSSL holding the new certificate without a matching key, and every new
        handshake would fail."""
        fingerprint = self._fingerprint(files)
        if fingerprint == self._loaded and files == self.files:
            return  # nothing changed (the hourly re-check, usually)
        server_context(files)
        load_chain(self.context, files)
        self.files = files
        self._loaded = fingerprint
        log.info("TLS certificate reloaded from %s", self.files.cert)
