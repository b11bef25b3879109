#!/usr/bin/env bash
# Install what `make bench` runs beside edgecache, when missing: the upstream and reference
# proxy (docker-registry), the ceiling (nginx), the load generator (wrk), openssl and curl.
set -euo pipefail
exec "$(dirname "$0")/install-system-deps.sh" docker-registry:docker-registry wrk:wrk \
  nginx:nginx openssl:openssl curl:curl
