#!/usr/bin/env bash
# The health-check worker: Pending after a restart, a reloaded interval applied
# without restart, every diagnosis at the next tick and Ready again once the upstream
# recovers, SIGTERM at once in the middle of a probe, restarts after pg_terminate_backend and
# kill -9, DROP DATABASE not blocked, DROP/CREATE EXTENSION under a running worker, a hot standby
# that checks on its own, and Unknown without shared_preload_libraries.
#
# Runs its own clusters (the suite's cluster keeps its 5-minute interval), all stopped by pid.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/cluster.sh"
source "$ROOT/test/lib/mock.sh"
source "$ROOT/test/lib/check.sh"

HW_PORT="${PGI_TEST_HW_PORT:-25441}"
HW_DIR="$TEST_WORK/hw"
SB_DIR="$TEST_WORK/hw_standby" SB_PORT=$((HW_PORT + 1))
NP_DIR="$TEST_WORK/hw_nopreload" NP_PORT=$((HW_PORT + 2))
TLS_URL="https://127.0.0.1:${MOCK_TLS_PORT:-18182}"
LABELS="hw_ok hw_401 hw_claude_401 hw_gemini_401 hw_403 hw_404 hw_quota hw_429 hw_503 hw_500 hw_hang"

scenario() { # LABEL SCENARIO|null
    local s="null"
    [ "$2" != null ] && s="\"$2\""
    curl -s -o /dev/null -X POST "$MOCK_URL/_mock/scenario" -H 'content-type: application/json' \
        -d "{\"label\": \"$1\", \"scenario\": $s, \"arg\": ${3:-null}}"
}
cleanup() {
    cluster_stop "$SB_DIR"
    cluster_stop "$NP_DIR"
    cluster_stop "$HW_DIR"
    for l in $LABELS; do scenario "$l" null; done
}
trap cleanup EXIT

for p in $HW_PORT $SB_PORT $NP_PORT; do
    port_is_free "$p" || { fail "port $p is free for the health worker clusters"; exit 1; }
done

hw() { cluster_psql "$HW_DIR" "$HW_PORT" -At "$@"; }
sb() { cluster_psql "$SB_DIR" "$SB_PORT" -At "$@"; }
status_of() { # SERVICE: "Status: message" as list_models shows it
    hw -c "SELECT status || ': ' || coalesce(status_message, '')
             FROM inference.list_models() WHERE name = '$1'"
}
worker_pid() {
    hw -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_inference health worker'"
}
reload() { hw -c "ALTER SYSTEM SET inference.$1 = '$2'" -c "SELECT pg_reload_conf()" >/dev/null; }

# poll_eq NAME EXPECTED SECONDS COMMAND...: re-runs COMMAND until it prints EXPECTED (bounded).
poll_eq() {
    local name="$1" expected="$2" deadline=$((SECONDS + $3)) got
    shift 3
    while :; do
        got="$("$@" 2>&1)"
        [ "$got" = "$expected" ] || [ $SECONDS -ge "$deadline" ] && break
        sleep 0.2
    done
    check_eq "$name" "$expected" "$got"
}
# poll_match NAME GLOB SECONDS COMMAND...: the same with a shell pattern.
poll_match() {
    local name="$1" pattern="$2" deadline=$((SECONDS + $3)) got
    shift 3
    while :; do
        got="$("$@" 2>&1)"
        # shellcheck disable=SC2053 # a pattern on purpose
        [[ "$got" == $pattern ]] || [ $SECONDS -ge "$deadline" ] && break
        sleep 0.2
    done
    # shellcheck disable=SC2053
    if [[ "$got" == $pattern ]]; then pass "$name"; else fail "$name" "expected [$pattern], got [$got]"; fi
}
# A pid that differs from $1 and is not empty.
new_pid() {
    local p
    p="$(worker_pid 2>/dev/null)"
    [ -n "$p" ] && [ "$p" != "$1" ] && echo new || echo "same: [$p]"
}

