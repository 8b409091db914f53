#!/usr/bin/env bash
# How long one round of the health-check worker takes for 1,000 services behind an upstream that
# answers every request after 200 ms (1,000 services must be checked within a few seconds;
# target < 5 s).
#
# The round time is the worker's own measure (inference.health_worker_status().last_round_ms):
# reading the services, probing them all, writing every result. The baseline is the same 1,000
# GETs, same headers and concurrency, made by `curl --parallel` from the shell in the same run.
# Prints the numbers and writes them as JSON to $BENCH_OUT (default
# test/bench/results/health_check_round.json). Starts its own mock upstream and cluster and stops
# both by pid.
#
#   bash test/bench/health_check_round.sh [SERVICES]      (default 1000)
# Ports: PGI_BENCH_PG_PORT (25470), PGI_BENCH_MOCK_PORT (18470; TLS on the next port).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
bash "$ROOT/scripts/build-install.sh" || exit 1
source "$ROOT/test/lib/cluster.sh"
source "$ROOT/test/lib/mock.sh"

SERVICES="${1:-1000}"
LATENCY_MS=200
CONCURRENCY=256 # the worker's cap on probes in flight (health_worker.cpp)
TARGET_MS=5000
PG_PORT="${PGI_BENCH_PG_PORT:-25470}"
MOCK_PORT="${PGI_BENCH_MOCK_PORT:-18470}"
WORK="$(cluster_workdir pgi-bench-health)"
PG_DIR="$WORK/pg"
MOCK="http://127.0.0.1:$MOCK_PORT"
OUT="${BENCH_OUT:-$ROOT/test/bench/results/health_check_round.json}"
mkdir -p "$(dirname "$OUT")"

cleanup() {
    cluster_stop "$PG_DIR"
    mock_stop
    rm -rf "$WORK"
}
trap cleanup EXIT

for p in "$PG_PORT" "$MOCK_PORT" "$((MOCK_PORT + 1))"; do
    port_is_free "$p" || { echo "port $p is busy; set PGI_BENCH_PG_PORT / PGI_BENCH_MOCK_PORT"; exit 1; }
done
mock_start "$WORK" "$MOCK_PORT" "$((MOCK_PORT + 1))" --latency-ms "$LATENCY_MS" || exit 1
# A long interval: the round at start finds no extension, and the measured rounds begin only when
# the interval is shortened below.
cluster_start "$PG_DIR" "$PG_PORT" "inference.health_check_interval = '1h'" \
    "inference.health_check_timeout = '10s'" "max_connections = 20" || exit 1
q() { cluster_psql "$PG_DIR" "$PG_PORT" -At "$@"; }

q -c "CREATE EXTENSION pg_inference" >/dev/null || exit 1
q -c "SELECT count(*) FROM generate_series(1, $SERVICES) i,
        LATERAL inference.register_external_service('bench-' || i, 'gpt-4o-mini',
                                                     '$MOCK/s/bench', api_key => 'sk-test-bench',
                                                     validate => false)" >/dev/null || exit 1

# Waits for round number $1 to complete; prints its "ms|services|failed".
wait_round() {
    local deadline=$((SECONDS + 60)) row
    while [ $SECONDS -lt $deadline ]; do
        row="$(q -c "SELECT round(last_round_ms)::int, last_round_services, last_round_failed
                       FROM inference.health_worker_status() WHERE rounds >= $1")"
        [ -n "$row" ] && { echo "$row"; return 0; }
        sleep 0.1
    done
    return 1
}

rounds_before="$(q -c "SELECT rounds FROM inference.health_worker_status()")"
q -c "ALTER SYSTEM SET inference.health_check_interval = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
cold="$(wait_round $((rounds_before + 1)))" || { echo "no health-check round within 60 s"; exit 1; }
warm="$(wait_round $((rounds_before + 2)))" || { echo "no second round within 60 s"; exit 1; }
IFS='|' read -r cold_ms cold_n cold_failed <<<"$cold"
IFS='|' read -r warm_ms _ warm_failed <<<"$warm"
ready="$(q -c "SELECT count(*) FROM inference.list_models() WHERE status = 'Ready'")"

# Baseline: the same requests from curl, same concurrency, new connections (like the cold round).
for _ in $(seq 1 "$SERVICES"); do
    printf 'url = "%s/s/bench/v1/models/gpt-4o-mini"\noutput = "/dev/null"\n' "$MOCK"
done >"$WORK/curl.cfg"
start_ns="$(date +%s%N)"
curl -s --no-progress-meter --parallel --parallel-max "$CONCURRENCY" -H 'Authorization: Bearer sk-test-bench' \
    -H 'Accept: application/json' -K "$WORK/curl.cfg" 2>/dev/null
base_ms=$((($(date +%s%N) - start_ns) / 1000000))

echo "health_check_round: $cold_n services, ${LATENCY_MS} ms upstream latency, $CONCURRENCY probes in flight"
echo "  first round (new connections):   ${cold_ms} ms, $cold_failed failed"
echo "  second round (kept connections): ${warm_ms} ms, $warm_failed failed"
echo "  Ready after the rounds:          $ready of $SERVICES"
echo "  baseline, curl --parallel:       ${base_ms} ms"
ratio="$(awk -v a="$cold_ms" -v b="$base_ms" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
verdict=FAIL
[ "$cold_ms" -lt "$TARGET_MS" ] && [ "$warm_ms" -lt "$TARGET_MS" ] && [ "$ready" = "$SERVICES" ] &&
    [ "$cold_n" = "$SERVICES" ] && verdict=PASS
cat >"$OUT" <<JSON
{"machine": "$(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GB",
 "services": $SERVICES, "upstream_latency_ms": $LATENCY_MS, "max_in_flight": $CONCURRENCY,
 "first_round_ms": $cold_ms, "second_round_ms": $warm_ms, "curl_parallel_ms": $base_ms,
 "first_round_over_curl": $ratio, "ready": $ready, "target_ms": $TARGET_MS}
JSON
echo "RESULT health_check_round: ${cold_ms} ms for $SERVICES services (${ratio}x curl --parallel; target < ${TARGET_MS} ms): $verdict"
[ "$verdict" = PASS ]
