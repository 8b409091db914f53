#!/usr/bin/env bash
# Hot standbys, on a real primary and a real streaming standby (pg_basebackup -R) of the
# script's own, both with the extension preloaded and a gateway each:
#   a. the SQL calling functions (list_models, chat, encode_text, rerank) work on the standby;
#   b. a service, a route and an access key created on the primary are served by the standby's
#      gateway within 1 s; a revoked key is refused there within 1 s;
#   c. requests served by the standby, streamed and not, appear in the primary's ledger exactly
#      (requests and tokens equal what the clients were served): in normal operation, across a
#      standby restart (-m fast) before its flush, and while the primary is down for 10 s (the
#      counts arrive after it returns, also when the usage writer holding them was terminated);
#   d. the standby's log has no WARNING, ERROR or FATAL in normal operation;
#   e. with inference.limits_scope = 'cluster', a key limited to 100 requests a minute, loaded
#      through both gateways at once, gets between 100 and 100 + 2 blocks of successes;
#   f. nginx with the configuration docs/replicas.md gives, in front of both gateways, spreads
#      requests over them, streams included;
#   g. after pg_ctl promote, the new primary records usage in its own ledger at once: what it
#      held unflushed and what it serves next, with no duplicate on the old primary and no loss.
#
# In the suite (test/run-tests.sh) it shares the suite's mock upstream and lock; run alone
# (after `bash scripts/build-install.sh`) it takes the machine lock and starts its own mock.
# Every client call is bounded by `timeout`, every loop by count and time.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/cluster.sh"
source "$ROOT/test/lib/mock.sh"
source "$ROOT/test/lib/check.sh"
source "$ROOT/test/lib/standalone.sh"
standalone_lock

now_ms() { date +%s%3N; }
T_SCRIPT="$(now_ms)"

standalone_workdir replicas
RW="$WORKDIR"
P_DIR="$RW/primary"
S_DIR="$RW/standby"
OWN_MOCK=0
NGINX_PID=""
cleanup() {
    [ -n "$NGINX_PID" ] && { kill -TERM "$NGINX_PID" 2>/dev/null; wait "$NGINX_PID" 2>/dev/null; }
    cluster_stop "$S_DIR"
    cluster_stop "$P_DIR"
    [ "$OWN_MOCK" = 1 ] && mock_stop
    [ -z "${TEST_WORK:-}" ] && [ "${PGI_KEEP:-0}" != 1 ] && rm -rf "$RW"
    return 0
}
trap cleanup EXIT

standalone_mock "$RW"
P_PORT="$(pick_port)" && S_PORT="$(pick_port "$P_PORT")" &&
    P_GW="$(pick_port "$P_PORT" "$S_PORT")" && S_GW="$(pick_port "$P_PORT" "$S_PORT" "$P_GW")" ||
    { fail "replicas: free ports"; exit 1; }
S_URL="http://127.0.0.1:$S_GW"
NODE="$ROOT/test/e2e/node"

