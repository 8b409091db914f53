#!/usr/bin/env bash
# pg_inference's gateway side by side with the alternatives, in one session:
#   direct    the load generator straight to the mock upstream (the baseline)
#   nginx     nginx (Debian package) as a plain keep-alive reverse proxy to the mock
#   floor     test/bench/stack_floor.cpp: the least a proxy made of the gateway's mandated parts
#             (libevent evhttp + libcurl multi) can do, nothing else;
#             what those libraries cost by themselves
#   pg        the pg_inference gateway in a PostgreSQL cluster, with an access key (generous
#             limits), rate limiting and usage counting on
#   portkey   the Portkey AI gateway from npm (@portkey-ai/gateway, test/bench/node)
# for POST /v1/chat/completions (plain and "stream": true) and /v1/embeddings, at concurrency 1, 16
# and 64, against a C++ mock (test/bench/fast_mock.cpp) answering at once (0 ms) or after 20 ms.
# Every scenario runs the targets back to back, in an order that rotates from round to
# round, each run with its own warm-up; the rounds repeat the whole matrix. Then the gateway alone
# serves a 60-second mixed load while its resident memory is sampled every second.
#
# Machine: two cores. CPU 0 runs the load generator (test/bench/load_client.cpp) and the mock;
# CPU 1 runs the proxy under test (nginx's, the gateway listeners' and Portkey's processes are
# pinned there with taskset), so every proxy gets the same single core.
#
# Prints a table and the acceptance ratios, writes everything (each run too) to $BENCH_OUT
# (default test/bench/results/gateway_compare.json). Exit status 0 when every target is met.
#
# Settings (environment): BENCH_ROUNDS (3), BENCH_SECONDS per run (3), BENCH_WARMUP_SECONDS per
# run (0.5), BENCH_REQUESTS per run at most (300000), BENCH_RSS_SECONDS (60), BENCH_WORKERS
# (processes of nginx and of the gateway: 2, inference.gateway_workers' default), BENCH_TARGETS
# ("direct nginx floor pg portkey"), BENCH_QUICK=1 (one round of 1 s runs and a 10 s memory run).
# Ports: PGI_BENCH_PORT_BASE (18810: mock, nginx +1, gateway +2, Portkey +3, floor +4),
# PGI_BENCH_PG_PORT
# (55810).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

ROUNDS="${BENCH_ROUNDS:-3}"
SECONDS_PER_RUN="${BENCH_SECONDS:-3}"
WARMUP="${BENCH_WARMUP_SECONDS:-0.5}"
MAX_REQUESTS="${BENCH_REQUESTS:-300000}"
RSS_SECONDS="${BENCH_RSS_SECONDS:-60}"
WORKERS="${BENCH_WORKERS:-2}"
TARGETS="${BENCH_TARGETS:-direct nginx floor pg portkey}"
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    ROUNDS=1 SECONDS_PER_RUN=1 WARMUP=0.3 RSS_SECONDS=10
fi
BASE="${PGI_BENCH_PORT_BASE:-18810}"
MOCK_PORT=$BASE NGINX_PORT=$((BASE + 1)) GATEWAY_PORT=$((BASE + 2)) PORTKEY_PORT=$((BASE + 3))
FLOOR_PORT=$((BASE + 4))
PG_PORT="${PGI_BENCH_PG_PORT:-55810}"
OUT="${BENCH_OUT:-$ROOT/test/bench/results/gateway_compare.json}"
LOAD_CPU=0 PROXY_CPU=1

# ------------------------------------------------------------------------------------------------
# Packages, builds, the Portkey install

bash scripts/install-deps.sh >/dev/null
# What this benchmark alone needs; the main test command does not depend on them.
BENCH_PACKAGES=(nginx)
missing=()
for p in "${BENCH_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "gateway_compare: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
if [ "$(nproc)" -lt 2 ]; then
    LOAD_CPU=0 PROXY_CPU=0
    echo "gateway_compare: one CPU only: everything shares it" >&2
fi

bash scripts/build-install.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-bench -j2 --target fast_mock load_client stack_floor >/tmp/pgi-bench-build.log 2>&1 ||
    { cat /tmp/pgi-bench-build.log; exit 1; }