# --- a cluster with services in every failure mode ---------------------------------------------
# The key of hw-env lives in the environment of the first server start only, so after the
# restart it cannot be read.
PGI_HW_KEY=sk-test-hw-env cluster_start "$HW_DIR" "$HW_PORT" \
    "inference.database = 'postgres'" \
    "inference.health_check_interval = '1h'" \
    "inference.health_check_timeout = '2s'" || exit 1
hw -q <<SQL >/dev/null || exit 1
CREATE EXTENSION pg_inference;
SELECT inference.register_external_service('hw-ok', 'gpt-4o-mini', '$MOCK_URL/s/hw_ok', api_key => 'sk-test-hw', validate => false);
SELECT inference.register_external_service('hw-401', 'gpt-4o-mini', '$MOCK_URL/s/hw_401', api_key => 'sk-test-hw', validate => false);
SELECT inference.register_external_service('hw-claude-401', 'claude-haiku-4-5', '$MOCK_URL/s/hw_claude_401', api_key => 'sk-test-hw', protocol => 'ANTHROPIC_V1', validate => false);
SELECT inference.register_external_service('hw-gemini-401', 'gemini-2.0-flash', '$MOCK_URL/s/hw_gemini_401', api_key => 'sk-test-hw', protocol => 'GEMINI_V1_BETA', validate => false);
SELECT inference.register_external_service('hw-403', 'gpt-4o-mini', '$MOCK_URL/s/hw_403', api_key => 'sk-test-hw', validate => false);
SELECT inference.register_external_service('hw-404', 'gpt-4o-mini', '$MOCK_URL/s/hw_404', api_key => 'sk-test-hw', validate => false);
SELECT inference.register_external_service('hw-quota', 'gpt-4o-mini', '$MOCK_URL/s/hw_quota', api_key => 'sk-test-hw', validate => false);
SELECT inference.register_external_service('hw-429', 'gpt-4o-mini', '$MOCK_URL/s/hw_429', api_key => 'sk-test-hw', validate => false);
SELECT inference.register_external_service('hw-503', 'gpt-4o-mini', '$MOCK_URL/s/hw_503', api_key => 'sk-test-hw', validate => false);
SELECT inference.register_external_service('hw-500', 'gpt-4o-mini', '$MOCK_URL/s/hw_500', api_key => 'sk-test-hw', validate => false);
SELECT inference.register_external_service('hw-hang', 'gpt-4o-mini', '$MOCK_URL/s/hw_hang', api_key => 'sk-test-hw', validate => false);
SELECT inference.register_external_service('hw-tls', 'gpt-4o-mini', '$TLS_URL/s/hw_tls', api_key => 'sk-test-hw', validate => false);
SELECT inference.register_external_service('hw-env', 'gpt-4o-mini', '$MOCK_URL/s/hw_env', api_key => 'env:PGI_HW_KEY', validate => false);
SQL

# --- Pending after a restart, then Ready from the round that runs at start ---------------------
# A slow upstream keeps the first round going long enough to look at the statuses before it ends.
scenario hw_ok slow 1500
cluster_pg_ctl "$HW_DIR" restart || exit 1
check_eq "Pending right after a restart" \
    "Pending: Remote connection check is pending — upstream has not yet been verified" \
    "$(status_of hw-ok)"
poll_eq "the round at start makes it Ready" "Ready: " 15 status_of hw-ok
check_eq "a key that cannot be read fails that service alone" \
    "Failed: API key unavailable: environment variable \"PGI_HW_KEY\" is not set in the server's environment" \
    "$(status_of hw-env)"
check_eq "TLS verification failure, with the allow_insecure hint" \
    "Failed: endpoint unreachable: SSL certificate problem: self-signed certificate. A private-CA or self-signed endpoint needs ca_file => the CA's PEM file (a superuser sets it), or allow_insecure => true. An endpoint that asks for a client certificate needs client_cert_file and client_key_file." \
    "$(status_of hw-tls)"
check_eq "results are persisted too" "Ready" \
    "$(hw -c "SELECT status FROM inference.service_status WHERE service = 'hw-ok'")"