qp() { timeout "${QT:-20}" psql -X -q -v ON_ERROR_STOP=1 -h "$P_DIR" -p "$P_PORT" -U postgres -d postgres "$@"; }
qs() { timeout "${QT:-20}" psql -X -q -v ON_ERROR_STOP=1 -h "$S_DIR" -p "$S_PORT" -U postgres -d postgres "$@"; }
# Waits (up to LIMIT ms) until GET /v1/models on URL answers WANT for KEY on 10 requests in a
# row, each on a connection of its own (so both listeners answer); prints the ms it took, or
# "timeout". One curl process makes the 10 requests: on a busy machine, starting a process per
# request would take longer than the change takes to arrive.
wait_code() { # URL KEY WANT LIMIT_MS
    local start deadline urls=() i codes
    start="$(now_ms)"
    deadline=$((start + $4))
    for i in $(seq 1 10); do urls+=(-o /dev/null "$1/v1/models"); done
    while [ "$(now_ms)" -lt "$deadline" ]; do
        codes="$(timeout 5 curl -s -m 3 -w '%{http_code} ' -H 'Connection: close' \
                 -H "Authorization: Bearer $2" "${urls[@]}")"
        [ "$codes" = "$(printf "$3 %.0s" $(seq 1 10))" ] && { echo $(($(now_ms) - start)); return 0; }
        sleep 0.02
    done
    echo timeout
    return 1
}
# The primary's ledger for a key's chat requests: "requests prompt completion total"
# (LEDGER_OF=qs: the standby's).
ledger() {
    "${LEDGER_OF:-qp}" -At -F ' ' -c "SELECT coalesce(sum(requests), 0), coalesce(sum(prompt_tokens), 0),
                             coalesce(sum(completion_tokens), 0), coalesce(sum(total_tokens), 0)
                        FROM inference.usage WHERE key_name = '$1' AND service = 'rep-chat'"
}
# Waits (up to LIMIT ms) until the primary's ledger for KEY_NAME shows WANT; prints it.
wait_ledger() { # KEY_NAME WANT LIMIT_MS
    local got deadline=$(($(now_ms) + $3))
    while :; do
        got="$(QT=5 ledger "$1" 2>/dev/null)"  # LEDGER_OF as the caller set it
        [ "$got" = "$2" ] && break
        [ "$(now_ms)" -ge "$deadline" ] && break
        sleep 0.2
    done
    echo "$got"
}
# What a gateway's node has counted but not yet recorded (pg_inference_gateway_usage_pending_requests).
pending_of() { # URL
    timeout 5 curl -s -m 3 "$1/metrics" |
        sed -nE 's/^pg_inference_gateway_usage_pending_requests ([0-9]+)$/\1/p'
}
# The sum of two ledger lines "requests prompt completion total".
add4() {
    local a b c d e f g h
    read -r a b c d <<<"$1"
    read -r e f g h <<<"$2"
    echo "$((a + e)) $((b + f)) $((c + g)) $((d + h))"
}
# The standby's flush interval: long (an hour, so that only an exit or a promotion flushes) or
# back to the script's.
standby_flush_interval() { # long|back
    if [ "$1" = long ]; then
        as_pg tee -a "$S_DIR/data/postgresql.conf" >/dev/null <<<"inference.gateway_usage_flush_interval = '1h'"
    else
        as_pg sed -i '$d' "$S_DIR/data/postgresql.conf"
    fi
    as_pg "$PG_BINDIR/pg_ctl" -D "$S_DIR/data" reload >/dev/null
}
# A chat through the standby's gateway with KEY2 naming MODEL (a service or a route), tried for up
# to 1 s until it answers 200: "code ms".
wait_model() { # MODEL
    local t1 code=""
    t1="$(now_ms)"
    while [ $(($(now_ms) - t1)) -lt 1000 ]; do
        code="$(timeout 5 curl -s -o /dev/null -m 3 -w '%{http_code}' -H "Authorization: Bearer $KEY2" \
            -H 'Content-Type: application/json' "$S_URL/v1/chat/completions" \
            -d "{\"model\":\"$1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}")"
        [ "$code" = 200 ] && break
        sleep 0.02
    done
    echo "$code $(($(now_ms) - t1))"
}
# Load through a gateway: "sent ok prompt completion total" as the clients saw it.
load_via() { # URL KEY COUNT
    local out
    out="$(timeout 120 node "$NODE/chat_load.mjs" "$1" "$2" rep-chat "$3" 4)"
    node -e 'const r = JSON.parse(process.argv[1]); console.log([r.sent, r.ok, r.prompt, r.completion, r.total].join(" "))' "$out"
}
load() { load_via "$S_URL" "$@"; }  # through the standby's: KEY COUNT
# WARNING and worse from line FROM_LINE of a server log, but for the FATALs with which
# PostgreSQL ends every session and worker at a shutdown.
log_problems() { # LOG FROM_LINE
    tail -n +"$2" "$1" | grep -E '\] (WARNING|ERROR|FATAL|PANIC): ' |
        grep -v 'terminating \(connection\|background worker "[^"]*"\) due to administrator command' || true
}

# ---------------------------------------------------------------------------------------------
# A primary and a streaming standby