BIN="$ROOT/build-bench"
NODE_DIR="$ROOT/test/bench/node"
if [ ! -d "$NODE_DIR/node_modules/@portkey-ai/gateway" ] ||
    [ "$NODE_DIR/package-lock.json" -nt "$NODE_DIR/node_modules/.package-lock.json" ]; then
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

source test/lib/cluster.sh
source test/lib/mock.sh
for port in $MOCK_PORT $NGINX_PORT $GATEWAY_PORT $PORTKEY_PORT $FLOOR_PORT $PG_PORT; do
    port_is_free "$port" || { echo "gateway_compare: port $port is in use" >&2; exit 1; }
done

WORK="$(cluster_workdir pgi-compare)"
PG_DIR="$WORK/pg"
FAST_MOCK_PID="" NGINX_PID="" PORTKEY_PID="" FLOOR_PID=""

stop_pid() {
    local pid="$1" _
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
stop_all() {
    stop_pid "$PORTKEY_PID"
    # The floor's parent stops its workers and waits for them.
    stop_pid "$FLOOR_PID"
    # nginx: TERM to the master is a fast shutdown of master and workers.
    stop_pid "$NGINX_PID"
    cluster_stop "$PG_DIR"
    stop_pid "$FAST_MOCK_PID"
    rm -rf "$WORK"
}
trap stop_all EXIT

wait_http() {
    local what="$1" url="$2" _
    shift 2
    for _ in $(seq 1 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url")" = 200 ] && return 0
        sleep 0.1
    done
    echo "gateway_compare: $what did not come up ($url)" >&2
    return 1
}

# ------------------------------------------------------------------------------------------------
# The servers

taskset -c $LOAD_CPU "$BIN/fast_mock" --port "$MOCK_PORT" >"$WORK/mock.log" 2>&1 &
FAST_MOCK_PID=$!
wait_http "the mock" "http://127.0.0.1:$MOCK_PORT/health"

mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes $WORKERS;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    keepalive_requests 1000000;
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 256;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Streams go out as they come, as they must for SSE.
            proxy_buffering off;
        }
    }
}
NGINX
taskset -c $PROXY_CPU nginx -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" \
    -e "$WORK/nginx/logs/error.log" >"$WORK/nginx/out.log" 2>&1 &
NGINX_PID=$!
wait_http nginx "http://127.0.0.1:$NGINX_PORT/health"

taskset -c $PROXY_CPU "$BIN/stack_floor" --port "$FLOOR_PORT" --workers "$WORKERS" \
    --upstream "http://127.0.0.1:$MOCK_PORT" >"$WORK/floor.log" 2>&1 &
FLOOR_PID=$!
wait_http "the floor proxy" "http://127.0.0.1:$FLOOR_PORT/health"

cluster_start "$PG_DIR" "$PG_PORT" "inference.gateway_port = $GATEWAY_PORT" \
    "inference.gateway_listen_addresses = '127.0.0.1'" "inference.gateway_workers = $WORKERS" \
    "log_min_messages = warning"
psql_() { cluster_psql "$PG_DIR" "$PG_PORT" -d postgres "$@"; }
psql_ >/dev/null <<SQL
CREATE EXTENSION pg_inference;
SELECT inference.register_external_service('gpt-4o-mini', 'gpt-4o-mini',
       'http://127.0.0.1:$MOCK_PORT', api_key => 'sk-bench');
SELECT inference.register_external_service('gpt-4o-mini-20ms', 'gpt-4o-mini',
       'http://127.0.0.1:$MOCK_PORT/d/20', api_key => 'sk-bench');
SQL
# Limits far above what the benchmark sends, so that every request goes through the shared rate
# limiter and the token budget without ever being refused.
KEY="$(psql_ -At -c "SELECT inference.create_access_key('bench', requests_per_minute => 1000000000,
        requests_per_hour => 2000000000, tokens_per_hour => 1000000000000000)")"
wait_http "the gateway" "http://127.0.0.1:$GATEWAY_PORT/v1/models" -H "Authorization: Bearer $KEY"
PG_PIDS="$(psql_ -At -c "SELECT string_agg(pid::text, ',') FROM pg_stat_activity
                          WHERE backend_type = 'pg_inference gateway'")"
