#!/usr/bin/env bash
# A missing inference.database is logged once and waited for: after DROP DATABASE ... WITH
# (FORCE) the workers do not fail and restart every second; once the database is back (and the
# extension in it), the health worker runs again.
#
# Runs its own cluster on free ports, stopped by pid. Standalone it takes the suite's lock.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -z "${PGI_TESTS_LOCK_HELD:-}" ]; then
    exec 9>/tmp/pg_inference-tests.lock
    flock 9
    export PGI_TESTS_LOCK_HELD=1
fi
source "$ROOT/test/lib/cluster.sh"
source "$ROOT/test/lib/mock.sh"
source "$ROOT/test/lib/check.sh"
: "${TEST_WORK:=$(cluster_workdir pgi-md)}"

MD_PORT=""
for p in $(seq "${PGI_TEST_MD_PORT:-25451}" 25470); do
    port_is_free "$p" && { MD_PORT=$p; break; }
done
[ -n "$MD_PORT" ] || { fail "a free port for the missing-database cluster"; exit 1; }
MD_DIR="$TEST_WORK/md"
trap 'cluster_stop "$MD_DIR"' EXIT
LOG="$MD_DIR/server.log"

md() { cluster_psql "$MD_DIR" "$MD_PORT" -At "$@"; }
worker_state() { md -d md_db -c "SELECT state FROM inference.health_worker_status()" 2>/dev/null; }
poll_eq() { # NAME EXPECTED SECONDS COMMAND...
    local name="$1" expected="$2" deadline=$((SECONDS + $3)) got
    shift 3
    while :; do
        got="$("$@" 2>&1)"
        [ "$got" = "$expected" ] || [ $SECONDS -ge "$deadline" ] && break
        sleep 0.2
    done
    check_eq "$name" "$expected" "$got"
}

cluster_start "$MD_DIR" "$MD_PORT" "inference.database = 'md_db'" "inference.gateway_port = 0" \
    "inference.health_check_interval = '1h'" || exit 1
md -q -c "CREATE DATABASE md_db" && md -q -d md_db -c "CREATE EXTENSION pg_inference" || exit 1
poll_eq "the worker runs once the database exists" "sleeping" 10 worker_state

# The extension's workers are the health worker and the pipeline workers (no listener: the
# gateway port is 0); those that waited for the database restart to connect to it, so the test
# waits until all of them are connected. The DROP then ends each once. They restart together a
# second later, so each may fail to connect once before the first failure marks the database
# missing; after that they all wait. A restart loop would end a worker every second.
workers="$(md -c "SELECT 1 + current_setting('inference.pipeline_workers')::int")"
connected_workers() {
    md -c "SELECT count(*) FROM pg_stat_activity
           WHERE backend_type LIKE 'pg_inference%' AND datname = 'md_db'"
}
poll_eq "every worker is connected to the database" "$workers" 15 connected_workers
lines_before="$(wc -l <"$LOG")"
md -q -c "DROP DATABASE md_db WITH (FORCE)" || exit 1
sleep 4
lines_settled="$(wc -l <"$LOG")"
sleep 4
after="$(tail -n +"$((lines_before + 1))" "$LOG")"
exits="$(echo "$after" | grep -c 'exited with exit code')"
later="$(tail -n +"$((lines_settled + 1))" "$LOG" | grep -c 'exited with exit code')"
check "each worker failed to connect at most once ($exits worker exits, $workers workers)" \
    test "$exits" -le $((2 * workers))
check_eq "no restart loop while the database is missing (worker exits in the 4 s after)" "0" "$later"
check_eq "the missing database is logged once" "1" \
    "$(echo "$after" | grep -c 'pg_inference: database "md_db" does not exist; waiting for it')"
check_contains "with a hint" "HINT:  Create the database, or set inference.database" "$after"
check_eq "the waiting worker is connected to no database" "1" \
    "$(md -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_inference health worker'
                AND coalesce(datid, 0) = 0")"

md -q -c "CREATE DATABASE md_db" && md -q -d md_db -c "CREATE EXTENSION pg_inference" || exit 1
poll_eq "the health worker runs again once the database is back" "sleeping" 10 worker_state
check_eq "the missing database was still logged once" "1" \
    "$(tail -n +"$((lines_before + 1))" "$LOG" | grep -c 'does not exist; waiting for it')"
