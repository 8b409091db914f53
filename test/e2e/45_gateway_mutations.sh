#!/usr/bin/env bash
# Mutated requests against every route of the gateway for PGI_MUTATE_SECONDS (default 60) on a
# throwaway cluster of its own: the chat completions (OpenAI, Anthropic and Gemini services,
# streamed and not), embeddings, rerank and ranking, the model list and lookups, /health,
# /metrics, unknown paths, and pass-through for each protocol the mock upstream serves.
# test/e2e/node/mutate_gateway.mjs mutates valid bodies structurally and byte-wise and the
# requests themselves (methods, paths, headers, framing), 8 in flight, over raw sockets.
#
# Passes when every answer is a complete 2xx or 4xx (or 502/504, an upstream's failure) with a
# JSON error body, without a reset; the listeners and the postmaster are the same processes
# after the run; the server log has nothing above LOG; and a normal request is still served.
# The seed is printed; PGI_MUTATE_SEED=N replays a run.
#
# In the suite (test/run-tests.sh) it shares the suite's mock upstream and lock; run alone
# (after `bash scripts/build-install.sh`) it takes the machine lock and starts its own mock.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/mock.sh"
source "$ROOT/test/lib/gateway.sh"

source "$ROOT/test/lib/standalone.sh"
standalone_lock

standalone_workdir mutations
MW="$WORKDIR"


OWN_MOCK=0
cleanup() {
    [ -n "${PG_DIR:-}" ] && cluster_stop "$PG_DIR"
    [ "$OWN_MOCK" = 1 ] && mock_stop
    [ -z "${TEST_WORK:-}" ] && [ "${PGI_KEEP:-0}" != 1 ] && rm -rf "$MW"
    return 0
}
trap cleanup EXIT

standalone_mock "$MW"

PG_PORT="$(pick_port)" && GW_PORT="$(pick_port "$PG_PORT")" || { fail "mutations: free ports"; exit 0; }
PG_DIR="$MW/pg"
GATEWAY_URL="http://127.0.0.1:$GW_PORT"
SERVER_LOG="$PG_DIR/server.log"
cluster_start "$PG_DIR" "$PG_PORT" \
    "pgi_test.mock = '$MOCK_URL'" \
    "inference.health_check_timeout = '3s'" \
    "inference.gateway_port = $GW_PORT" "inference.gateway_workers = 2" \
    "inference.gateway_client_timeout = '10s'" || { fail "mutations: the cluster starts"; exit 0; }
echo "   cluster on port $PG_PORT, gateway on $GW_PORT, mock $MOCK_URL"

listener_pids() {
    psql_gw -At -c "SELECT string_agg(pid::text, ' ' ORDER BY pid) FROM pg_stat_activity
                    WHERE backend_type = 'pg_inference gateway'"
}

gateway_setup_services || { fail "mutations: the services register"; exit 0; }
KEY="$(psql_gw -At -c "SELECT inference.create_access_key('mutations')")"
wait_for_key "$KEY" || { fail "mutations: the key reaches the gateway"; exit 0; }
PIDS_BEFORE="$(listener_pids)"
PM_BEFORE="$(cluster_pid "$PG_DIR")"

SECONDS_RUN="${PGI_MUTATE_SECONDS:-60}"
timeout $((SECONDS_RUN + 120)) node "$ROOT/test/e2e/node/mutate_gateway.mjs" --port "$GW_PORT" \
    --key "$KEY" --seconds "$SECONDS_RUN" --concurrency 8 >"$MW/mutate.out" 2>"$MW/mutate.err"
echo "   node exited with $?"
grep -v '^{' "$MW/mutate.out" | sed 's/^/   /'
head -c 2000 "$MW/mutate.err"
SUMMARY="$(grep '^{' "$MW/mutate.out" | tail -1)"
[ -n "$SUMMARY" ] || SUMMARY='{}'
sent="$(echo "$SUMMARY" | jget '.sent')"
echo "   sent $sent requests; by status: $(echo "$SUMMARY" | jget '.by_status')"

check "mutations: the run sent requests for ${SECONDS_RUN} s (${sent})" test "${sent:-0}" -gt 200 2>/dev/null
check_eq "mutations: no answer outside 2xx/4xx/502/504, no reset, JSON error bodies" "0" \
    "$(echo "$SUMMARY" | jget '.violations')"
missing="$(echo "$SUMMARY" | jget '.routes.filter(r=>!(r in JSON.parse(d).by_route)).join(", ")')"
check_eq "mutations: every route was tried" "" "$missing"
unserved="$(echo "$SUMMARY" | jget '.routes.filter(r=>r!=="unknown path"&&!Object.keys(JSON.parse(d).by_route[r]||{}).some(s=>s.startsWith("2"))).join(", ")')"
check_eq "mutations: every route answered 2xx at least once" "" "$unserved"
check_eq "mutations: no 5xx other than 502/504" "" \
    "$(echo "$SUMMARY" | jget '.by_status && Object.keys(JSON.parse(d).by_status).filter(s=>s[0]==="5"&&s!=="502"&&s!=="504").join(",")')"

# The same processes after the run: no listener crashed and was restarted, no server reset.
check_eq "mutations: the listeners are the same processes" "$PIDS_BEFORE" "$(listener_pids)"
check_eq "mutations: the postmaster is the same" "$PM_BEFORE" "$(cluster_pid "$PG_DIR")"
out="$(curl -s -m 10 -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        "$GATEWAY_URL/v1/chat/completions" \
        -d '{"model": "gw-claude", "messages": [{"role": "user", "content": "after the mutations"}]}')"
check_contains "mutations: a normal request is served afterwards" "echo: after the mutations" "$out"
check_eq "mutations: /health answers afterwards" '{"status":"ok"}' "$(curl -s -m 5 "$GATEWAY_URL/health")"

bad="$(grep -E '(WARNING|ERROR|FATAL|PANIC):|terminated by signal|was terminated' "$SERVER_LOG" | head -20)"
check_eq "mutations: the server log has nothing above LOG" "" "$bad"

psql_gw -c "SELECT inference.revoke_access_key('mutations')" >/dev/null
standalone_summary
exit 0