[ -n "$PG_PIDS" ] || { echo "gateway_compare: no gateway listener found" >&2; exit 1; }
for pid in ${PG_PIDS//,/ }; do taskset -pc $PROXY_CPU "$pid" >/dev/null; done

(cd "$NODE_DIR" && exec taskset -c $PROXY_CPU node --import ./fetch_shim.mjs \
    node_modules/@portkey-ai/gateway/build/start-server.js --port="$PORTKEY_PORT" --headless \
    >"$WORK/portkey.log" 2>&1) &
PORTKEY_PID=$!
wait_http Portkey "http://127.0.0.1:$PORTKEY_PORT/"

NGINX_PIDS="$NGINX_PID,$(pgrep -P "$NGINX_PID" | paste -sd,)"
FLOOR_PIDS="$FLOOR_PID,$(pgrep -P "$FLOOR_PID" | paste -sd,)"

# ------------------------------------------------------------------------------------------------
# Requests: the same bytes for every target; only the URL and headers differ.

body() {  # body ENDPOINT MODEL
    case "$1" in
        chat) printf '{"model":"%s","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":64,"temperature":0.2}' "$2" ;;
        stream) printf '{"model":"%s","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":64,"temperature":0.2,"stream":true}' "$2" ;;
        embeddings) printf '{"model":"%s","input":"The quick brown fox jumps over the lazy dog."}' "$2" ;;
    esac
}
for e in chat stream embeddings; do
    body $e gpt-4o-mini >"$WORK/$e-0.json"
    body $e gpt-4o-mini-20ms >"$WORK/$e-20.json"
done

# target_args TARGET LATENCY ENDPOINT: the load client's URL, headers and processes to watch.
target_args() {
    local target="$1" latency="$2" endpoint="$3" path prefix=""
    [ "$endpoint" = embeddings ] && path=/v1/embeddings || path=/v1/chat/completions
    [ "$latency" = 0 ] || prefix="/d/$latency"
    case "$target" in
        direct)
            ARGS=(--url "http://127.0.0.1:$MOCK_PORT$prefix$path"
                  --header "Authorization: Bearer sk-bench") ;;
        nginx)
            ARGS=(--url "http://127.0.0.1:$NGINX_PORT$prefix$path"
                  --header "Authorization: Bearer sk-bench" --watch "proxy=$NGINX_PIDS") ;;
        floor)
            ARGS=(--url "http://127.0.0.1:$FLOOR_PORT$prefix$path" --watch "proxy=$FLOOR_PIDS") ;;
        pg)
            ARGS=(--url "http://127.0.0.1:$GATEWAY_PORT$path"
                  --header "Authorization: Bearer $KEY" --watch "proxy=$PG_PIDS") ;;
        portkey)
            ARGS=(--url "http://127.0.0.1:$PORTKEY_PORT$path"
                  --header "Authorization: Bearer sk-bench"
                  --header "x-portkey-provider: openai"
                  --header "x-portkey-custom-host: http://127.0.0.1:$MOCK_PORT$prefix/v1"
                  --watch "proxy=$PORTKEY_PID") ;;
    esac
    ARGS+=(--body-file "$WORK/$endpoint-$latency.json" --watch "mock=$FAST_MOCK_PID")
    [ "$endpoint" = stream ] && ARGS+=(--expect-sse)
    return 0
}

RUNS="$WORK/runs.jsonl"
: >"$RUNS"
# run TARGET LATENCY ENDPOINT CONCURRENCY ROUND SECONDS WARMUP
run() {
    target_args "$1" "$2" "$3"
    taskset -c $LOAD_CPU "$BIN/load_client" "${ARGS[@]}" --concurrency "$4" \
        --requests "$MAX_REQUESTS" --seconds "$6" --warmup-requests 1000000 \
        --warmup-seconds "$7" --label "$1 $2 $3 $4 $5" >>"$RUNS" 2>>"$WORK/load_client.err"
}

# Every target answers every request shape before anything is measured.
for target in $TARGETS; do
    for e in chat stream embeddings; do
        target_args "$target" 0 "$e"
        out="$(taskset -c $LOAD_CPU "$BIN/load_client" "${ARGS[@]}" --concurrency 4 \
               --requests 200 --seconds 5 --warmup-requests 50 --warmup-seconds 2 --label check)"
        case "$out" in
            *'"errors":0,"incomplete_streams":0,'*) ;;
            *) echo "gateway_compare: $target does not answer $e correctly:" >&2
               cat "$WORK/load_client.err" >&2
               exit 1 ;;
        esac
    done
