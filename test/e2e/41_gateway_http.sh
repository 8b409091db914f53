#!/usr/bin/env bash
# The gateway with curl: pass-through (streamed), rerank in both shapes, bad input, access keys
# (401, 403, expiry) and how fast key changes reach the listeners.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/gateway.sh"

gateway_setup_services || exit 1
psql_gw -c "SELECT inference.register_external_service('gw-broken-stream', 'gpt-4o-mini',
              '$MOCK_URL/s/stream_error', api_key => 'sk-test-gw-openai')
             WHERE NOT EXISTS (SELECT 1 FROM inference.services WHERE name = 'gw-broken-stream')" >/dev/null
KEY="$(psql_gw -At -c "SELECT inference.create_access_key('http-tests')")"
wait_for_key "$KEY" || fail "the key reaches the gateway"
AUTH=(-H "Authorization: Bearer $KEY")
JSON=(-H "Content-Type: application/json")

# --- pass-through --------------------------------------------------------------------------
out="$(curl -s "${AUTH[@]}" "$GATEWAY_URL/inferenceservices/gw-openai/v1/models")"
check_contains "pass-through reaches base_url/{path}" '"gpt-4o-mini"' "$out"
check_not_contains "pass-through answer holds no upstream key" "sk-test-gw" "$out"
seen="$(mock_last gwoa)"
check_eq "pass-through forwards the path" "/v1/models" "$(echo "$seen" | jget .route_path)"
check_eq "pass-through injects the service's key" "Bearer sk-test-gw-openai" "$(echo "$seen" | jget '.headers.authorization')"
check_not_contains "pass-through never forwards the caller's key" "$KEY" "$seen"

out="$(curl -s "${AUTH[@]}" -H "X-Trace: 7" -X POST --data-binary 'raw body' \
        "$GATEWAY_URL/inferenceservices/gw-openai/echo/a/b?x=1&y=2")"
check_eq "pass-through keeps the method" "POST" "$(echo "$out" | jget .method)"
check_eq "pass-through keeps the path under base_url" "/s/gwoa/echo/a/b" "$(echo "$out" | jget .path)"
check_contains "pass-through keeps the query" "y" "$(echo "$out" | jget .query)"
check_eq "pass-through forwards the body" "raw body" "$(echo "$out" | jget .body)"
check_eq "pass-through forwards other headers" "7" "$(echo "$out" | jget '.headers["x-trace"]')"

# Streamed: the first event arrives long before the last (the mock spaces them by 50 ms).
timing="$(curl -sN "${AUTH[@]}" -o "$TEST_WORK/stream.out" -w '%{time_starttransfer} %{time_total}' \
          "$GATEWAY_URL/inferenceservices/gw-openai/stream/count?n=6")"
check_eq "pass-through streams every event" "6" "$(grep -c '^data:' "$TEST_WORK/stream.out")"
first="${timing% *}" total="${timing#* }"
check "pass-through streams as it comes (first byte ${first}s, end ${total}s)" \
    awk -v f="$first" -v t="$total" 'BEGIN { exit !(t - f > 0.15) }'

for bad in "/inferenceservices/gw-openai/../../etc/passwd" "/inferenceservices/gw-openai/%2e%2e/x" \
           "/inferenceservices/gw-openai/a/%2E%2E/%2E%2E/b"; do
    check_eq "path traversal is refused: $bad" "400" "$(gw_status --path-as-is "${AUTH[@]}" "$GATEWAY_URL$bad")"
done
check_eq "pass-through to an unknown service is 404" "404" \
    "$(gw_status "${AUTH[@]}" "$GATEWAY_URL/inferenceservices/nope/v1/models")"

# --- rerank in both shapes -----------------------------------------------------------------
docs='["a cooking recipe", "a postgres extension in C++", "postgres docs"]'
out="$(curl -s "${AUTH[@]}" "${JSON[@]}" "$GATEWAY_URL/v1/rerank" \
       -d "{\"model\": \"gw-nim\", \"query\": \"postgres extension\", \"documents\": $docs, \"top_n\": 2}")"
check_eq "/v1/rerank shape in, NIM /v1/ranking upstream, results out" "[1,2]" "$(echo "$out" | jget '.results.map(r=>r.index)')"
check_eq "NIM was called on /v1/ranking" "/v1/ranking" "$(mock_last nim | jget .route_path)"
check "relevance scores are in 0..1" node -e "const r=($out).results; process.exit(r.every(x=>x.relevance_score>0&&x.relevance_score<1)?0:1)"
out="$(curl -s "${AUTH[@]}" "${JSON[@]}" "$GATEWAY_URL/v1/ranking" \
       -d "{\"model\": \"gw-cohere\", \"query\": {\"text\": \"postgres extension\"}, \"passages\": [{\"text\": \"a cooking recipe\"}, {\"text\": \"a postgres extension in C++\"}, {\"text\": \"postgres docs\"}]}")"