t0="$(now_ms)"
COMMON=("pgi_test.mock = '$MOCK_URL'" "inference.gateway_workers = 2"
        "inference.gateway_usage_flush_interval = '1s'" "inference.health_check_timeout = '3s'")
cluster_start "$P_DIR" "$P_PORT" "${COMMON[@]}" "inference.gateway_port = $P_GW" \
    "wal_level = replica" "max_wal_senders = 5" || { fail "replicas: the primary starts"; exit 1; }
qp >/dev/null <<SQL || { fail "replicas: the primary's catalog"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION pg_inference;
SELECT inference.register_external_service('rep-chat', 'gpt-4o-mini', '$MOCK_URL/s/rep_chat',
                                           api_key => 'sk-test-replicas');
SELECT inference.register_external_service('rep-embed', 'text-embedding-3-small',
                                           '$MOCK_URL/s/rep_embed', api_key => 'sk-test-replicas',
                                           functions => '{embeddings}');
SELECT inference.register_external_service('rep-rerank', 'nvidia/nv-rerankqa-mistral-4b-v3',
                                           '$MOCK_URL/s/nim', api_key => 'sk-test-replicas',
                                           functions => '{rerank}');
SQL
KEY1="$(qp -At -c "SELECT inference.create_access_key('rep-load')")"

mkdir -p "$S_DIR" && [ "$(id -u)" -eq 0 ] && chown postgres: "$S_DIR"
as_pg "$PG_BINDIR/pg_basebackup" -h "$P_DIR" -p "$P_PORT" -U postgres -D "$S_DIR/data" -R \
    -X stream --no-sync >"$RW/basebackup.log" 2>&1 || { fail "replicas: pg_basebackup -R" "$(tail -3 "$RW/basebackup.log")"; exit 1; }
{
    echo "port = $S_PORT"
    echo "unix_socket_directories = '$S_DIR'"
    echo "inference.gateway_port = $S_GW"
} | as_pg tee -a "$S_DIR/data/postgresql.conf" >/dev/null
cluster_pg_ctl "$S_DIR" start || { fail "replicas: the standby starts" "$(tail -5 "$S_DIR/server.log")"; exit 1; }
S_LOG="$S_DIR/server.log"
S_LOG_FROM="$(($(wc -l <"$S_LOG") + 1))"
check_eq "the standby is in recovery" t "$(qs -At -c 'SELECT pg_is_in_recovery()')"
echo "   primary on $P_PORT (gateway $P_GW), standby on $S_PORT (gateway $S_GW), mock $MOCK_URL ($(($(now_ms) - t0)) ms)"

# ---------------------------------------------------------------------------------------------
echo "== a. the SQL calling functions on the standby"
check_contains "a: list_models() on the standby lists the primary's services" "rep-chat" \
    "$(qs -At -c "SELECT string_agg(name, ',') FROM inference.list_models()" 2>&1)"
check_eq "a: chat() on the standby answers" t \
    "$(qs -At -c "SELECT length(inference.chat('rep-chat', 'hello from the standby')) > 0" 2>&1)"
check_eq "a: encode_text() on the standby answers" t \
    "$(qs -At -c "SELECT array_length(inference.encode_text('rep-embed', 'standby text'), 1) > 0" 2>&1)"
check_eq "a: rerank() on the standby answers" 2 \
    "$(qs -At -c "SELECT count(*) FROM inference.rerank('rep-rerank', 'postgres', ARRAY['postgres', 'other'])" 2>&1)"

# ---------------------------------------------------------------------------------------------
echo "== b. catalog changes reach the standby's gateway"
took="$(wait_code "$S_URL" "$KEY1" 200 5000)"
check "b: the standby's gateway serves a key from before the base backup ($took ms)" [ "$took" != timeout ]
KEY2="$(qp -At -c "SELECT inference.create_access_key('rep-new')")"
took="$(wait_code "$S_URL" "$KEY2" 200 1000)"
check "b: a key created on the primary is served by the standby within 1 s ($took ms)" [ "$took" != timeout ]
qp -q -c "SELECT inference.register_external_service('rep-late', 'gpt-4o-mini', '$MOCK_URL/s/rep_late',
                                                       api_key => 'sk-test-replicas', validate => false)" >/dev/null
