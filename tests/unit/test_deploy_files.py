"""The shipped deployment files: the systemd unit, the Containerfile, the image's config and the
Kubernetes manifests. Each is parsed (not grepped for a substring) and checked against what
edgecache itself accepts: configs go through `edgecache check-config`, the unit through
`systemd-analyze verify`, every Kubernetes manifest through the Kubernetes API schemas
(`kubernetes-validate`, which ships them: no cluster, no network)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from edgecache import cli
from edgecache.config import load, parse_hostport
from tests.support.kubernetes import (
    SITE_MOUNT,
    SITE_SECRET,
    UID,
    configmap_config_doc,
    kube,
    kube_docs,
    local_config,
    write_site_secret,
)

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "edgecache.service"
CONTAINERFILE = ROOT / "images" / "Containerfile"
IMAGE_CONFIG = ROOT / "images" / "config.yaml"
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


def configmap_config(tmp_path: Path) -> Path:
    """The ConfigMap's config as is, but for the Secret's mount: its files are made under
    tmp_path (a site CA and a cluster secret) and the paths mapped there."""
    original = configmap_config_doc()
    write_site_secret(tmp_path / "site")
    config = local_config({SITE_MOUNT: str(tmp_path / "site")}, original["listen"]["https"],
                          original["metrics"]["listen"], keep_cluster=True)
    config["upstreams"] = original["upstreams"]
    path = tmp_path / "configmap-config.yaml"
    path.write_text(yaml.safe_dump(config))
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
    assert config.tls.ca_cert_file == str(tmp_path / "site" / "ca.crt")  # the site CA


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


def test_each_node_serves_30003_itself_and_no_nodeport_claims_it(tmp_path: Path) -> None:
    """hostNetwork: containerd reaches its own node's edgecache on 127.0.0.1:30003 and other
    hosts reach any node on 30003 (Harbor's NodePort); a NodePort on the same port would be
    held open by kube-proxy before 1.24 and edgecache's bind would fail."""
    pod = kube("DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"  # cluster.dns is a cluster name
    config = load(str(configmap_config(tmp_path)))
    assert config.listen.https == "0.0.0.0:30003"
    for doc in kube_docs():
        if doc["kind"] == "Service":
            assert doc["spec"].get("type", "ClusterIP") != "NodePort", doc["metadata"]
    client_config = container_named("client-config")
    args = client_config["args"]
    assert args[args.index("--address") + 1] == "127.0.0.1:30003"


def test_the_headless_service_is_cluster_dns() -> None:
    service = kube("Service")
    assert service["spec"]["clusterIP"] == "None"
    namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
    dns = configmap_config_doc()["cluster"]["dns"]
    assert dns in (f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}.svc")
    https = [p for p in service["spec"]["ports"] if p["name"] == "https"]
    assert len(https) == 1 and https[0]["port"] == 30003
    daemonset = kube("DaemonSet")
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    pod_annotations = daemonset["spec"]["template"]["metadata"]["annotations"]
    assert pod_annotations["prometheus.io/scrape"] == "true"
    assert pod_annotations["prometheus.io/port"].isdigit()
    assert pod_annotations["prometheus.io/path"] == "/metrics"
    assert service["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def container_named(name: str) -> dict[str, Any]:
    pod = kube("DaemonSet")["spec"]["template"]["spec"]
    found = [c for c in [*pod.get("initContainers", []), *pod["containers"]]
             if c["name"] == name]
    assert len(found) == 1, name
    return found[0]


def test_storage_is_prepared_as_root_with_two_capabilities_then_served_as_10001() -> None:
    """The kubelet makes a missing hostPath root:root 0755 and fsGroup does not apply to it:
    an init container hands it to 10001 before edgecache (10001) starts. It is the first init
    container, it mounts the very volume, and it runs as root with CHOWN and FOWNER only."""
    pod = kube("DaemonSet")["spec"]["template"]["spec"]
    prepare = pod["initContainers"][0]
    assert prepare["name"] == "prepare-storage"
    mounts = {m["mountPath"]: m["name"] for m in prepare["volumeMounts"]}
    main = {m["mountPath"]: m["name"] for m in daemonset_container(kube("DaemonSet"))[
        "volumeMounts"]}
    assert mounts["/var/lib/edgecache"] == main["/var/lib/edgecache"]
    assert "/var/lib/edgecache" in prepare["command"] and f"{UID}" in prepare["command"]
    context = prepare["securityContext"]
    assert context["runAsUser"] == 0 and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]}
    assert pod["securityContext"]["runAsUser"] == UID
    assert "runAsUser" not in daemonset_container(kube("DaemonSet"))["securityContext"]


def test_the_secret_holds_the_files_the_config_names_where_they_are_mounted() -> None:
    config = configmap_config_doc()
    named = {config["tls"]["ca_cert_file"], config["tls"]["ca_key_file"],
             config["cluster"]["secret_file"]}
    pod = kube("DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for name in ("edgecache", "client-config"):  # every container that reads the config
        mounts = {m["mountPath"]: m["name"] for m in container_named(name)["volumeMounts"]}
        secret = volumes[mounts[SITE_MOUNT]]["secret"]
        assert secret["secretName"] == "edgecache-site"
    example = kube_docs(SITE_SECRET)[0]
    assert example["kind"] == "Secret" and example["metadata"]["name"] == "edgecache-site"
    assert {f"{SITE_MOUNT}/{key}" for key in example["stringData"]} == named


def mebibytes(quantity: str) -> int:
    assert quantity.endswith("Mi") and quantity[:-2].isdigit(), quantity
    return int(quantity[:-2])


def test_memory_is_sized_from_the_benchmark() -> None:
    """NOTES.md: 55-65 MiB peak over HTTPS at 64 concurrent downloads: the request is the 64 MiB
    goal; the limit leaves room for a child (certificate issue, eviction) in the same cgroup."""
    resources = daemonset_container(kube("DaemonSet"))["resources"]
    request, limit = (mebibytes(resources[k]["memory"]) for k in ("requests", "limits"))
    assert request == 64
    assert 64 + 33 <= limit <= 4 * request
    assert "cpu" not in resources["limits"]  # throttling stalls the event loop mid-transfer


# ---- Kubernetes schemas --------------------------------------------------------------------


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object in a YAML file under images/ (the Prometheus rules and the
    Grafana dashboard are not Kubernetes objects; every file under images/kubernetes/ is)."""
    found = []
    for path in sorted((ROOT / "images").rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                found.append((path, doc))
            else:
                assert "kubernetes" not in path.parts, f"{path}: not a Kubernetes object"
    return found


def test_every_manifest_passes_the_kubernetes_schemas() -> None:
    found = manifests()
    kinds = {doc["kind"] for _, doc in found}
    assert {"Namespace", "ConfigMap", "DaemonSet", "Service", "Secret"} <= kinds
    for path, doc in found:
        # strict: a misspelt field is an error, not silently dropped as kubectl would
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
        assert path.is_file()


def test_the_schema_check_can_fail() -> None:
    daemonset = kube("DaemonSet")
    daemonset["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, kubernetes_validate.latest_version(),
                                     strict=True)
    probe = kube("DaemonSet")
    probe["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(probe, kubernetes_validate.latest_version(), strict=True)


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
