#!/usr/bin/env bash
# What the gateway's dialects cost: CPU per request and added latency at concurrency 1 for
#   chat      POST /v1/chat/completions -> an OpenAI service (the OpenAI fast path, the baseline)
#   msg-fast  POST /v1/messages         -> an Anthropic service (the Anthropic fast path)
#   msg-x     POST /v1/messages         -> an OpenAI service (translated)
#   resp-x    POST /v1/responses        -> an OpenAI service (translated)
#   route     POST /v1/chat/completions -> a route over one OpenAI service
# each whole and streamed, against test/bench/fast_mock.cpp (which answers OpenAI chat and
# Anthropic messages at once), plus the load generator straight to the mock (direct) for each
# upstream shape. Runs rotate within a round; numbers are medians over the rounds.
#
# Targets: a translated request costs at most 1.5 x the CPU of the fast path (chat); resolving a
# route under 2 % of the listeners' CPU per request (measured with perf); a stream's time to
# first byte is within 1 ms of direct's. Prints a table and the checks, writes
# $BENCH_OUT (default test/bench/results/dialects.json); exit status 0 when both hold.
# Settings: BENCH_ROUNDS (3), BENCH_SECONDS (3), BENCH_QUICK=1 (1 round of 1 s), BENCH_ROWS
# (the rows measured, for profiling one path; checks need chat and the direct rows),
# BENCH_PERF=FILE (records the listeners with perf into FILE while the rows run).
# Ports: PGI_BENCH_PORT_BASE (18830: mock, gateway +1), PGI_BENCH_PG_PORT (55830).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

ROUNDS="${BENCH_ROUNDS:-3}"
SECONDS_PER_RUN="${BENCH_SECONDS:-3}"
[ "${BENCH_QUICK:-0}" = 1 ] && ROUNDS=1 SECONDS_PER_RUN=1
BASE="${PGI_BENCH_PORT_BASE:-18830}"
MOCK_PORT=$BASE GATEWAY_PORT=$((BASE + 1))
PG_PORT="${PGI_BENCH_PG_PORT:-55830}"
OUT="${BENCH_OUT:-$ROOT/test/bench/results/dialects.json}"
LOAD_CPU=0 PROXY_CPU=1
[ "$(nproc)" -lt 2 ] && PROXY_CPU=0

bash scripts/install-deps.sh >/dev/null
bash scripts/build-install.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-bench -j2 --target fast_mock load_client >/tmp/pgi-bench-build.log 2>&1 ||
    { cat /tmp/pgi-bench-build.log; exit 1; }
BIN="$ROOT/build-bench"

source test/lib/cluster.sh
source test/lib/mock.sh
for port in $MOCK_PORT $GATEWAY_PORT $PG_PORT; do
    port_is_free "$port" || { echo "dialects: port $port is in use" >&2; exit 1; }
done
WORK="$(cluster_workdir pgi-dialects)"
PG_DIR="$WORK/pg"
MOCK_PID=""
stop_all() {
    cluster_stop "$PG_DIR"
    if [ -n "$MOCK_PID" ]; then kill -TERM "$MOCK_PID" 2>/dev/null || true; wait "$MOCK_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap stop_all EXIT

taskset -c $LOAD_CPU "$BIN/fast_mock" --port "$MOCK_PORT" >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$MOCK_PORT/health" >/dev/null && break
    sleep 0.1
done

cluster_start "$PG_DIR" "$PG_PORT" "inference.gateway_port = $GATEWAY_PORT" \
    "inference.gateway_listen_addresses = '127.0.0.1'" "log_min_messages = warning"
psql_() { cluster_psql "$PG_DIR" "$PG_PORT" -d postgres "$@"; }
psql_ >/dev/null <<SQL
CREATE EXTENSION pg_inference;
SELECT inference.register_external_service('bench-openai', 'gpt-4o-mini',
       'http://127.0.0.1:$MOCK_PORT', api_key => 'sk-bench', validate => false);
SELECT inference.register_external_service('bench-claude', 'claude-sonnet-4-5',
       'http://127.0.0.1:$MOCK_PORT', api_key => 'sk-bench', protocol => 'ANTHROPIC_V1',
       validate => false);
SELECT inference.register_external_service('bench-openai2', 'gpt-4o-mini',
       'http://127.0.0.1:$MOCK_PORT', api_key => 'sk-bench', validate => false);
SELECT inference.create_route('bench-route',
       '[{"service": "bench-openai"}]');
SQL
KEY="$(psql_ -At -c "SELECT inference.create_access_key('bench', requests_per_minute => 1000000000,
        requests_per_hour => 2000000000, tokens_per_hour => 1000000000000000)")"
for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" \
        "http://127.0.0.1:$GATEWAY_PORT/v1/models")" = 200 ] && break
    sleep 0.1
done
PG_PIDS="$(psql_ -At -c "SELECT string_agg(pid::text, ',') FROM pg_stat_activity
                          WHERE backend_type = 'pg_inference gateway'")"
for pid in ${PG_PIDS//,/ }; do taskset -pc $PROXY_CPU "$pid" >/dev/null; done

# The same conversation in each dialect.
SYSTEM="You are a helpful assistant." USER="Say hello to the benchmark."
body() {  # body ROW STREAM
    local s="$2"
    case "$1" in
        direct-chat | chat | route) printf '{"model":"%s","messages":[{"role":"system","content":"%s"},{"role":"user","content":"%s"}],"max_tokens":64,"temperature":0.2,"stream":%s}' \
            "$(case "$1" in chat) echo bench-openai ;; route) echo bench-route ;; *) echo gpt-4o-mini ;; esac)" \
            "$SYSTEM" "$USER" "$s" ;;
        direct-msg | msg-fast | msg-x) printf '{"model":"%s","system":"%s","messages":[{"role":"user","content":"%s"}],"max_tokens":64,"temperature":0.2,"stream":%s}' \
            "$(case "$1" in msg-x) echo bench-openai ;; msg-fast) echo bench-claude ;; *) echo claude-sonnet-4-5 ;; esac)" \
            "$SYSTEM" "$USER" "$s" ;;
        resp-x) printf '{"model":"bench-openai","instructions":"%s","input":"%s","max_output_tokens":64,"temperature":0.2,"stream":%s}' \
            "$SYSTEM" "$USER" "$s" ;;
    esac
}
ROWS="${BENCH_ROWS:-direct-chat direct-msg chat msg-fast msg-x resp-x route}"
for row in $ROWS; do
    body "$row" false >"$WORK/$row-false.json"
    body "$row" true >"$WORK/$row-true.json"
