#!/usr/bin/env bash
# Upstream keys that occur inside "[redacted]" ("a", "e", "red", "[redacted]" itself): a refusal
# that quotes the key back used to send the key scrubber into an endless loop (a backend deaf to
# cancellation, a gateway listener spinning). Both answer at once now, with the service's name
# intact and the key gone from the upstream's words. Every call is bounded by `timeout`, so the
# old hang fails these checks instead of stalling the suite.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/gateway.sh"
# Bounded psql and curl (timeout runs programs, not shell functions). A session that keeps going
# after an error, like an application would.
psql_session() { timeout 5 psql -X -q -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres "$@"; }
psql_bounded() {
    timeout 10 psql -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres "$@"
}
now_ms() { date +%s%3N; }
CLOCK_MS="SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"

# name -> key. The names hold their keys, so a scrubber that touched the name would show.
NAMES=(short-a short-e short-red short-redacted)
KEYS=(a e red '[redacted]')

# The gateway serves the postgres database, so the services live there. bad_key:echo answers 401
# quoting the whole key back; slow:2000 answers (401 too, for these keys) after 2 s.
psql_bounded >/dev/null <<SQL || exit 1
CREATE EXTENSION IF NOT EXISTS pg_inference;
SELECT inference.register_external_service(n || s, 'gpt-4o-mini', '$MOCK_URL/s/' || l, api_key => k,
                                           validate => false)
  FROM unnest(ARRAY['short-a', 'short-e', 'short-red', 'short-redacted'],
              ARRAY['a', 'e', 'red', '[redacted]']) AS v(n, k),
       (VALUES ('', 'bad_key:echo'), ('-slow', 'slow:2000')) AS w(s, l);
SQL
KEY="$(psql_bounded -At -c "SELECT inference.create_access_key('short-keys')")"
wait_for_key "$KEY" || { fail "the access key reaches the gateway"; exit 1; }

# The upstream's part of an error line (after "HTTP 401: "), with every "[redacted]" taken out:
# what is left must not hold the key.
upstream_rest() {
    local rest="${1#*HTTP 401: }"
    echo "${rest//\[redacted\]/}"
}

for i in "${!NAMES[@]}"; do
    name="${NAMES[$i]}" key="${KEYS[$i]}"

    # --- inference.chat ---------------------------------------------------------------------
    t0="$(now_ms)"
    out="$(psql_session -c "SELECT inference.chat('$name', 'hi')" 2>&1)"
    rc=$?
    t1="$(now_ms)"
    check "key '$key': inference.chat fails within 1 s (rc $rc, $((t1 - t0)) ms)" \
        test "$rc" -eq 1 -a $((t1 - t0)) -lt 1000
    error="$(echo "$out" | grep -m1 'ERROR:')"
    detail="$(echo "$out" | grep -m1 'DETAIL:')"
    check_contains "key '$key': the error names the service unmangled" \
        "service \"$name\" returned HTTP 401: " "$error"
    check_contains "key '$key': the quoted key is replaced" ": [redacted]. " "$error"
    check_not_contains "key '$key': no key left in the upstream's message" "$key" \
        "$(upstream_rest "$error")"
    # The detail is "upstream error type: T, code: C"; T and C are the upstream's words.
    d="${detail#*upstream error type: }"
    d="${d/, code: /,}"
    check_not_contains "key '$key': no key left in the upstream's type and code" "$key" \
        "${d//\[redacted\]/}"

    # --- the gateway ------------------------------------------------------------------------
    out="$(timeout 5 curl -s --max-time 3 -w '\n%{http_code} %{time_total}' \
           -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
           "$GATEWAY_URL/v1/chat/completions" \
           -d "{\"model\": \"$name\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}")"
    status_time="$(echo "$out" | tail -1)"
    body="$(echo "$out" | sed '$d')"
    check_eq "key '$key': the gateway answers 502" "502" "${status_time% *}"
    check "key '$key': the gateway answers within 1 s (${status_time#* } s)" \
        awk -v t="${status_time#* }" 'BEGIN { exit !(t < 1.0) }'
    message="$(echo "$body" | jget .error.message)"
    check_contains "key '$key': the gateway's error names the service unmangled" \
        "service \"$name\" returned HTTP 401: " "$message"
    check_not_contains "key '$key': no key left in the gateway's answer" "$key" \
        "$(upstream_rest "$message")"

    # --- statement_timeout against a 2 s upstream ---------------------------------------------
    # Timed by the server's clock around the call, in a connected session: a new connection's
    # start-up is no part of what the timeout bounds.
    out="$(psql_session -At -c "SET statement_timeout = '500ms'" -c "$CLOCK_MS" \
           -c "SELECT inference.chat('$name-slow', 'hi')" -c "$CLOCK_MS" 2>&1)"
    check_contains "key '$key': statement_timeout cancels the call" \
        "canceling statement due to statement timeout" "$out"
    took="$(echo "$out" | grep -E '^[0-9]+$' | awk 'NR == 1 { a = $1 } NR == 2 { print $1 - a }')"
    check "key '$key': cancelled within 200 ms of the 500 ms timeout (${took:-?} ms in all)" \
        test -n "$took" -a "${took:-9999}" -lt 700
done

# The listeners are still serving.
check_eq "the gateway still answers" "200" \
    "$(gw_status --max-time 3 -H "Authorization: Bearer $KEY" "$GATEWAY_URL/v1/models")"

psql_bounded >/dev/null <<SQL
SELECT inference.revoke_access_key('short-keys');
SELECT inference.deregister_external_service(n || s)
  FROM unnest(ARRAY['short-a', 'short-e', 'short-red', 'short-redacted']) n,
       unnest(ARRAY['', '-slow']) s;
SQL
