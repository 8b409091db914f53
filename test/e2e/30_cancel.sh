#!/usr/bin/env bash
# statement_timeout, pg_cancel_backend and pg_terminate_backend abort an in-flight upstream
# transfer promptly with PostgreSQL's own error, and the session (or server) carries on.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/cluster.sh"
source "$ROOT/test/lib/check.sh"
DB=cancel_e2e
psql_() { cluster_psql "$PG_DIR" "$PG_PORT" -d "$DB" "$@"; }
# A session that keeps going after an error, like an application would.
psql_session() { psql -X -q -h "$PG_DIR" -p "$PG_PORT" -U postgres -d "$DB" "$@"; }
now_ms() { date +%s%3N; }

cluster_psql "$PG_DIR" "$PG_PORT" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
psql_ >/dev/null <<SQL || exit 1
CREATE EXTENSION pg_inference;
SELECT inference.register_external_service('hang', 'gpt-4o-mini', '$MOCK_URL/s/hang',
       api_key => 'sk-test-openai', validate => false);
SELECT inference.register_external_service('fine', 'gpt-4o-mini', '$MOCK_URL/s/fine',
       api_key => 'sk-test-openai');
SQL

# statement_timeout = 500ms against a hanging upstream: the error within 1 s, then a working call.
t0="$(now_ms)"
out="$(psql_session -c "SET statement_timeout = '500ms'" -c "SELECT inference.chat('hang', 'hi')" \
       -c "RESET statement_timeout" -At -c "SELECT inference.chat('fine', 'after the timeout')" 2>&1)"
t1="$(now_ms)"
check_contains "statement_timeout raises PostgreSQL's error" \
    "canceling statement due to statement timeout" "$out"
check_contains "the next call in the same session works" "echo: after the timeout" "$out"
check "the timeout fired within 1 s of 500 ms (took $((t1 - t0)) ms for both calls)" \
    test $((t1 - t0)) -lt 1500

# pg_cancel_backend from another session.
run_and_wait_active() {
    local label="$1"
    shift
    psql_session "$@" >"$TEST_WORK/$label.out" 2>&1 &
    BG=$!
    PID=""
    for _ in $(seq 1 100); do
        PID="$(psql_ -At -c "SELECT pid FROM pg_stat_activity
                            WHERE query LIKE '%inference.chat(''hang''%' AND state = 'active'
                              AND pid <> pg_backend_pid() LIMIT 1")"
        [ -n "$PID" ] && break
        sleep 0.05
    done
    sleep 0.2 # let the transfer start waiting on the socket
}

run_and_wait_active cancel -c "SELECT inference.chat('hang', 'hi')" \
    -At -c "SELECT inference.chat('fine', 'after the cancel')"
t0="$(now_ms)"
psql_ -c "SELECT pg_cancel_backend($PID)" >/dev/null
wait "$BG"
t1="$(now_ms)"
out="$(cat "$TEST_WORK/cancel.out")"
check_contains "pg_cancel_backend raises PostgreSQL's error" \
    "canceling statement due to user request" "$out"
check_contains "the session works after the cancel" "echo: after the cancel" "$out"
check "the cancel took effect within 1 s (took $((t1 - t0)) ms, second call included)" \
    test $((t1 - t0)) -lt 1000

run_and_wait_active terminate -c "SELECT inference.chat('hang', 'hi')"
t0="$(now_ms)"
psql_ -c "SELECT pg_terminate_backend($PID)" >/dev/null
wait "$BG"
t1="$(now_ms)"
check_contains "pg_terminate_backend ends the backend" \
    "terminating connection due to administrator command" "$(cat "$TEST_WORK/terminate.out")"
check "termination took effect within 1 s (took $((t1 - t0)) ms)" test $((t1 - t0)) -lt 1000
check_eq "the server is still up" "echo: still up" \
    "$(psql_ -At -c "SELECT inference.chat('fine', 'still up')")"

cluster_psql "$PG_DIR" "$PG_PORT" -c "DROP DATABASE $DB" >/dev/null
