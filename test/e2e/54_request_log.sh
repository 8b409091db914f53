#!/usr/bin/env bash
# The request log: with inference.gateway_request_log = metadata, 100,000 requests give 100,000
# rows in inference.request_log (or the dropped counter on /metrics explains each missing one);
# a row holds what the request was (key, service, route, dialect, status, latency, time to first
# token, tokens, exact cost, error type) and never a key; partitions past the retention are
# dropped; with the log off nothing is written.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/gateway.sh"

LOAD="$ROOT/build/load_client"
N="${PGI_REQUEST_LOG_REQUESTS:-100000}"
gateway_setup_services || exit 1
psql_gw >/dev/null <<SQL || exit 1
SELECT inference.register_external_service('rl-chat', 'gpt-4o-mini', '$MOCK_URL/s/rl',
                                          api_key => 'sk-test-gw-openai')
 WHERE NOT EXISTS (SELECT 1 FROM inference.services s WHERE s.name = 'rl-chat');
SELECT count(*) FROM inference.set_price('rl-chat', 1, 2);
SELECT inference.create_route('rl-route', '[{"service": "rl-chat"}]')
 WHERE NOT EXISTS (SELECT 1 FROM inference.route_store r WHERE r.name = 'rl-route');
DELETE FROM inference.access_key_store WHERE name = 'rl-key';
ALTER SYSTEM SET inference.gateway_request_log = 'metadata';
SELECT pg_reload_conf();
SQL
KEY="$(psql_gw -At -c "SELECT inference.create_access_key('rl-key')")"
wait_for_key "$KEY" || fail "the key reaches the gateway"
dropped() {
    curl -s "$GATEWAY_URL/metrics" |
        sed -nE 's/^pg_inference_gateway_request_log_rows_total\{outcome="dropped"\} ([0-9]+)$/\1/p'
}
rows() { psql_gw -At -c "SELECT count(*) FROM inference.request_log WHERE key_name = 'rl-key' $1"; }

# Every request of the load, counted after the writer has taken them all.
dropped0="$(dropped)"
printf '{"model":"rl-chat","messages":[{"role":"user","content":"one two three"}],"max_tokens":2}' \
    >"$TEST_WORK/rl-body.json"
if [ -x "$LOAD" ]; then
    out="$("$LOAD" --url "$GATEWAY_URL/v1/chat/completions" --body-file "$TEST_WORK/rl-body.json" \
        --header "Authorization: Bearer $KEY" --header "Content-Type: application/json" \
        --concurrency 32 --requests "$N" --seconds 300 --warmup-requests 0 --label request-log)"
    sent="$(echo "$out" | jget '.requests')"
    check "the load sent $N requests without an error" \
        test "$sent" -ge "$N" -a "$(echo "$out" | jget '.errors')" = 0
    # What the gateway served, as its usage ledger counts it (the load may send a few more than
    # N: the requests in flight when it reached N are answered too).
    served=0 logged=0 lost=0
    for _ in $(seq 1 150); do
        served="$(psql_gw -At -c "SELECT coalesce(sum(requests), 0) FROM inference.usage
                                   WHERE key_name = 'rl-key' AND service = 'rl-chat'")"
        logged="$(rows "AND service = 'rl-chat'")"
        lost=$(($(dropped) - dropped0))
        [ "$served" -ge "$N" ] && [ $((logged + lost)) -ge "$served" ] && break
        sleep 0.2
    done
    echo "     request log: $logged rows, $lost dropped, of $served requests served"
    check "at least $N requests served" test "$served" -ge "$N"
    check_eq "every request has its row, or is counted as dropped" "$served" $((logged + lost))
    check "no more than 1% dropped" test "$lost" -le $((N / 100))
else
    fail "build/load_client exists (cmake --build build)"
fi

