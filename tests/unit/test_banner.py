"""The start-up lines for the configurations an operator writes: wildcard and IPv6 listeners
shown as addresses a command on this host can use, HTTPS-only, no Docker Hub."""

from __future__ import annotations

from typing import Any

from edgecache import banner, config


def lines(**sections: Any) -> list[str]:
    raw = {"listen": {"http": "127.0.0.1:5000", "https": None}, **sections}
    return banner.lines(config.from_mapping(raw), 1 << 30, 10 << 30)


def test_the_embedded_defaults() -> None:
    said = banner.lines(config.load(None), 0, 1 << 30)
    assert said[0] == "data in /var/lib/edgecache (blobs/, index.db; 0 B cached)"
    assert said[1] == ("quota 1.0 GiB now (no max_size, min_free 5%; evicts from 95% down to "
                       "85% of it)")
    assert said[2:] == [
        "HTTP    http://127.0.0.1:5000",
        "HTTPS   https://127.0.0.1:30003 (every address); its CA: edgecache ca > ca.crt",
        "metrics http://127.0.0.1:9630/metrics (every address)",
        "try: skopeo inspect --tls-verify=false docker://127.0.0.1:5000/library/alpine:latest"]


def test_ipv6_and_a_fixed_cap() -> None:
    said = lines(listen={"http": "[::]:5000", "https": None},
                 metrics={"listen": "[::1]:9000"}, storage={"max_size": "20GiB"})
    assert "max_size 20.0 GiB" in said[1]
    assert "HTTP    http://[::1]:5000 (every address)" in said
    assert "metrics http://[::1]:9000/metrics" in said
    assert said[-1] == "try: skopeo inspect --tls-verify=false docker://[::1]:5000/library/alpine:latest"


def test_https_only_without_docker_hub() -> None:
    said = lines(listen={"http": None, "https": "127.0.0.1:8443"}, metrics={"listen": None},
                 upstreams={"ghcr.io": {"url": "https://ghcr.io"}}, default_upstream=None)
    assert not any(line.startswith(("HTTP ", "metrics")) for line in said)
    assert said[-1] == "try: curl -s --cacert ca.crt https://127.0.0.1:8443/v2/"


def test_docker_hub_not_the_default_is_path_prefixed() -> None:
    said = lines(default_upstream="ghcr.io", upstreams={
        "ghcr.io": {"url": "https://ghcr.io"}, "docker.io": {"url": "https://registry-1.docker.io"}})
    assert said[-1] == ("try: skopeo inspect --tls-verify=false "
                        "docker://127.0.0.1:5000/docker.io/library/alpine:latest")
