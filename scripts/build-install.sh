#!/usr/bin/env bash
# Builds the extension with PGXS and installs it into the PostgreSQL found by pg_config.
# Builds in one tree are serialised with a lock so parallel callers never race on objects.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
exec 8>/tmp/pg_inference-build.lock
flock 8
# The installed library is shared by every cluster on the machine: never replace it while a test
# run (which holds this lock for its whole duration) is using it.
if [ -z "${PGI_TESTS_LOCK_HELD:-}" ]; then
    exec 9>/tmp/pg_inference-tests.lock
    flock 9
fi
make -s -j2 >/tmp/pg_inference-build.log 2>&1 || { cat /tmp/pg_inference-build.log; exit 1; }
$SUDO make -s install >/dev/null