check_eq "/v1/ranking shape in, /v1/rerank upstream, rankings out" "[1,2,0]" "$(echo "$out" | jget '.rankings.map(r=>r.index)')"
check_eq "the Cohere-style upstream was called on /v1/rerank" "/v1/rerank" "$(mock_last cohere | jget .route_path)"

# --- bad input -----------------------------------------------------------------------------
out="$(curl -s -w ' %{http_code}' "${AUTH[@]}" "${JSON[@]}" "$GATEWAY_URL/v1/chat/completions" -d '{"model": "gw-openai", "messages": [')"
check_eq "malformed JSON is 400" "400" "${out##* }"
check_contains "errors are OpenAI-shaped" '"error":{' "$out"
check_eq "missing model is 400" "400" \
    "$(gw_status "${AUTH[@]}" "${JSON[@]}" "$GATEWAY_URL/v1/chat/completions" -d '{"messages": []}')"
check_eq "the error names the missing param" "model" \
    "$(curl -s "${AUTH[@]}" "${JSON[@]}" "$GATEWAY_URL/v1/chat/completions" -d '{"messages": []}' | jget .error.param)"
check_eq "unknown model is 404 model_not_found" "404" \
    "$(gw_status "${AUTH[@]}" "${JSON[@]}" "$GATEWAY_URL/v1/chat/completions" -d '{"model": "nope", "messages": [{"role": "user", "content": "x"}]}')"
check_eq "a non-JSON content type is 415" "415" \
    "$(gw_status "${AUTH[@]}" -H 'Content-Type: application/xml' "$GATEWAY_URL/v1/chat/completions" -d '<chat/>')"
check_eq "a mislabelled text/plain JSON body is still read" "200" \
    "$(gw_status "${AUTH[@]}" -H 'Content-Type: text/plain' "$GATEWAY_URL/v1/chat/completions" -d '{"model": "gw-openai", "messages": [{"role": "user", "content": "x"}]}')"
head -c $((17 * 1024 * 1024)) /dev/zero | tr '\0' 'a' >"$TEST_WORK/big.body"
check_eq "a body over inference.gateway_max_body_size is 413" "413" \
    "$(gw_status "${AUTH[@]}" "${JSON[@]}" "$GATEWAY_URL/v1/chat/completions" --data-binary @"$TEST_WORK/big.body")"
rm -f "$TEST_WORK/big.body"
check_eq "an unknown path is 404" "404" "$(gw_status "${AUTH[@]}" "$GATEWAY_URL/v1/unknown")"
check_eq "a wrong method is 405" "405" "$(gw_status "${AUTH[@]}" "$GATEWAY_URL/v1/chat/completions")"
check_eq "the 405 says which methods are allowed" "POST" \
    "$(curl -s -D - -o /dev/null "${AUTH[@]}" "$GATEWAY_URL/v1/chat/completions" | tr -d '\r' | sed -n 's/^[Aa]llow: //p')"

# A half-open client (connects, sends half a request) is disconnected after the client timeout.
t0="$(date +%s%3N)"
closed="$(timeout 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$GATEWAY_PORT; printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n' >&3; cat <&3 >/dev/null; echo closed")"
t1="$(date +%s%3N)"
check_eq "a half-open client is disconnected (after $((t1 - t0)) ms)" "closed" "$closed"

# An upstream that fails mid-stream: the stream ends with an error event; the listener lives on.
out="$(curl -sN "${AUTH[@]}" "${JSON[@]}" "$GATEWAY_URL/v1/chat/completions" \
       -d '{"model": "gw-broken-stream", "stream": true, "messages": [{"role": "user", "content": "a b c d"}]}')"
check_contains "a mid-stream upstream failure ends in an error event" '"error"' "$out"
check_contains "the content before the failure was delivered" '"content"' "$out"
check_eq "the gateway still answers after it" "200" "$(gw_status "$GATEWAY_URL/health")"

# --- access keys ---------------------------------------------------------------------------
check_eq "no key is 401" "401" "$(gw_status "$GATEWAY_URL/v1/models")"
check_eq "X-API-Key works too" "200" "$(gw_status -H "X-API-Key: $KEY" "$GATEWAY_URL/v1/models")"
check_eq "/health needs no key" "200" "$(gw_status "$GATEWAY_URL/health")"
LIMITED="$(psql_gw -At -c "SELECT inference.create_access_key('only-openai', services => '{gw-openai}')")"
wait_for_key "$LIMITED"
check_eq "a key outside its service list gets 403" "403" \
    "$(gw_status -H "Authorization: Bearer $LIMITED" "${JSON[@]}" "$GATEWAY_URL/v1/chat/completions" -d '{"model": "gw-claude", "messages": [{"role": "user", "content": "x"}]}')"
