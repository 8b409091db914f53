#!/usr/bin/env bash
# Gateway listeners under trouble, and HTTPS: a terminated listener comes back without
# disturbing the other; after kill -9 (PostgreSQL then resets the whole server) the gateway
# serves again within seconds; a self-signed certificate serves HTTPS.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/gateway.sh"

listener_pids() {
    psql_gw -At -c "SELECT string_agg(pid::text, ' ' ORDER BY pid) FROM pg_stat_activity
                    WHERE backend_type = 'pg_inference gateway'"
}
count_words() { echo "$1" | wc -w; }

gateway_setup_services || exit 1
KEY="$(psql_gw -At -c "SELECT inference.create_access_key('resilience-tests')")"
wait_for_key "$KEY" || fail "the key reaches the gateway"

pids="$(listener_pids)"
check_eq "two listeners run (inference.gateway_workers = 2)" "2" "$(count_words "$pids")"
victim="${pids%% *}" survivor="${pids##* }"

# pg_terminate_backend on one listener: the other keeps serving, the victim is restarted.
psql_gw -c "SELECT pg_terminate_backend($victim)" >/dev/null
ok=0 bad=0
for _ in $(seq 1 40); do
    if [ "$(gw_status -H "Authorization: Bearer $KEY" "$GATEWAY_URL/v1/models")" = 200 ]; then
        ok=$((ok + 1))
    else
        bad=$((bad + 1))
    fi
    sleep 0.05
done
check "the gateway kept answering while a listener restarted ($ok ok, $bad failed)" test "$ok" -ge 38
new=""
for _ in $(seq 1 60); do
    new="$(listener_pids)"
    [ "$(count_words "$new")" = 2 ] && [[ " $new " != *" $victim "* ]] && break
    sleep 0.1
done
check "the terminated listener was restarted (pids: $pids -> $new)" \
    bash -c "[ \"\$(echo $new | wc -w)\" = 2 ] && [[ ' $new ' != *' $victim '* ]]"
check "the other listener was not disturbed" bash -c "[[ ' $new ' == *' $survivor '* ]]"

# kill -9 of a listener: the postmaster resets every process; the gateway comes back.
t0="$(date +%s%3N)"
kill -KILL "$survivor"
back=""
for _ in $(seq 1 300); do
    sleep 0.1
    if [ "$(gw_status -H "Authorization: Bearer $KEY" "$GATEWAY_URL/v1/models")" = 200 ]; then
        back="$(($(date +%s%3N) - t0))"
        break
    fi
done
check "after kill -9 of a listener the gateway serves again (${back:-never} ms)" \
    test -n "$back" -a "${back:-99999}" -lt 20000
out="$(curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        "$GATEWAY_URL/v1/chat/completions" -d '{"model": "gw-claude", "messages": [{"role": "user", "content": "back again"}]}')"
check_contains "and translates as before" "echo: back again" "$out"
for _ in $(seq 1 50); do psql_gw -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
psql_gw -c "SELECT inference.revoke_access_key('resilience-tests')" >/dev/null

# HTTPS with a self-signed certificate, on a second cluster.
TLS_DIR="$TEST_WORK/gwtls" TLS_PORT=25434 TLS_GW_PORT=18767
bash "$ROOT/test/mock/make_cert.sh" "$TLS_DIR/certs" >/dev/null
mkdir -p "$TLS_DIR/pgcerts"
cp "$TLS_DIR/certs/mock_cert.pem" "$TLS_DIR/certs/mock_key.pem" "$TLS_DIR/pgcerts/"
chmod 600 "$TLS_DIR/pgcerts/mock_key.pem"
[ "$(id -u)" -eq 0 ] && chown -R postgres: "$TLS_DIR"
if port_free="$(! (exec 3<>"/dev/tcp/127.0.0.1/$TLS_GW_PORT") 2>/dev/null && echo yes)"; [ "$port_free" = yes ]; then
    cluster_start "$TLS_DIR/pg" "$TLS_PORT" "inference.gateway_port = $TLS_GW_PORT" \
        "inference.gateway_workers = 1" "inference.health_check_interval = '1h'" \
        "inference.gateway_tls_cert_file = '$TLS_DIR/pgcerts/mock_cert.pem'" \
        "inference.gateway_tls_key_file = '$TLS_DIR/pgcerts/mock_key.pem'"
    TLS_KEY="$(cluster_psql "$TLS_DIR/pg" "$TLS_PORT" -At -c "CREATE EXTENSION pg_inference" \
                -c "SELECT inference.create_access_key('tls')")"
    TLS_KEY="$(echo "$TLS_KEY" | tail -1)"
    for _ in $(seq 1 50); do
        [ "$(gw_status --cacert "$TLS_DIR/certs/mock_cert.pem" -H "Authorization: Bearer $TLS_KEY" \
             "https://127.0.0.1:$TLS_GW_PORT/v1/models")" = 200 ] && break
        sleep 0.1
    done
    check_eq "HTTPS /health with the self-signed certificate (curl --cacert)" '{"status":"ok"}' \
        "$(curl -s --cacert "$TLS_DIR/certs/mock_cert.pem" "https://127.0.0.1:$TLS_GW_PORT/health")"
    check_eq "HTTPS with an access key" "200" \
        "$(gw_status --cacert "$TLS_DIR/certs/mock_cert.pem" -H "Authorization: Bearer $TLS_KEY" \
           "https://localhost:$TLS_GW_PORT/v1/models")"
    check "an untrusted client refuses the certificate" \
        bash -c "! curl -s -o /dev/null https://127.0.0.1:$TLS_GW_PORT/health"
    check_contains "gateway_url says https" "https://localhost:$TLS_GW_PORT" \
        "$(cluster_psql "$TLS_DIR/pg" "$TLS_PORT" -At -c "SELECT inference_internal.gateway_base_url()")"
    cluster_stop "$TLS_DIR/pg"
else
    fail "port $TLS_GW_PORT is free for the HTTPS cluster"
fi