# --- the interval: nothing changes within an hour; a reload to 1 s applies without restart -----
scenario hw_ok bad_key
sleep 3
check_eq "no new round before the interval" "Ready: " "$(status_of hw-ok)"
pid_before_reload="$(worker_pid)"
reload health_check_interval 1s
poll_eq "a reloaded interval applies without restart" \
    "Failed: API key is missing or invalid (status 401 from $MOCK_URL/s/hw_ok/v1/models/gpt-4o-mini)" \
    15 status_of hw-ok
check_eq "the reload did not restart the worker" "$pid_before_reload" "$(worker_pid)"
scenario hw_ok null

# --- every probe diagnosis at the next tick, and Ready again after recovery -------------
scenario hw_401 bad_key
scenario hw_claude_401 bad_key
scenario hw_gemini_401 bad_key
scenario hw_403 forbidden
scenario hw_404 not_found
scenario hw_quota quota
scenario hw_429 rate_limited
scenario hw_503 unavailable
scenario hw_500 server_error
scenario hw_hang hang
u() { echo "$MOCK_URL/s/$1/v1/models/gpt-4o-mini"; }
poll_eq "401" "Failed: API key is missing or invalid (status 401 from $(u hw_401))" 15 status_of hw-401
poll_eq "401 from ANTHROPIC_V1" \
    "Failed: API key is missing/invalid or account credits are exhausted (status 401 from $MOCK_URL/s/hw_claude_401/v1/models/claude-haiku-4-5)" \
    15 status_of hw-claude-401
poll_eq "Gemini's 400 API_KEY_INVALID" \
    "Failed: API key is missing or invalid (status 400 from $MOCK_URL/s/hw_gemini_401/v1beta/models/gemini-2.0-flash)" \
    15 status_of hw-gemini-401
poll_eq "403" "Failed: API key lacks permission for this endpoint (status 403 from $(u hw_403))" 15 status_of hw-403
poll_eq "404" "Failed: endpoint not found — check the base URL and model name (status 404 from $(u hw_404))" 15 status_of hw-404
poll_eq "429 insufficient_quota" "Failed: account quota exhausted — check billing and credits" 15 status_of hw-quota
poll_eq "other 429" "Failed: rate limited by upstream" 15 status_of hw-429
poll_eq "503" "Failed: upstream is temporarily unavailable (status 503 from $(u hw_503))" 15 status_of hw-503
poll_eq "500" "Failed: upstream server error (status 500 from $(u hw_500))" 15 status_of hw-500
poll_match "a hung upstream times out after inference.health_check_timeout" \
    "Failed: endpoint unreachable: Operation timed out after 2* milliseconds*" 15 status_of hw-hang
check_eq "the persisted status matches" \
    "Failed|API key lacks permission for this endpoint (status 403 from $(u hw_403))" \
    "$(hw -c "SELECT status, status_message FROM inference.service_status WHERE service = 'hw-403'")"
for l in $LABELS; do scenario "$l" null; done
for s in hw-401 hw-claude-401 hw-gemini-401 hw-403 hw-404 hw-quota hw-429 hw-503 hw-500 hw-hang; do
    poll_eq "$s is Ready again once the upstream recovers" "Ready: " 15 status_of "$s"
done
# Every service can be Ready while the last finished round still counts one that recovered
# during it (statuses change probe by probe, the round's numbers when it ends): wait for a round
# that began after the recoveries.
round_report() {
    hw -c "SELECT pid, database, last_round_services, last_round_failed
             FROM inference.health_worker_status() WHERE rounds > 1 AND last_error IS NULL"
}
poll_eq "the worker reports on its rounds" "$(worker_pid)|postgres|13|2" 15 round_report

# --- a failed round is logged and the same worker goes on with the next one --------------------
# Cancelled inside its transaction (waiting on a lock), then outside (waiting on the network).
last_error() { hw -c "SELECT coalesce(last_error, '(none)') FROM inference.health_worker_status()"; }
probing() {
    hw -c "SELECT state FROM pg_stat_activity WHERE backend_type = 'pg_inference health worker'
             AND query LIKE '%probing'"
}
pid_before_cancel="$(worker_pid)"
cluster_psql "$HW_DIR" "$HW_PORT" -c "BEGIN" -c "LOCK TABLE inference.services" \
    -c "SELECT pg_sleep(4)" -c "COMMIT" >/dev/null 2>&1 &
