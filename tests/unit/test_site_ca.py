"""A site CA (`tls.ca_cert_file` / `tls.ca_key_file`, edgecache/tls/site.py), on real files: the
config's one-line problems, the node's own certificate from it, and when it is re-issued.

The site CAs are trustme's (EC by default, RSA where the key type matters): made by another
tool than ours, so the issuer's key identifier and signature choices are not our own."""

from __future__ import annotations

import datetime
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgecache import cli
from edgecache.config import load
from edgecache.errors import ConfigError
from edgecache.tls.server import ServerTls, ensure_self_managed
from edgecache.tls.site import certificate_names, ensure_site_issued
from tests.unit.test_tls import handshake, load_cert, sans

SITE_NAMES = ("registry.site.test", "192.0.2.10")  # the site's name and virtual IP


def write_ca(directory: Path, ca: trustme.CA, name: str = "site") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}-ca.crt", directory / f"{name}-ca.key"
    ca.cert_pem.write_to_path(str(cert))
    ca.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    return cert, key


def config_file(tmp_path: Path, tls: dict[str, object]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "listen": {"http": "127.0.0.1:0", "https": "127.0.0.1:0"},
        "storage": {"path": str(tmp_path / "storage")}, "tls": tls}))
    return path


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = cli.main(["check-config", "--config", str(path)])
    return code, capsys.readouterr().err.splitlines()


# ---- config ------------------------------------------------------------------------------


