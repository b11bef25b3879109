"""The shipped deployment files: the systemd unit, the Containerfile, the image's config and the
Kubernetes manifests. Each is parsed (not grepped for a substring) and checked against what
edgecache itself accepts: configs go through `edgecache check-config`, the unit through
`systemd-analyze verify`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgecache import cli
from edgecache.config import load, parse_hostport

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "edgecache.service"
CONTAINERFILE = ROOT / "images" / "Containerfile"
IMAGE_CONFIG = ROOT / "images" / "config.yaml"
KUBERNETES = ROOT / "images" / "kubernetes" / "edgecache.yaml"
VENV_EDGECACHE = ROOT / ".venv" / "bin" / "edgecache"


# ---- systemd -------------------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value assigned (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """A copy whose ExecStart is this checkout's edgecache: systemd-analyze has nothing to say
    (it exits 0 even for unknown keys or bad values, so silence is the real check)."""
    binary = shutil.which("systemd-analyze")
    assert binary is not None, "systemd-analyze is not installed"
    assert VENV_EDGECACHE.exists()
    text = UNIT.read_text()
    exec_lines = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert len(exec_lines) == 1
    program, *args = exec_lines[0].removeprefix("ExecStart=").split()
    assert args[:1] == ["serve"]
    copy = tmp_path / "edgecache.service"
    copy.write_text(text.replace(f"ExecStart={program} ", f"ExecStart={VENV_EDGECACHE} ", 1))
    assert copy.read_text() != text

    result = subprocess.run([binary, "verify", str(copy)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr)


def test_systemd_analyze_is_not_silent_about_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt hardening key is reported."""
    binary = shutil.which("systemd-analyze")
    assert binary is not None
    text = UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    copy = tmp_path / "edgecache.service"
    copy.write_text(text.replace("ExecStart=/usr/local/bin/edgecache ",
                                 f"ExecStart={VENV_EDGECACHE} "))
    result = subprocess.run([binary, "verify", str(copy)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert "NoNewPrivilege" in result.stderr


def test_unit_is_a_hardened_notify_service() -> None:
    service = unit_settings(UNIT.read_text())["Service"]

    def one(key: str) -> str:
        assert key in service, f"{key} missing from [Service]"
        assert len(service[key]) == 1, service[key]
        return service[key][0]

    assert one("Type") == "notify"
    assert one("DynamicUser") == "yes"
    assert one("StateDirectory") == "edgecache"
    assert one("ProtectSystem") == "strict"
    assert one("NoNewPrivileges") == "yes"
    assert one("PrivateTmp") == "yes"
    assert one("Restart") == "on-failure"
    assert one("MemoryMax").rstrip("KMG").isdigit()
    assert one("ExecReload").endswith("-HUP $MAINPID")  # SIGHUP reloads the certificate
    assert one("WatchdogSec")  # edgecache pings at half of WATCHDOG_USEC
    # the storage systemd makes writable is where the documented config keeps the cache
    assert "/etc/edgecache/config.yaml" in one("ExecStart")
    assert "multi-user.target" in unit_settings(UNIT.read_text())["Install"]["WantedBy"]


# ---- edgecache configs shipped with the image and the manifests -----------------------------


def kube_docs() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(KUBERNETES.read_text()) if doc]


def kube(kind: str) -> dict[str, Any]:
    found = [doc for doc in kube_docs() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def configmap_config(tmp_path: Path) -> Path:
    path = tmp_path / "configmap-config.yaml"
    path.write_text(kube("ConfigMap")["data"]["config.yaml"])
    return path


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["check-config", "--config", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "ok" in out and err == ""


def test_image_config_passes_check_config(capsys: pytest.CaptureFixture[str]) -> None:
    check_config(IMAGE_CONFIG, capsys)
    config = load(str(IMAGE_CONFIG))
    assert config.listen.https is not None
    assert parse_hostport(config.listen.https, "listen.https")[1] == 30003
    assert str(config.storage.path) == "/var/lib/edgecache"
    assert not config.tls.cert_file  # the self-managed CA, kept in the storage volume


def test_configmap_config_passes_check_config(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = configmap_config(tmp_path)
    check_config(path, capsys)
    config = load(str(path))
    assert config.listen.https is not None
    assert parse_hostport(config.listen.https, "listen.https")[1] == 30003
    assert str(config.storage.path) == "/var/lib/edgecache"


def daemonset_container(daemonset: dict[str, Any]) -> dict[str, Any]:
    containers = daemonset["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_daemonset_keeps_the_cache_on_a_host_path(tmp_path: Path) -> None:
    daemonset = kube("DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    container = daemonset_container(daemonset)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    storage = volumes[mounts["/var/lib/edgecache"]]
    assert "hostPath" in storage, storage
    assert storage["hostPath"]["path"] == "/var/lib/edgecache"
    # the config is the ConfigMap, mounted where the container's args look for it
    config_volume = volumes[mounts["/etc/edgecache"]]
    assert config_volume["configMap"]["name"] == kube("ConfigMap")["metadata"]["name"]
    args = container["args"]
    assert args[0] == "serve" and args[args.index("--config") + 1] == \
        "/etc/edgecache/config.yaml"
    # the container's HTTPS port is the port edgecache listens on
    config = load(str(configmap_config(tmp_path)))
    assert config.listen.https is not None
    https_port = parse_hostport(config.listen.https, "listen.https")[1]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["https"] == https_port
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_service_is_nodeport_30003_with_scrape_annotations() -> None:
    service = kube("Service")
    assert service["spec"]["type"] == "NodePort"
    https = [p for p in service["spec"]["ports"] if p["name"] == "https"]
    assert len(https) == 1
    assert https[0]["nodePort"] == 30003 and https[0]["port"] == 30003
    daemonset = kube("DaemonSet")
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    pod_annotations = daemonset["spec"]["template"]["metadata"]["annotations"]
    assert pod_annotations["prometheus.io/scrape"] == "true"
    assert pod_annotations["prometheus.io/port"].isdigit()
    assert pod_annotations["prometheus.io/path"] == "/metrics"
    assert service["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_metrics_and_probe_ports_are_where_edgecache_serves_them(tmp_path: Path) -> None:
    """The scrape annotations, the probes and the container's metrics port must name the port
    of edgecache's metrics listener in the ConfigMap's config (or its default)."""
    config = load(str(configmap_config(tmp_path)))
    metrics = getattr(config, "metrics", None)
    if metrics is None:
        pytest.fail("edgecache has no metrics listener, yet the manifests scrape one")
    assert metrics.listen, "the ConfigMap's config turns the metrics listener off"
    port = parse_hostport(metrics.listen, "metrics.listen")[1]
    daemonset = kube("DaemonSet")
    container = daemonset_container(daemonset)
    annotations = daemonset["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port
    assert int(kube("Service")["metadata"]["annotations"]["prometheus.io/port"]) == port
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"] == port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == port, probe
    assert str(port) in containerfile_instructions(CONTAINERFILE.read_text())["EXPOSE"][-1]


# ---- Containerfile -------------------------------------------------------------------------


def containerfile_instructions(text: str) -> dict[str, list[str]]:
    """Instruction -> arguments, for the final stage only (after the last FROM)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    out: dict[str, list[str]] = {}
    for line in logical:
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            out = {}
        out.setdefault(instruction.upper(), []).append(args.strip())
    return out


def test_containerfile_runs_unprivileged_with_both_volumes() -> None:
    final = containerfile_instructions(CONTAINERFILE.read_text())
    assert "USER" in final, "the final stage runs as root"
    user = final["USER"][-1].split(":")[0]
    assert user not in ("root", "0", "")
    assert not user.isdigit() or int(user) > 0
    volumes: list[str] = []
    for args in final["VOLUME"]:
        volumes += json.loads(args) if args.startswith("[") else args.split()
    assert {"/var/lib/edgecache", "/etc/edgecache"} <= set(volumes)
    # the image's config is the one checked above, at the path its CMD reads
    assert any(args.split()[0] == "images/config.yaml"
               and args.split()[1] == "/etc/edgecache/config.yaml" for args in final["COPY"])
    assert json.loads(final["CMD"][-1]) == ["serve", "--config", "/etc/edgecache/config.yaml"]
    assert json.loads(final["ENTRYPOINT"][-1]) == ["edgecache"]
    # the non-root user owns the storage volume it must write to
    run = " ".join(final["RUN"])
    assert "chown" in run and "/var/lib/edgecache" in run
    assert "30003" in final["EXPOSE"][-1].split()