done
# JIT compilers (Portkey's V8) and connection pools warm up before the first round.
for target in $TARGETS; do
    for e in chat stream embeddings; do run "$target" 0 "$e" 16 0 2 0.5; done
done
: >"$RUNS"

SCENARIOS=()
for e in chat stream embeddings; do
    for c in 1 16 64; do SCENARIOS+=("0 $e $c"); done
done
for e in chat stream embeddings; do
    for c in 1 64; do SCENARIOS+=("20 $e $c"); done
done
read -r -a TARGET_LIST <<<"$TARGETS"
n_targets=${#TARGET_LIST[@]}
started=$(date +%s)
echo "gateway_compare: $ROUNDS rounds of ${#SCENARIOS[@]} scenarios x $n_targets targets," \
    "${SECONDS_PER_RUN} s each after ${WARMUP} s of warm-up"
for round in $(seq 1 "$ROUNDS"); do
    s=0
    for scenario in "${SCENARIOS[@]}"; do
        read -r latency endpoint concurrency <<<"$scenario"
        for k in $(seq 0 $((n_targets - 1))); do
            target="${TARGET_LIST[$(((k + round + s) % n_targets))]}"
            run "$target" "$latency" "$endpoint" "$concurrency" "$round" "$SECONDS_PER_RUN" "$WARMUP"
        done
        s=$((s + 1))
    done
    echo "  round $round done ($(($(date +%s) - started)) s)"
done

# ------------------------------------------------------------------------------------------------
# Resident memory of the gateway across a long mixed run: chat, streams and embeddings at once.

RSS_RUNS="$WORK/rss.jsonl"
: >"$RSS_RUNS"
if [[ " $TARGETS " == *" pg "* ]]; then
    echo "gateway_compare: ${RSS_SECONDS} s of mixed load on the gateway, memory sampled every second"
    target_args pg 0 chat
    clients=()
    taskset -c $LOAD_CPU "$BIN/load_client" "${ARGS[@]}" --concurrency 32 --requests 1000000000 \
        --seconds "$RSS_SECONDS" --warmup-requests 1000000000 --warmup-seconds 5 \
        --rss-every-ms 1000 --label "pg 0 chat 32 rss" >>"$RSS_RUNS" 2>>"$WORK/load_client.err" &
    clients+=($!)
    for e in stream embeddings; do
        target_args pg 0 $e
        taskset -c $LOAD_CPU "$BIN/load_client" "${ARGS[@]}" --concurrency 16 \
            --requests 1000000000 --seconds "$RSS_SECONDS" --warmup-requests 1000000000 \
            --warmup-seconds 5 --label "pg 0 $e 16 rss" >>"$RSS_RUNS" 2>>"$WORK/load_client.err" &
        clients+=($!)
    done
    # The servers are background jobs too: wait for the load clients alone.
    for pid in "${clients[@]}"; do wait "$pid"; done
fi

USAGE="$(psql_ -At -c "SELECT coalesce(sum(requests), 0) FROM inference.usage WHERE key_name = 'bench'")"
mkdir -p "$(dirname "$OUT")"
status=0
node test/bench/compare_report.js --runs "$RUNS" --rss "$RSS_RUNS" --out "$OUT" \
    --machine "$(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)" \
    --setup "load generator and mock on CPU $LOAD_CPU; proxy under test on CPU $PROXY_CPU; $WORKERS nginx workers, $WORKERS floor workers, $WORKERS gateway listeners, 1 Portkey process" \
    --versions "nginx $(nginx -v 2>&1 | sed 's|.*/||'); Portkey $(node -p "require('$NODE_DIR/node_modules/@portkey-ai/gateway/package.json').version"); node $(node --version)" \
    --settings "rounds=$ROUNDS seconds=$SECONDS_PER_RUN warmup=$WARMUP rss_seconds=$RSS_SECONDS" \
    --ledger "$USAGE" || status=$?
if [ -s "$WORK/load_client.err" ]; then
    echo "load generator messages:"
    sort "$WORK/load_client.err" | uniq -c | head -20
fi
exit $status