read -r code took <<<"$(wait_model rep-late)"
check_eq "b: a service registered on the primary is served by the standby within 1 s ($took ms)" 200 "$code"
qp -q -c "SELECT inference.create_route('rep-route', '[{\"service\": \"rep-late\"}]')" >/dev/null
read -r code took <<<"$(wait_model rep-route)"
check_eq "b: a route created on the primary is served by the standby within 1 s ($took ms)" 200 "$code"
qp -q -c "SELECT inference.revoke_access_key('rep-new')" >/dev/null
took="$(wait_code "$S_URL" "$KEY2" 401 1000)"
check "b: a key revoked on the primary is refused by the standby within 1 s ($took ms)" [ "$took" != timeout ]

# ---------------------------------------------------------------------------------------------
echo "== c. usage served by the standby reaches the primary's ledger"
read -r sent ok prompt completion total <<<"$(load "$KEY1" 40)"
echo "   standby served $ok of $sent: $prompt + $completion = $total tokens"
check_eq "c: the standby answered every request" "$sent" "$ok"
got="$(wait_ledger rep-load "$ok $prompt $completion $total" 5000)"
check_eq "c: the primary's ledger has the standby's requests and tokens exactly" "$ok $prompt $completion $total" "$got"

# Normal operation ends here for the log check (d).
S_LOG_TO="$(wc -l <"$S_LOG")"

# A restart before the flush: the counts of the last requests are flushed at shutdown.
standby_flush_interval long
sleep 0.5
before="$(ledger rep-load)"
read -r sent2 ok2 prompt2 completion2 total2 <<<"$(load "$KEY1" 20)"
cluster_pg_ctl "$S_DIR" restart || fail "c: the standby restarts"
want="$(add4 "$before" "$ok2 $prompt2 $completion2 $total2")"
got="$(wait_ledger rep-load "$want" 5000)"
check_eq "c: requests served just before a standby restart (-m fast) are in the ledger exactly" "$want" "$got"
standby_flush_interval back

# The primary down for 10 s while the standby serves.
took="$(wait_code "$S_URL" "$KEY1" 200 10000)"
before="$(ledger rep-load)"
cluster_pg_ctl "$P_DIR" stop
t1="$(now_ms)"
read -r sent3 ok3 prompt3 completion3 total3 <<<"$(load "$KEY1" 20)"
echo "   with the primary down the standby served $ok3 of $sent3"
check_eq "c: with the primary down, the standby still serves" "$sent3" "$ok3"
sleep 1.5  # a flush interval and a try
pending="$(pending_of "$S_URL")"
# Every request of the key is pending, and nothing else was served meanwhile but /metrics itself.
check "c: the standby's /metrics shows the requests waiting for the primary ($pending, at least $ok3)" \
    [ "${pending:-0}" -ge "$ok3" ]
# The writer that holds them is terminated: they wait in shared memory for the next one.
qs -At -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE backend_type = 'pg_inference usage writer'" >/dev/null
sleep 2.5  # the postmaster starts a new writer after a second; it tries once
pending="$(pending_of "$S_URL")"
check "c: after its usage writer is terminated, the standby still holds them ($pending)" \
    [ "${pending:-0}" -ge "$ok3" ]
sleep "$(awk -v ms=$((10000 - ($(now_ms) - t1))) 'BEGIN { print (ms > 0 ? ms / 1000 : 0) }')"
cluster_pg_ctl "$P_DIR" start || fail "c: the primary starts again"
want="$(add4 "$before" "$ok3 $prompt3 $completion3 $total3")"
got="$(wait_ledger rep-load "$want" 15000)"
check_eq "c: requests served while the primary was down reach its ledger after it returns" "$want" "$got"
sleep 1.5
pending="$(pending_of "$S_URL")"
check "c: once sent, the standby's pending count falls back ($pending)" [ "${pending:-99}" -le 2 ]

