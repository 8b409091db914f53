#!/usr/bin/env bash
# The health worker reacts to events, not just its interval: each status is published as its
# own probe ends (a hung upstream holds back no other service), a new registration is checked
# within two seconds, and DROP/CREATE EXTENSION are noticed within a second or two.
#
# Runs its own cluster (a 1-hour interval, so only events make the worker probe), stopped by pid.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/cluster.sh"
source "$ROOT/test/lib/mock.sh"
source "$ROOT/test/lib/check.sh"

HE_PORT="${PGI_TEST_HE_PORT:-25447}"
HE_DIR="$TEST_WORK/he"
trap 'cluster_stop "$HE_DIR"' EXIT
port_is_free "$HE_PORT" || { fail "port $HE_PORT is free for the health events cluster"; exit 1; }

he() { cluster_psql "$HE_DIR" "$HE_PORT" -At "$@"; }
status_of() { he -c "SELECT status FROM inference.list_models() WHERE name = '$1'"; }
worker_state() { he -c "SELECT state FROM inference.health_worker_status()"; }
# until_eq SECONDS EXPECTED COMMAND...: milliseconds until COMMAND prints EXPECTED, or "timeout".
until_eq() {
    local limit_ms=$(($1 * 1000)) expected="$2" start_ns
    shift 2
    start_ns="$(date +%s%N)"
    while [ $((($(date +%s%N) - start_ns) / 1000000)) -lt "$limit_ms" ]; do
        [ "$("$@" 2>/dev/null)" = "$expected" ] && { echo $((($(date +%s%N) - start_ns) / 1000000)); return; }
        sleep 0.05
    done
    echo timeout
}
within() { [ "$2" != timeout ] && [ "$2" -le "$1" ]; } # within MS RESULT

cluster_start "$HE_DIR" "$HE_PORT" \
    "inference.database = 'postgres'" "inference.gateway_port = 0" \
    "inference.health_check_interval = '1h'" "inference.health_check_timeout = '4s'" || exit 1
he -q -c "CREATE EXTENSION pg_inference" >/dev/null || exit 1
sleep 1.5 # the first round (no services) is over

# --- a registration without a check is checked within 2 s, not at the next interval ------------
he -q -c "SELECT inference.register_external_service('he-ok', 'gpt-4o-mini', '$MOCK_URL/s/he_ok',
            api_key => 'sk-test-he', validate => false)" >/dev/null
t="$(until_eq 5 Ready status_of he-ok)"
check "a validate => false registration is health-checked within 2 s ($t ms)" within 2000 "$t"

# --- one hung upstream does not hold back another service's status ----------------------------
he -q -c "SELECT inference.register_external_service('he-hang', 'gpt-4o-mini', '$MOCK_URL/s/hang',
            api_key => 'sk-test-he', validate => false)" >/dev/null
cluster_pg_ctl "$HE_DIR" restart || exit 1
t="$(until_eq 10 Ready status_of he-ok)"
check "after a restart, a service is Ready while another probe hangs ($t ms)" within 1500 "$t"
check_eq "... and the hung one is still waiting on its probe" "Pending" "$(status_of he-hang)"
t="$(until_eq 10 Failed status_of he-hang)"
check "the hung probe fails at health_check_timeout ($t ms)" test "$t" != timeout
sleep 0.5 # the round's closing transaction follows its last probe
check_eq "both statuses are persisted at the end of the round" "Failed,Ready" \
    "$(he -c "SELECT string_agg(status, ',' ORDER BY service) FROM inference.service_status")"

# --- DROP EXTENSION and CREATE EXTENSION are noticed within a second or two -------------------
rounds_before="$(he -c "SELECT rounds FROM inference.health_worker_status()")"
he -q -c "DROP EXTENSION pg_inference" >/dev/null
sleep 2
he -q -c "CREATE EXTENSION pg_inference" >/dev/null
rounds() { he -c "SELECT rounds > $rounds_before AND state = 'sleeping' FROM inference.health_worker_status()"; }
t="$(until_eq 5 t rounds)"
check "after CREATE EXTENSION a round has run within 2 s ($t ms)" within 2000 "$t"
