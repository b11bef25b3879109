#!/usr/bin/env bash
# Install the real components the tests run against, when they are missing:
# Debian's docker-registry (the upstream), skopeo, containerd, docker.io (dockerd and its CLI)
# and podman (the clients), prometheus (for promtool, which checks the alert rules) and chromium
# (the status page's browser test).
set -euo pipefail
need=()
# Arguments, if any, replace the default list: COMMAND:PACKAGE pairs (bench-deps uses this).
pairs=("$@")
[ ${#pairs[@]} -eq 0 ] && pairs=(docker-registry:docker-registry skopeo:skopeo
  containerd:containerd ctr:containerd dockerd:docker.io podman:podman promtool:prometheus
  chromium:chromium)
for pair in "${pairs[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
[ ${#need[@]} -eq 0 ] && exit 0
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
echo "installing: ${need[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to apt-get install ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${need[@]}"