# ---------------------------------------------------------------------------------------------
echo "== d. the standby's log"
problems="$(head -n "$S_LOG_TO" "$S_LOG" | log_problems /dev/stdin "$S_LOG_FROM" | head -5)"
check_eq "d: no WARNING, ERROR or FATAL in the standby's log in normal operation" "" "$problems"
# While the primary was away the standby's own walreceiver complains (PostgreSQL's FATALs); the
# extension only logs, at LOG, that usage waits.
ours="$(log_problems "$S_LOG" "$((S_LOG_TO + 1))" | grep -c 'pg_inference')"
check_eq "d: no WARNING, ERROR or FATAL of the extension in the standby's log while the primary was away" 0 "$ours"

# ---------------------------------------------------------------------------------------------
echo "== e. limits for the whole cluster"
BLOCK=10
for conf in "$P_DIR" "$S_DIR"; do
    printf "inference.limits_scope = 'cluster'\ninference.limits_lease_requests = $BLOCK\n" |
        as_pg tee -a "$conf/data/postgresql.conf" >/dev/null
    as_pg "$PG_BINDIR/pg_ctl" -D "$conf/data" reload >/dev/null
done
KEY3="$(qp -At -c "SELECT inference.create_access_key('rep-limited', requests_per_minute => 100)")"
sleep 1  # the key reaches the standby (b measured it); probing would spend its requests
P_URL="http://127.0.0.1:$P_GW"
timeout 120 node "$NODE/chat_load.mjs" "$P_URL" "$KEY3" rep-chat 150 4 >"$RW/limited-p.json" &
lp=$!
timeout 120 node "$NODE/chat_load.mjs" "$S_URL" "$KEY3" rep-chat 150 4 >"$RW/limited-s.json" &
ls_=$!
wait "$lp" "$ls_"
status_count() { node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1])); console.log(r.status[process.argv[2]] || 0)' "$1" "$2"; }
okp="$(status_count "$RW/limited-p.json" 200)"
oks="$(status_count "$RW/limited-s.json" 200)"
limited="$(( $(status_count "$RW/limited-p.json" 429) + $(status_count "$RW/limited-s.json" 429) ))"
echo "   successes: primary $okp, standby $oks; 429: $limited (of 300)"
check "e: the cluster admits at least the limit ($((okp + oks)) >= 100)" [ $((okp + oks)) -ge 100 ]
check "e: the cluster admits at most the limit plus a block per node ($((okp + oks)) <= $((100 + 2 * BLOCK)))" \
    [ $((okp + oks)) -le $((100 + 2 * BLOCK)) ]
check "e: both gateways served the key ($okp, $oks)" [ "$okp" -gt 0 -a "$oks" -gt 0 ]
check_eq "e: every other request got 429" 300 "$((okp + oks + limited))"