locker=$!
poll_eq "a round waits on a lock inside its transaction" "Lock" 15 \
    hw -c "SELECT wait_event_type FROM pg_stat_activity
            WHERE backend_type = 'pg_inference health worker'"
poll_eq "a lock held too long fails the round after the worker's lock_timeout" \
    "canceling statement due to lock timeout" 15 last_error
wait "$locker"
poll_eq "the next round succeeds" "(none)" 15 last_error
warnings_before="$(grep -c 'health check failed' "$HW_DIR/server.log")"
scenario hw_hang hang
reload health_check_timeout 60s
sleep 3 # the round under way when the reload came ends within its 2 s timeout
poll_eq "a round is waiting on a hung upstream" "active" 15 probing
hw -c "SELECT pg_cancel_backend($pid_before_cancel)" >/dev/null
poll_eq "a round cancelled while it waits on the network is reported" \
    "canceling statement due to user request" 15 last_error
check_eq "the failed rounds did not restart the worker" "$pid_before_cancel" "$(worker_pid)"
check_eq "each failed round logged one warning" "$((warnings_before + 1))" \
    "$(grep -c 'health check failed' "$HW_DIR/server.log")"

# --- SIGTERM stops it at once, even in the middle of a probe; it comes back and keeps checking --
poll_eq "a new round waits on the hung upstream" "active" 15 probing
sleep 0.5
old_pid="$(worker_pid)"
start_ns="$(date +%s%N)"
hw -c "SELECT pg_terminate_backend($old_pid)" >/dev/null
while kill -0 "$old_pid" 2>/dev/null && [ $(($(date +%s%N) - start_ns)) -lt 10000000000 ]; do
    sleep 0.01
done
stop_ms=$((($(date +%s%N) - start_ns) / 1000000))
check "SIGTERM in the middle of a probe stops the worker at once (${stop_ms} ms)" \
    test "$stop_ms" -lt 1000
scenario hw_hang null
reload health_check_timeout 2s
poll_eq "pg_terminate_backend: the postmaster starts a new worker" "new" 15 new_pid "$old_pid"
scenario hw_ok forbidden
poll_eq "the new worker keeps checking" \
    "Failed: API key lacks permission for this endpoint (status 403 from $(u hw_ok))" 15 status_of hw-ok
scenario hw_ok null
poll_eq "... and sees the recovery" "Ready: " 15 status_of hw-ok

# --- DROP DATABASE of another database does not wait on the worker ----------------------------
# Once while rounds wait on a hung upstream (curl's wait hook), once while the worker sleeps on
# its latch: both must absorb the ProcSignalBarrier that DROP DATABASE waits for.
hw -c "CREATE DATABASE hw_other1" -c "CREATE DATABASE hw_other2" >/dev/null
scenario hw_hang hang
sleep 1.5
check "DROP DATABASE while a round waits on the network" \
    timeout 20 psql -X -q -h "$HW_DIR" -p "$HW_PORT" -U postgres -c "DROP DATABASE hw_other1"
scenario hw_hang null
reload health_check_interval 1h
sleep 1.5
check "DROP DATABASE while the worker sleeps" \
    timeout 20 psql -X -q -h "$HW_DIR" -p "$HW_PORT" -U postgres -c "DROP DATABASE hw_other2"
reload health_check_interval 1s

# --- kill -9: crash recovery, a new worker, statuses back to Ready -----------------------------
old_pid="$(worker_pid)"
kill -KILL "$old_pid"
poll_eq "kill -9: the postmaster recovers and starts a new worker" "new" 30 new_pid "$old_pid"
poll_eq "statuses come back to Ready after the crash" "Ready: " 15 status_of hw-ok
check_contains "the crash went through crash recovery" "terminated by signal 9" \
    "$(grep 'pg_inference health worker' "$HW_DIR/server.log" | tail -5)"