# What one row holds, for a plain request, a stream, a route, a refusal.
psql_gw -q -c "DELETE FROM inference.request_log WHERE key_name = 'rl-key'" >/dev/null
chat() {
    curl -s -o /dev/null -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        -H 'x-user-id: alice' "$GATEWAY_URL/v1/chat/completions" -d "$1"
}
chat '{"model":"rl-chat","messages":[{"role":"user","content":"one two three"}],"max_tokens":2}'
chat '{"model":"rl-chat","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"one two three"}]}'
chat '{"model":"rl-route","messages":[{"role":"user","content":"one two"}]}'
chat '{"model":"rl-nope","messages":[{"role":"user","content":"x"}]}'
for _ in $(seq 1 50); do [ "$(rows "")" -ge 4 ] && break; sleep 0.1; done
check_eq "a request's row: who, what, how it went and what it cost" \
    "rl-key|alice|rl-chat||openai_chat|200|t|f|3|2|0|0.000007|USD|" \
    "$(psql_gw -At -c "SELECT key_name, end_user, service, route, dialect, status, latency_ms > 0,
                              ttft_ms IS NOT NULL, prompt_tokens, completion_tokens, cached_tokens,
                              cost, currency, error_type
                         FROM inference.request_log WHERE key_name = 'rl-key' AND route IS NULL
                          AND ttft_ms IS NULL AND status = 200")"
check_eq "a stream's row has its time to first token" "t|3|4" \
    "$(psql_gw -At -c "SELECT ttft_ms > 0 AND ttft_ms <= latency_ms, prompt_tokens, completion_tokens
                         FROM inference.request_log WHERE key_name = 'rl-key' AND ttft_ms IS NOT NULL")"
check_eq "a routed request's row names the route and the service that answered" "rl-route|rl-chat" \
    "$(psql_gw -At -c "SELECT route, service FROM inference.request_log WHERE route IS NOT NULL
                          AND key_name = 'rl-key'")"
check_eq "a refused request's row has its error type" "404|model_not_found" \
    "$(psql_gw -At -c "SELECT status, error_type FROM inference.request_log
                        WHERE key_name = 'rl-key' AND status = 404")"
check_not_contains "no row holds the key" "$KEY" \
    "$(psql_gw -At -c "SELECT r::text FROM inference.request_log r WHERE key_name = 'rl-key'")"

# Retention: a partition of a day that ended longer ago than the retention is dropped.
psql_gw -q >/dev/null <<'SQL'
SELECT inference_internal.request_log_partition((now() AT TIME ZONE 'UTC')::date - 30);
INSERT INTO inference.request_log (at, dialect, status, latency_ms, prompt_tokens,
                                   completion_tokens, cached_tokens)
VALUES (now() - interval '30 days', 'openai_chat', 200, 1, 0, 0, 0);
SQL
old="request_log_p$(psql_gw -At -c "SELECT to_char((now() AT TIME ZONE 'UTC')::date - 30, 'YYYYMMDD')")"
check_eq "an old partition exists before the retention is applied" 1 \
    "$(psql_gw -At -c "SELECT count(*) FROM pg_class WHERE relname = '$old'")"
psql_gw -q -c "ALTER SYSTEM SET inference.request_log_retention = '13d'" -c "SELECT pg_reload_conf()" >/dev/null
gone=""
for _ in $(seq 1 50); do
    [ "$(psql_gw -At -c "SELECT count(*) FROM pg_class WHERE relname = '$old'")" = 0 ] && { gone=1; break; }
    sleep 0.1
done
check "a partition past the retention is dropped (within 5 s of a reload)" test -n "$gone"
check_eq "today's and tomorrow's partitions are kept" 2 \
    "$(psql_gw -At -c "SELECT count(*) FROM pg_class WHERE relname IN (
         'request_log_p' || to_char((now() AT TIME ZONE 'UTC')::date, 'YYYYMMDD'),
         'request_log_p' || to_char((now() AT TIME ZONE 'UTC')::date + 1, 'YYYYMMDD'))")"

# Off: nothing more is written.
psql_gw -q -c "ALTER SYSTEM RESET inference.gateway_request_log" \
    -c "ALTER SYSTEM RESET inference.request_log_retention" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
before="$(rows "")"
for _ in 1 2 3; do chat '{"model":"rl-chat","messages":[{"role":"user","content":"x"}]}'; done
sleep 2.5
check_eq "with the log off, requests add no rows" "$before" "$(rows "")"

psql_gw -q -c "SELECT inference.revoke_access_key('rl-key')" >/dev/null