check_eq "the same key may use its service" "200" \
    "$(gw_status -H "Authorization: Bearer $LIMITED" "${JSON[@]}" "$GATEWAY_URL/v1/chat/completions" -d '{"model": "gw-openai", "messages": [{"role": "user", "content": "x"}]}')"
check_eq "models.list shows only the key's services" '["gw-openai"]' \
    "$(curl -s -H "Authorization: Bearer $LIMITED" "$GATEWAY_URL/v1/models" | jget '.data.map(m=>m.id)')"
check_eq "deregistering a service a key names is refused" "2BP01" \
    "$(psql_gw -At -c "DO \$\$ BEGIN PERFORM inference.deregister_external_service('gw-openai'); EXCEPTION WHEN OTHERS THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 | sed -n 's/.*NOTICE: *//p')"

EXPIRING="$(psql_gw -At -c "SELECT inference.create_access_key('expiring', expires_at => now() + interval '1.5 seconds')")"
wait_for_key "$EXPIRING"
check_eq "a key works before it expires" "200" "$(gw_status -H "Authorization: Bearer $EXPIRING" "$GATEWAY_URL/v1/models")"
sleep 1.6
check_eq "an expired key is 401" "401" "$(gw_status -H "Authorization: Bearer $EXPIRING" "$GATEWAY_URL/v1/models")"

# Changes in SQL reach the listeners within a second (each is probed on both listeners' port).
NEW="$(psql_gw -At -c "SELECT inference.create_access_key('fresh')")"
ms="$(wait_for_status "$NEW" 200)"
check "a created key works within a second (${ms:-never} ms)" test -n "$ms" -a "${ms:-9999}" -lt 1000
ROTATED="$(psql_gw -At -c "SELECT inference.rotate_access_key('fresh')")"
ms="$(wait_for_status "$NEW" 401)"
check "a rotated key's old secret stops within a second (${ms:-never} ms)" test -n "$ms" -a "${ms:-9999}" -lt 1000
check_eq "the rotated secret works" "200" "$(gw_status -H "Authorization: Bearer $ROTATED" "$GATEWAY_URL/v1/models")"
psql_gw -c "SELECT inference.revoke_access_key('fresh')" >/dev/null
ms="$(wait_for_status "$ROTATED" 401)"
check "a revoked key stops within a second (${ms:-never} ms)" test -n "$ms" -a "${ms:-9999}" -lt 1000
check_eq "the access_keys view shows the revocation" "t" \
    "$(psql_gw -At -c "SELECT revoked_at IS NOT NULL FROM inference.access_keys WHERE name = 'fresh'")"
check_not_contains "the access_keys view shows no secret" "$ROTATED" "$(psql_gw -At -c "SELECT * FROM inference.access_keys")"

# --- settings a reload changes ------------------------------------------------------------
# gateway_require_key and gateway_max_body_size (and gateway_client_timeout) are SIGHUP settings:
# the listeners apply them on their next tick, no restart.
psql_gw -c "ALTER SYSTEM SET inference.gateway_require_key = off" \
        -c "ALTER SYSTEM SET inference.gateway_max_body_size = '1kB'" -c "SELECT pg_reload_conf()" >/dev/null
ms="$(wait_for_status not-a-key 200)"
check "gateway_require_key = off applies after pg_reload_conf() (${ms:-never} ms)" test -n "$ms"
filler="$(head -c 2048 /dev/zero | tr '\0' 'x')"
check_eq "a lowered gateway_max_body_size applies after pg_reload_conf()" "413" \
    "$(gw_status "${AUTH[@]}" "${JSON[@]}" "$GATEWAY_URL/v1/chat/completions" -d "{\"model\": \"gw-openai\", \"messages\": [{\"role\": \"user\", \"content\": \"$filler\"}]}")"
psql_gw -c "ALTER SYSTEM RESET inference.gateway_require_key" \
        -c "ALTER SYSTEM RESET inference.gateway_max_body_size" -c "SELECT pg_reload_conf()" >/dev/null
ms="$(wait_for_status not-a-key 401)"
check "gateway_require_key back on after pg_reload_conf() (${ms:-never} ms)" test -n "$ms"
check_eq "the body size cap is back to its setting" "200" \
    "$(gw_status "${AUTH[@]}" "${JSON[@]}" "$GATEWAY_URL/v1/chat/completions" -d "{\"model\": \"gw-openai\", \"messages\": [{\"role\": \"user\", \"content\": \"$filler\"}]}")"

psql_gw -c "SELECT inference.revoke_access_key(n) FROM unnest(ARRAY['http-tests', 'only-openai', 'expiring']) n" >/dev/null
