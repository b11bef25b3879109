#!/usr/bin/env bash
# Install what `make bench` needs, when missing: docker-registry (the upstream and Distribution's
# proxy), wrk (load), nginx (the ceiling), openssl and curl (certificates, readiness).
set -euo pipefail
need=()
for pair in docker-registry:docker-registry wrk:wrk nginx:nginx openssl:openssl curl:curl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing: ${need[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to apt-get install ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${need[@]}"
