#!/usr/bin/env bash
# Builds the extension with PGXS and installs it into the PostgreSQL found by pg_config.
# Builds in one tree are serialised with a lock so parallel callers never race on objects.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
exec 8>/tmp/pg_inference-build.lock
flock 8
make -s -j2 >/tmp/pg_inference-build.log 2>&1 || { cat /tmp/pg_inference-build.log; exit 1; }
$SUDO make -s install >/dev/null