def test_a_site_ca_passes_check_config(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = write_ca(tmp_path, trustme.CA())
    path = config_file(tmp_path, {"ca_cert_file": str(cert), "ca_key_file": str(key),
                                  "extra_names": list(SITE_NAMES)})
    assert check_config(path, capsys) == (0, [])
    config = load(str(path))
    assert (config.tls.ca_cert_file, config.tls.ca_key_file) == (str(cert), str(key))


def test_each_site_ca_problem_is_one_line(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = write_ca(tmp_path, trustme.CA())
    other_cert, other_key = write_ca(tmp_path, trustme.CA(), "other")
    leaf = trustme.CA().issue_cert("leaf.test")
    leaf_cert, leaf_key = tmp_path / "leaf.crt", tmp_path / "leaf.key"
    leaf.cert_chain_pems[0].write_to_path(str(leaf_cert))
    leaf.private_key_pem.write_to_path(str(leaf_key))
    junk = tmp_path / "junk.pem"
    junk.write_text("not pem\n")
    cases: list[tuple[dict[str, object], str]] = [
        ({"ca_cert_file": str(cert)},
         "tls: ca_cert_file and ca_key_file go together (a site CA needs its key)"),
        ({"ca_cert_file": str(tmp_path / "absent.crt"), "ca_key_file": str(key)},
         f"tls.ca_cert_file: no such file '{tmp_path / 'absent.crt'}'"),
        ({"ca_cert_file": str(cert), "ca_key_file": str(other_key)},
         f"tls.ca_key_file: {other_key} is not the key of tls.ca_cert_file {cert}"),
        ({"ca_cert_file": str(leaf_cert), "ca_key_file": str(leaf_key)},
         f"tls.ca_cert_file: {leaf_cert} is not a CA certificate (basicConstraints CA:FALSE)"),
        ({"ca_cert_file": str(junk), "ca_key_file": str(key)},
         f"tls.ca_cert_file: {junk} holds no PEM certificate"),
        ({"ca_cert_file": str(cert), "ca_key_file": str(junk)},
         f"tls.ca_key_file: {junk} holds no unencrypted PEM private key"),
        ({"ca_cert_file": str(other_cert), "ca_key_file": str(other_key),
          "cert_file": str(leaf_cert), "key_file": str(leaf_key)},
         "tls: cert_file (a server certificate you issued) and ca_cert_file (a site CA each "
         "node issues its own from) exclude each other: set one"),
    ]
    for tls, line in cases:
        code, err = check_config(config_file(tmp_path, tls), capsys)
        assert (code, err) == (2, [f"edgecache: config: {line}"]), tls


# ---- the node's certificate --------------------------------------------------------------


def test_the_node_certificate_is_issued_by_the_site_ca_for_its_addresses_and_the_site(
        tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = write_ca(tmp_path, ca)
    files = ensure_site_issued(tmp_path / "tls", str(cert), str(key), SITE_NAMES)
    assert files.ca == cert and files.cert.parent == tmp_path / "tls" / "site"
    server, site = load_cert(files.cert), load_cert(cert)
    server.verify_directly_issued_by(site)
    aki = server.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = site.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest  # the CA's own identifier, however it made it
    dns, ips = sans(server)
    assert {"localhost", "registry.site.test"} <= dns
    assert {"127.0.0.1", "::1", "192.0.2.10"} <= ips
    assert (files.key.stat().st_mode & 0o077) == 0
    # a client trusting only the site CA accepts this node under every name
    context = ServerTls("", "", SITE_NAMES, tmp_path / "tls",
                        site_ca=(str(cert), str(key))).context
    for name in ("127.0.0.1", "::1", "registry.site.test", "192.0.2.10"):
        client = ssl.create_default_context(cafile=str(cert))
        handshake(client, context, name)
    # and none of the self-managed CA's files were made
    assert not (tmp_path / "tls" / "ca.key").exists()


def test_two_nodes_one_trust(tmp_path: Path) -> None:
    """Two storage directories (two nodes) with the one site CA: one ca.crt trusts both, and
    each has its own key."""
    cert, key = write_ca(tmp_path, trustme.CA(key_type=trustme.KeyType.RSA))
    a = ensure_site_issued(tmp_path / "a", str(cert), str(key), SITE_NAMES)
    b = ensure_site_issued(tmp_path / "b", str(cert), str(key), SITE_NAMES)
    assert a.key.read_bytes() != b.key.read_bytes()
    for files in (a, b):
        load_cert(files.cert).verify_directly_issued_by(load_cert(cert))
        context = ServerTls("", "", SITE_NAMES, files.cert.parent.parent,
                            site_ca=(str(cert), str(key))).context
        handshake(ssl.create_default_context(cafile=str(cert)), context, "registry.site.test")


def test_reissued_when_the_ca_or_the_names_change_and_only_then(tmp_path: Path) -> None:
    cert, key = write_ca(tmp_path, trustme.CA())
    first = ensure_site_issued(tmp_path / "tls", str(cert), str(key), SITE_NAMES)
    serial = load_cert(first.cert).serial_number
    record = (tmp_path / "tls" / "site" / "server.json").read_bytes()
    again = ensure_site_issued(tmp_path / "tls", str(cert), str(key), SITE_NAMES)
    assert load_cert(again.cert).serial_number == serial
    assert (tmp_path / "tls" / "site" / "server.json").read_bytes() == record  # no child ran

    renamed = ensure_site_issued(tmp_path / "tls", str(cert), str(key), ("other.site.test",))
    assert load_cert(renamed.cert).serial_number != serial
    assert "other.site.test" in sans(load_cert(renamed.cert))[0]

    rotated = trustme.CA()  # a new Secret mounted at the same paths
    write_ca(tmp_path, rotated)
    after = ensure_site_issued(tmp_path / "tls", str(cert), str(key), ("other.site.test",))
    load_cert(after.cert).verify_directly_issued_by(load_cert(cert))
    assert load_cert(after.cert).issuer == load_cert(cert).subject


def test_switching_to_the_site_ca_keeps_the_self_managed_one(tmp_path: Path) -> None:
    own = ensure_self_managed(tmp_path / "tls", ())
    assert own.ca is not None
    before = own.ca.read_bytes(), own.cert.read_bytes()
    cert, key = write_ca(tmp_path, trustme.CA())
    ensure_site_issued(tmp_path / "tls", str(cert), str(key), ())
    back = ensure_self_managed(tmp_path / "tls", ())
    assert back.ca is not None and (back.ca.read_bytes(), back.cert.read_bytes()) == before


def expired_ca(directory: Path) -> tuple[Path, Path]:
    """A CA that was valid last year: only a date can be wrong with it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old site CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=800))
            .not_valid_after(now - datetime.timedelta(days=400))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "old.crt", directory / "old.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_an_expired_site_ca_is_one_config_error(tmp_path: Path) -> None:
    cert, key = expired_ca(tmp_path)
    with pytest.raises(ConfigError) as caught:
        ensure_site_issued(tmp_path / "tls", str(cert), str(key), ())
    message = str(caught.value)
    assert "\n" not in message and f"tls.ca_cert_file: {cert} is valid from" in message
    assert not (tmp_path / "tls" / "site" / "server.crt").exists()


def test_the_serving_side_never_imports_cryptography_with_a_site_ca(tmp_path: Path) -> None:
    cert, key = write_ca(tmp_path, trustme.CA())
    code = ("import sys; from pathlib import Path; from edgecache.tls.server import ServerTls\n"
            f"tls = ServerTls('', '', {SITE_NAMES!r}, Path({str(tmp_path / 'tls')!r}), '',"
            f" ({str(cert)!r}, {str(key)!r}))\n"
            "tls.apply(tls.resolve())\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"
    assert load_cert(tmp_path / "tls" / "site" / "server.crt")


def test_ca_command_prints_the_site_ca(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = write_ca(tmp_path, trustme.CA())
    path = config_file(tmp_path, {"ca_cert_file": str(cert), "ca_key_file": str(key)})
    assert cli.main(["ca", "--config", str(path)]) == 0
    assert capsys.readouterr().out == cert.read_text()
    assert not (tmp_path / "storage" / "tls" / "ca.key").exists()  # no CA of our own made


def test_a_listener_bound_to_one_address_names_it(tmp_path: Path) -> None:
    """127.0.0.2 is no interface's address (lo has 127.0.0.1/8), yet a listener bound to it is
    reached by it; a wildcard adds nothing (the interfaces' addresses are there already)."""
    cert, key = write_ca(tmp_path, trustme.CA())
    tls: dict[str, object] = {"ca_cert_file": str(cert), "ca_key_file": str(key),
                              "extra_names": ["site.test"]}
    path = config_file(tmp_path, tls)
    for https, names in (("127.0.0.2:8443", ("site.test", "127.0.0.2")),
                         ("0.0.0.0:30003", ("site.test",)), ("[::]:30003", ("site.test",))):
        text = path.read_text().replace("https: 127.0.0.1:0", f"https: '{https}'")
        changed = tmp_path / "changed.yaml"
        changed.write_text(text)
        assert certificate_names(load(str(changed))) == names, https