# --- DROP EXTENSION and CREATE EXTENSION under a running worker --------------------------------
pid_before_drop="$(worker_pid)"
warnings_before="$(grep -c 'health check failed' "$HW_DIR/server.log")"
hw -c "DROP EXTENSION pg_inference" >/dev/null
sleep 2.5
check_eq "the worker outlives DROP EXTENSION" "$pid_before_drop" "$(worker_pid)"
hw -q <<SQL >/dev/null
CREATE EXTENSION pg_inference;
SELECT inference.register_external_service('hw-again', 'gpt-4o-mini', '$MOCK_URL/s/hw_ok', api_key => 'sk-test-hw', validate => false);
SQL
poll_eq "checks resume after CREATE EXTENSION" "Ready: " 15 status_of hw-again
check_eq "the worker outlives CREATE EXTENSION" "$pid_before_drop" "$(worker_pid)"
# A round that starts while DROP EXTENSION's transaction is open finds the extension, then waits
# on its tables until the drop commits. Holding the drop open for most of each 1 s interval,
# four times, makes rounds meet it.
for i in 1 2 3 4; do
    hw -q <<SQL >/dev/null
BEGIN;
DROP EXTENSION pg_inference;
SELECT pg_sleep(0.7);
COMMIT;
CREATE EXTENSION pg_inference;
SELECT inference.register_external_service('hw-again', 'gpt-4o-mini', '$MOCK_URL/s/hw_ok', api_key => 'sk-test-hw', validate => false);
SQL
    sleep 0.2
done
poll_eq "checks resume after drops that rounds waited on" "Ready: " 15 status_of hw-again
check_eq "no failed round around DROP/CREATE EXTENSION" "$warnings_before" \
    "$(grep -c 'health check failed' "$HW_DIR/server.log")"

# --- a hot standby checks on its own, into its own shared memory -------------------------------
mkdir -p "$SB_DIR" && chown postgres: "$SB_DIR" 2>/dev/null
if as_pg "$PG_BINDIR/pg_basebackup" -h "$HW_DIR" -p "$HW_PORT" -U postgres -D "$SB_DIR/data" -R -X stream \
    >"$SB_DIR/basebackup.log" 2>&1; then
    printf "port = %s\nunix_socket_directories = '%s'\n" "$SB_PORT" "$SB_DIR" |
        as_pg tee -a "$SB_DIR/data/postgresql.conf" >/dev/null
    cluster_pg_ctl "$SB_DIR" start
    check_eq "the standby is in recovery" "t" "$(sb -c "SELECT pg_is_in_recovery()")"
    poll_eq "the standby's worker makes its statuses Ready" "Ready" 15 \
        sb -c "SELECT status FROM inference.list_models() WHERE name = 'hw-again'"
    check_eq "check_service works on a standby (shared memory only)" "Ready" \
        "$(sb -c "SELECT status FROM inference.check_service('hw-again')" 2>&1)"
    check_eq "no failed round on the standby" "0" \
        "$(grep -c 'health check failed' "$SB_DIR/server.log")"
    cluster_stop "$SB_DIR"
else
    fail "pg_basebackup of the health-check cluster" "$(tail -3 "$SB_DIR/basebackup.log")"
fi

# --- without shared_preload_libraries there is no worker, and statuses are Unknown -------------
cluster_start "$NP_DIR" "$NP_PORT" "shared_preload_libraries = ''" || exit 1
np() { cluster_psql "$NP_DIR" "$NP_PORT" -At "$@"; }
np -q -c "CREATE EXTENSION pg_inference" \
    -c "SELECT inference.register_external_service('np-ok', 'gpt-4o-mini', '$MOCK_URL/s/hw_ok', api_key => 'sk-test-hw')" \
    >/dev/null
check_eq "Unknown without shared_preload_libraries" \
    "Unknown: health checks are off: pg_inference is not in shared_preload_libraries" \
    "$(np -c "SELECT status || ': ' || status_message FROM inference.list_models()")"
check_eq "no worker without shared_preload_libraries" "0|off||" \
    "$(np -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_inference health worker'")|$(np -c "SELECT state, pid, database FROM inference.health_worker_status()")"
cluster_stop "$NP_DIR"

check_eq "no key in the health worker cluster's log" "0" "$(grep -c 'sk-test' "$HW_DIR/server.log")"