done

args() {  # args ROW STREAM
    local row="$1" stream="$2"
    case "$row" in
        direct-chat) ARGS=(--url "http://127.0.0.1:$MOCK_PORT/v1/chat/completions") ;;
        direct-msg) ARGS=(--url "http://127.0.0.1:$MOCK_PORT/v1/messages") ;;
        chat | route) ARGS=(--url "http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions") ;;
        msg-fast | msg-x) ARGS=(--url "http://127.0.0.1:$GATEWAY_PORT/v1/messages") ;;
        resp-x) ARGS=(--url "http://127.0.0.1:$GATEWAY_PORT/v1/responses") ;;
    esac
    case "$row" in direct-*) ;; *) ARGS+=(--watch "proxy=$PG_PIDS") ;; esac
    ARGS+=(--header "Authorization: Bearer $KEY" --header "anthropic-version: 2023-06-01"
           --body-file "$WORK/$row-$stream.json")
    if [ "$stream" = true ]; then
        ARGS+=(--expect-sse)
        case "$row" in
            direct-msg | msg-fast | msg-x) ARGS+=(--sse-end message_stop) ;;
            resp-x) ARGS+=(--sse-end 'completed"}') ;;
        esac
    fi
}

RUNS="$WORK/runs.jsonl"
: >"$RUNS"
PERF_PID=""
if [ -n "${BENCH_PERF:-}" ]; then
    perf record -q -g -o "$BENCH_PERF" -p "$PG_PIDS" >/dev/null 2>&1 &
    PERF_PID=$!
fi
# Every row answers correctly before anything is measured.
for row in $ROWS; do
    for stream in false true; do
        args "$row" "$stream"
        out="$(taskset -c $LOAD_CPU "$BIN/load_client" "${ARGS[@]}" --concurrency 1 --requests 200 \
               --seconds 5 --warmup-requests 20 --warmup-seconds 1 --label check 2>"$WORK/err")"
        case "$out" in
            *'"errors":0,"incomplete_streams":0,'*) ;;
            *) echo "dialects: $row (stream $stream) does not answer correctly:" >&2
               cat "$WORK/err" >&2; exit 1 ;;
        esac
    done
done
for round in $(seq 1 "$ROUNDS"); do
    i=0
    for stream in false true; do
        read -r -a list <<<"$ROWS"
        n=${#list[@]}
        for k in $(seq 0 $((n - 1))); do
            row="${list[$(((k + round + i) % n))]}"
            args "$row" "$stream"
            taskset -c $LOAD_CPU "$BIN/load_client" "${ARGS[@]}" --concurrency 1 --requests 300000 \
                --seconds "$SECONDS_PER_RUN" --warmup-requests 1000000 --warmup-seconds 0.5 \
                --label "$row $stream $round" >>"$RUNS" 2>>"$WORK/err"
        done
        i=$((i + 1))
    done
done
if [ -n "$PERF_PID" ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" || true; fi

# What resolving a route costs, measured where it happens: the route row runs once more under
# perf with call graphs, and the share of the listeners' CPU spent in next_target (drawing the
# target and asking its breaker in shared memory, locks and hash lookups included) is the
# route's cost. (The rows' CPU per request differ by a few per cent from run to run, more than a
# route costs, so their ratio cannot show it.)
ROUTE_SHARE=""
if [[ " $ROWS " == *" route "* ]] && command -v perf >/dev/null; then
    args route false
    perf record -q --call-graph dwarf,16384 -F 2000 -o "$WORK/route.perf" -p "$PG_PIDS" \
        >/dev/null 2>&1 &
    RPERF=$!
    sleep 0.5
    taskset -c $LOAD_CPU "$BIN/load_client" "${ARGS[@]}" --concurrency 1 --requests 300000 \
        --seconds "$SECONDS_PER_RUN" --label "route-profile" >/dev/null 2>>"$WORK/err"
    kill -INT "$RPERF"; wait "$RPERF" || true
    perf report -i "$WORK/route.perf" --children --stdio >"$WORK/route.txt" 2>/dev/null || true
    ROUTE_SHARE="$(awk '/Server::Impl::next_target$/ && $1 ~ /%$/ && !seen {
                           sub("%", "", $1); print $1; seen = 1 }' "$WORK/route.txt")"
    ROUTE_SHARE="${ROUTE_SHARE:-0}"
fi
mkdir -p "$(dirname "$OUT")"
ROUTE_SHARE="$ROUTE_SHARE" node test/bench/dialects_report.js "$RUNS" "$OUT"
