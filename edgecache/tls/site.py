"""The site CA: one CA (`tls.ca_cert_file` / `tls.ca_key_file`) from which every node of a site
issues its own server certificate, so that one `ca.crt` trusts every node.

Each node's certificate carries what a self-managed one carries (its host names, every address
of the host, `tls.extra_names`: the site's names and virtual IP); only the issuer differs. The
issue itself is `tls/ca.py`'s, in the same short-lived child as the self-managed CA, so the
server never imports `cryptography`. The node's certificate and its record live in
`storage.path/tls/site/`, apart from the self-managed CA's files: switching a node to the site CA
and back never destroys the CA its clients already trust. The record hashes the site CA's
certificate and key too, so a rotated site CA (a new Secret) re-issues at the next check.

The config checks here use only `ssl`: the key matches the certificate (OpenSSL's own check) and
the certificate is a CA (OpenSSL's X509_check_ca, through `get_ca_certs`). The child checks the
rest (validity dates, key usage) and reports it as one line as well.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgecache import configfields as fields
from edgecache.config import Config
from edgecache.configvalues import Problems, parse_hostport
from edgecache.tls.server import TlsFiles, ensure_issued, host_names

SITE_CA_KEYS = frozenset({"ca_cert_file", "ca_key_file"})
SUBDIRECTORY = "site"


def site_ca(section: Mapping[str, Any], p: Problems) -> tuple[str, str]:
    """`tls.ca_cert_file` and `tls.ca_key_file`, checked: both or neither, not beside an
    operator's server certificate, a CA whose key is the one given."""
    cert = p.value(lambda: fields.existing_file(section, "ca_cert_file", "tls"), "")
    key = p.value(lambda: fields.existing_file(section, "ca_key_file", "tls"), "")
    if bool(section.get("ca_cert_file")) != bool(section.get("ca_key_file")):
        p.add("tls: ca_cert_file and ca_key_file go together (a site CA needs its key)")
        return "", ""
    if section.get("ca_cert_file") and section.get("cert_file"):
        p.add("tls: cert_file (a server certificate you issued) and ca_cert_file (a site CA "
              "each node issues its own from) exclude each other: set one")
        return "", ""
    if not (cert and key):
        return "", ""
    problem = _check_pair(cert, key)
    if problem:
        p.add(problem)
        return "", ""
    return cert, key


def _check_pair(cert: str, key: str) -> str:
    """One line naming what is wrong with the site CA's files, or ''."""
    trust = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        trust.load_verify_locations(cafile=cert)
    except (OSError, ssl.SSLError, ValueError):
        return f"tls.ca_cert_file: {cert} holds no PEM certificate"
    if not trust.get_ca_certs():
        return f"tls.ca_cert_file: {cert} is not a CA certificate (basicConstraints CA:FALSE)"
    pair = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # a callable password: an encrypted key fails here instead of prompting on a tty
        pair.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            return f"tls.ca_key_file: {key} is not the key of tls.ca_cert_file {cert}"
        return f"tls.ca_key_file: {key} holds no unencrypted PEM private key"
    except (OSError, ValueError):
        return f"tls.ca_key_file: cannot read {key}"
    return ""


def certificate_names(config: Config) -> tuple[str, ...]:
    """`tls.extra_names` plus the HTTPS listener's own address when it names one (not a
    wildcard): an address the listener binds without it being an interface's (a second
    loopback address, a VIP added later) is still one the certificate must name. The server
    and the CLI (`ca`, `client-config`) ask here, so they never issue for different names."""
    names = config.tls.extra_names
    if config.listen.https:
        host = parse_hostport(config.listen.https, "listen.https")[0]
        if host not in ("", "0.0.0.0", "::") and host not in names:
            names = (*names, host)
    return names


def ensure_site_issued(storage_tls: Path, ca_cert: str, ca_key: str,
                       extra_names: tuple[str, ...]) -> TlsFiles:
    """This node's server certificate from the site CA, for its current names and addresses,
    re-issued (in the child) when the record does not vouch for it."""
    directory = storage_tls / SUBDIRECTORY
    dns, ips = host_names(extra_names)
    ensure_issued(directory, dns, ips, (Path(ca_cert), Path(ca_key)))
    return TlsFiles(directory / "server.crt", directory / "server.key", Path(ca_cert))
