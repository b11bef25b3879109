"""Two nodes of one site (127.0.0.1 and 127.0.0.2, each its own storage) issue their own
certificates from one site CA: curl and skopeo verify both with the one ca.crt.

The site CA is trustme's, written where a Kubernetes Secret would be mounted. Each node's
certificate carries its own addresses (the HTTPS listeners here are on different loopback
addresses) plus the site's name from `tls.extra_names`, reached with curl's --resolve."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import trustme

from tests.integration.test_tls import client_config, mirror_locations, skopeo_copy
from tests.support.clientconfig import wait_listening
from tests.support.corpus import HUB, Corpus
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.registry import DockerRegistry
from tests.support.skopeo import Skopeo, verify_oci_layout

pytestmark = pytest.mark.integration

SITE_NAME = "registry.site.test"


def free_port_on(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_tls_port(host: str, port: int, ec: EdgecacheProcess, timeout: float = 30.0) -> None:
    """The HTTPS listener starts after the plain one (and after the issuing child): bounded."""

    def running() -> None:
        assert ec.proc.poll() is None, ec.log()[-3000:]

    try:
        wait_listening(host, port, timeout, check=running)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; log:\n{ec.log()[-3000:]}") from exc


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "20",
                           "--noproxy", "*", "--output", "/dev/null",
                           "--write-out", "%{http_code}", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_two_nodes_one_site_ca(hub: DockerRegistry, edgecaches: StartEdgecache,
                               corpus: Corpus, skopeo: Skopeo, tmp_path: Path) -> None:
    site = trustme.CA()
    ca_cert, ca_key = tmp_path / "secret" / "ca.crt", tmp_path / "secret" / "ca.key"
    ca_cert.parent.mkdir()
    site.cert_pem.write_to_path(str(ca_cert))
    site.private_key_pem.write_to_path(str(ca_key))
    ca_key.chmod(0o600)
    tls = {"ca_cert_file": str(ca_cert), "ca_key_file": str(ca_key),
           "extra_names": [SITE_NAME]}
    nodes: list[tuple[str, int, EdgecacheProcess]] = []
    for host in ("127.0.0.1", "127.0.0.2"):
        port = free_port_on(host)
        ec = edgecaches(f"node-{host}", {HUB: hub.url}, listen={"https": f"{host}:{port}"},
                        extra={"tls": tls})
        wait_tls_port(host, port, ec)
        nodes.append((host, port, ec))

    for host, port, ec in nodes:
        url = f"https://{host}:{port}/v2/"
        untrusted = curl(url)
        assert untrusted.returncode == 60, untrusted  # peer certificate cannot be verified
        for args in ([url], ["--resolve", f"{SITE_NAME}:{port}:{host}",
                             f"https://{SITE_NAME}:{port}/v2/"]):
            done = curl("--cacert", str(ca_cert), *args)
            assert (done.returncode, done.stdout) == (0, "200"), (args, done.stderr)
        assert (ec.storage / "tls" / "site" / "server.crt").is_file()
        assert not (ec.storage / "tls" / "ca.key").exists()  # no CA of the node's own
    certs = {(ec.storage / "tls" / "site" / "server.crt").read_bytes() for _, _, ec in nodes}
    assert len(certs) == 2  # each node its own certificate

    # skopeo through the second node, with what client-config writes: the site CA as ca.crt
    host, port, ec = nodes[1]
    address = f"{host}:{port}"
    root = client_config(ec, tmp_path / "root", address)
    cert_dir = root / "etc/containers/certs.d" / address
    assert (cert_dir / "ca.crt").read_bytes() == ca_cert.read_bytes()
    conf = root / "etc/containers/registries.conf.d/edgecache.conf"
    assert mirror_locations(conf)["docker.io"] == [f"{address}/docker.io"]
    seeded = corpus.alpha
    out = tmp_path / "oci"
    result = skopeo_copy(skopeo, f"docker://docker.io/{seeded.repository}:{seeded.tag}", out,
                         conf, cert_dir=cert_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    verify_oci_layout(out, seeded)