# ---------------------------------------------------------------------------------------------
echo "== f. a load balancer in front of both gateways"
# The nginx block of docs/replicas.md as it is, but for its addresses.
LB_PORT="$(pick_port "$P_PORT" "$S_PORT" "$P_GW" "$S_GW")"
mkdir -p "$RW/nginx/logs" "$RW/nginx/tmp"
{
    echo "worker_processes 1; pid $RW/nginx/nginx.pid; error_log $RW/nginx/logs/error.log warn;"
    echo "events { worker_connections 256; }"
    echo "http { access_log off; client_body_temp_path $RW/nginx/tmp/body; proxy_temp_path $RW/nginx/tmp/proxy;"
    echo "       fastcgi_temp_path $RW/nginx/tmp/fcgi; uwsgi_temp_path $RW/nginx/tmp/uwsgi; scgi_temp_path $RW/nginx/tmp/scgi;"
    sed -n '/^```nginx$/,/^```$/p' "$ROOT/docs/replicas.md" | sed '1d;$d' |
        sed -e "s/primary.example:8765/127.0.0.1:$P_GW/" -e "s/standby1.example:8765/127.0.0.1:$S_GW/" \
            -e '/standby2.example/d' -e "s/listen 8765;/listen 127.0.0.1:$LB_PORT;/"
    echo "}"
} >"$RW/nginx/nginx.conf"
NGINX_PID=""
if nginx -p "$RW/nginx/" -c "$RW/nginx/nginx.conf" -e "$RW/nginx/logs/error.log" -t >"$RW/nginx/test.log" 2>&1; then
    pass "f: nginx accepts the configuration of docs/replicas.md"
    nginx -p "$RW/nginx/" -c "$RW/nginx/nginx.conf" -e "$RW/nginx/logs/error.log" \
        -g 'daemon off;' >"$RW/nginx/out.log" 2>&1 &
    NGINX_PID=$!
    for _ in $(seq 1 50); do port_is_free "$LB_PORT" || break; sleep 0.1; done
    served() {  # requests the node's listeners have served: URL
        timeout 5 curl -s -m 3 "$1/metrics" |
            awk '/^pg_inference_gateway_listener_requests_total/ { n += $2 } END { print n + 0 }'
    }
    before_p="$(served "http://127.0.0.1:$P_GW")" before_s="$(served "$S_URL")"
    read -r sent6 ok6 _ <<<"$(load_via "http://127.0.0.1:$LB_PORT" "$KEY1" 40)"
    after_p="$(served "http://127.0.0.1:$P_GW")" after_s="$(served "$S_URL")"
    echo "   through nginx: $ok6 of $sent6 whole; primary served $((after_p - before_p)), standby $((after_s - before_s))"
    check_eq "f: every request through nginx is answered whole, streams included" "$sent6" "$ok6"
    check "f: nginx spreads the requests over both gateways" \
        [ $((after_p - before_p)) -gt 0 -a $((after_s - before_s)) -gt 0 ]
    kill -TERM "$NGINX_PID" 2>/dev/null
    wait "$NGINX_PID" 2>/dev/null
    NGINX_PID=""
else
    fail "f: nginx accepts the configuration of docs/replicas.md" "$(tail -3 "$RW/nginx/test.log")"
fi

# ---------------------------------------------------------------------------------------------
echo "== g. promotion"
# The standby holds counts it has not flushed (a long interval) when it is promoted.
# Every count of the checks before is in the primary's ledger (nothing pending on either node)
# and replayed on the standby before the base is read; then the standby holds what it serves.
for _ in $(seq 1 50); do
    [ "$(pending_of "http://127.0.0.1:$P_GW")" = 0 ] && [ "$(pending_of "$S_URL")" = 0 ] && break
    sleep 0.2
done
sleep 1.5
standby_flush_interval long
sleep 0.5
base="$(ledger rep-load)"
got="$(LEDGER_OF=qs wait_ledger rep-load "$base" 5000)"
check_eq "g: before the promotion the standby's replicated ledger is the primary's" "$base" "$got"
read -r sent4 ok4 prompt4 completion4 total4 <<<"$(load "$KEY1" 20)"
as_pg "$PG_BINDIR/pg_ctl" -D "$S_DIR/data" promote -w -t 30 >/dev/null || fail "g: pg_ctl promote"
t1="$(now_ms)"
check_eq "g: the standby is promoted" f "$(qs -At -c 'SELECT pg_is_in_recovery()')"
want="$(add4 "$base" "$ok4 $prompt4 $completion4 $total4")"
got="$(LEDGER_OF=qs wait_ledger rep-load "$want" 5000)"
check_eq "g: what the standby held at its promotion is in its own ledger within 5 s ($(($(now_ms) - t1)) ms)" "$want" "$got"
standby_flush_interval back
read -r sent5 ok5 prompt5 completion5 total5 <<<"$(load "$KEY1" 10)"
want="$(add4 "$want" "$ok5 $prompt5 $completion5 $total5")"
got="$(LEDGER_OF=qs wait_ledger rep-load "$want" 5000)"
check_eq "g: requests served after the promotion are recorded locally, exactly" "$want" "$got"
check_eq "g: nothing of it went to the old primary (no duplicate)" "$base" "$(ledger rep-load)"
check_eq "g: the promoted server's ledger has no batch twice" 0 \
    "$(qs -At -c 'SELECT count(*) - count(DISTINCT id) FROM inference.usage_batches')"

echo "   47_replicas.sh took $(($(now_ms) - T_SCRIPT)) ms"
standalone_summary
