"""Clients pull through the HTTPS listener trusting only edgecache's own CA.

edgecache runs with `listen.https` on 127.0.0.1 and a self-managed CA. The client files come
from `edgecache client-config --out ROOT --address ...`, staged under the test's tmp directory:

- skopeo gets ROOT/etc/containers/registries.conf.d/edgecache.conf as `--registries-conf` (its
  mirror entry is `<address>/docker.io`), and the CA through `--src-cert-dir
  ROOT/etc/containers/certs.d/<address>`: the directory client-config wrote for that mirror.
  `--src-cert-dir` sets the certificate directory for every connection of the source, mirrors
  included, which these tests prove: the only working path is the mirror (skopeo's proxy
  settings make docker.io unreachable, see tests/support/skopeo.py), so a pull that succeeds
  came through edgecache over verified TLS. TLS verification stays on: no tls-verify=false.
- Without the CA the same pull fails, with an x509 error from the mirror.
"""

from __future__ import annotations

import http.client
import ssl
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.corpus import HUB, Corpus, Seeded
from tests.support.edgecache import EdgecacheProcess, StartEdgecache
from tests.support.registry import DockerRegistry
from tests.support.skopeo import SKOPEO_TIMEOUT, Skopeo, verify_oci_layout

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def edgecache_cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "edgecache", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"edgecache {' '.join(args)}: {result.stderr}"
    return result


def client_config(ec: EdgecacheProcess, out: Path, *addresses: str) -> Path:
    args = ["client-config", "--config", str(ec.config_path), "--out", str(out)]
    for address in addresses:
        args += ["--address", address]
    edgecache_cli(*args)
    return out


def skopeo_copy(skopeo: Skopeo, source: str, destination: Path, registries_conf: Path,
                cert_dir: Path | None) -> subprocess.CompletedProcess[str]:
    """`skopeo copy --all` to an OCI layout with the given trust; returns the outcome as is."""
    args = [skopeo.binary, "--policy", str(skopeo.policy), "--tmpdir", str(skopeo.workdir / "tmp"),
            "--command-timeout", f"{SKOPEO_TIMEOUT - 10}s", "--registries-conf",
            str(registries_conf), "copy", "--all", "--retry-times", "0",
            "--dest-oci-accept-uncompressed-layers"]
    if cert_dir is not None:
        args += ["--src-cert-dir", str(cert_dir)]
    args += [source, f"oci:{destination}"]
    return subprocess.run(args, env=skopeo.env, capture_output=True, text=True,
                          timeout=SKOPEO_TIMEOUT, check=False)


def mirror_locations(registries_conf: Path) -> dict[str, list[str]]:
    doc = tomllib.loads(registries_conf.read_text())
    return {entry["prefix"]: [m["location"] for m in entry.get("mirror", [])]
            for entry in doc["registry"]}


def https_port(ec: EdgecacheProcess) -> int:
    assert ec.https_port is not None
    return ec.https_port


@pytest.fixture
def https_edge(hub: DockerRegistry, edgecaches: StartEdgecache) -> EdgecacheProcess:
    return edgecaches("edgecache", {HUB: hub.url}, tls=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_skopeo_pulls_over_https_trusting_only_the_generated_ca(
        host: str, https_edge: EdgecacheProcess, corpus: Corpus, skopeo: Skopeo,
        tmp_path: Path) -> None:
    ec = https_edge
    address = f"{host}:{https_port(ec)}"
    root = client_config(ec, tmp_path / "root", host)
    conf = root / "etc/containers/registries.conf.d/edgecache.conf"
    cert_dir = root / "etc/containers/certs.d" / address
    ca = (ec.storage / "tls" / "ca.crt").read_bytes()
    assert (cert_dir / "ca.crt").read_bytes() == ca
    assert mirror_locations(conf)["docker.io"] == [f"{address}/docker.io"]
    assert "insecure" not in conf.read_text()
    seeded: Seeded = corpus.alpha if host == "127.0.0.1" else corpus.multi
    source = f"docker://docker.io/{seeded.repository}:{seeded.tag}"

    # Without the CA: the mirror's certificate is refused, and there is no other way.
    untrusted = skopeo_copy(skopeo, source, tmp_path / "untrusted", conf, cert_dir=None)
    assert untrusted.returncode != 0
    assert "x509: certificate signed by unknown authority" in untrusted.stderr, \
        untrusted.stderr[-3000:]
    assert f"Mirrors also failed: [{address}/docker.io/" in untrusted.stderr
    mark = ec.mark()

    # With the CA client-config wrote for this address.
    out = tmp_path / "oci"
    result = skopeo_copy(skopeo, source, out, conf, cert_dir=cert_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    verify_oci_layout(out, seeded)
    served = {(r.method, r.path) for r in ec.requests_since(mark) if r.status == 200}
    assert ("GET", f"/v2/docker.io/{seeded.repository}/manifests/{seeded.tag}") in served
    for digest in seeded.blobs:
        assert ("GET", f"/v2/docker.io/{seeded.repository}/blobs/{digest}") in served


def test_ca_command_prints_the_ca_the_listener_chains_to(
        https_edge: EdgecacheProcess, tmp_path: Path) -> None:
    ec = https_edge
    pem = edgecache_cli("ca", "--config", str(ec.config_path)).stdout
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    assert pem.encode() == (ec.storage / "tls" / "ca.crt").read_bytes()
    cafile = tmp_path / "ca.pem"
    cafile.write_text(pem)
    for name in ("127.0.0.1", "localhost"):
        context = ssl.create_default_context(cafile=str(cafile))
        conn = http.client.HTTPSConnection(name, https_port(ec), context=context, timeout=10)
        try:
            conn.request("GET", "/v2/")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        finally:
            conn.close()
    # the system trust store alone does not know edgecache's CA
    conn = http.client.HTTPSConnection("127.0.0.1", https_port(ec),
                                       context=ssl.create_default_context(), timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/v2/")
    conn.close()
