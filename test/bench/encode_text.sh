#!/usr/bin/env bash
# Benchmark of the SQL embedding path, in one run against the mock upstream:
#   1. throughput of encode_text_batch (10,000 texts) versus one encode_text call per row
#      (1,000 rows), with a mock that answers after a fixed 20 ms;
#   2. the added cost of one encode_text over a bare curl request on a kept-alive connection,
#      with a mock that answers at once.
# Prints the numbers and ratios, and writes them as JSON to $BENCH_OUT (default
# test/bench/results/encode_text.json). Starts its own cluster and mocks, stops them by pid.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
source test/bench/prepare.sh

WORK="$(cluster_workdir pgi-bench)"
PG_DIR="$WORK/pg" PG_PORT=25781
SLOW_PORT=18781 FAST_PORT=18783
OUT="${BENCH_OUT:-$ROOT/test/bench/results/encode_text.json}"
mkdir -p "$(dirname "$OUT")"

SLOW_PID="" FAST_PID=""
stop_all() {
    cluster_stop "$PG_DIR"
    MOCK_PID="$SLOW_PID" mock_stop
    MOCK_PID="$FAST_PID" mock_stop
    rm -rf "$WORK"
}
trap stop_all EXIT

mkdir -p "$WORK/slow" "$WORK/fast"
mock_start "$WORK/slow" "$SLOW_PORT" $((SLOW_PORT + 1)) --latency-ms 20
SLOW_PID="$MOCK_PID"
mock_start "$WORK/fast" "$FAST_PORT" $((FAST_PORT + 1)) --latency-ms 0
FAST_PID="$MOCK_PID"
cluster_start "$PG_DIR" "$PG_PORT"
psql_() { cluster_psql "$PG_DIR" "$PG_PORT" "$@"; }

psql_ >/dev/null <<SQL
CREATE EXTENSION pg_inference;
SELECT inference.register_external_service('slow20', 'text-embedding-3-small',
       'http://127.0.0.1:$SLOW_PORT', api_key => 'sk-test-bench');
SELECT inference.register_external_service('fast0', 'text-embedding-3-small',
       'http://127.0.0.1:$FAST_PORT', api_key => 'sk-test-bench');
SQL

# Runs a statement inside a DO block and prints its elapsed milliseconds.
elapsed_ms() {
    psql_ -c "DO \$\$ DECLARE t0 timestamptz := clock_timestamp(); n bigint; BEGIN
                $1;
                RAISE NOTICE 'elapsed_ms=%', round(extract(epoch FROM clock_timestamp() - t0) * 1000, 3);
              END \$\$" 2>&1 | sed -n 's/.*elapsed_ms=//p'
}

echo "== warm-up"
elapsed_ms "SELECT count(*) INTO n FROM generate_series(1, 50) i, LATERAL inference.encode_text('fast0', 'warm ' || i) e" >/dev/null
elapsed_ms "SELECT count(*) INTO n FROM inference.encode_text_batch('slow20', ARRAY(SELECT 'warm ' || i FROM generate_series(1, 500) i))" >/dev/null

echo "== 1. batch versus per row, mock latency 20 ms"
batch_ms="$(elapsed_ms "SELECT count(*) INTO n FROM inference.encode_text_batch('slow20', ARRAY(SELECT 'text ' || i FROM generate_series(1, 10000) i))")"
row_ms="$(elapsed_ms "SELECT count(*) INTO n FROM generate_series(1, 1000) i, LATERAL inference.encode_text('slow20', 'text ' || i) e")"
batch_tps="$(echo "10000 / ($batch_ms / 1000)" | bc -l)"
row_tps="$(echo "1000 / ($row_ms / 1000)" | bc -l)"
ratio="$(echo "$batch_tps / $row_tps" | bc -l)"
printf '   encode_text_batch: 10000 texts in %.0f ms = %.0f texts/s\n' "$batch_ms" "$batch_tps"
printf '   encode_text/row:    1000 texts in %.0f ms = %.1f texts/s\n' "$row_ms" "$row_tps"
printf '   ratio: %.1fx (target >= 50x)\n' "$ratio"

echo "== 2. added cost of one encode_text, mock latency 0 ms"
N=2000
body='{"model":"text-embedding-3-small","input":["text 1"],"encoding_format":"base64"}'
{
    for i in $(seq 1 $N); do
        printf 'url = "http://127.0.0.1:%s/v1/embeddings"\n' "$FAST_PORT"
        printf 'header = "Authorization: Bearer sk-test-bench"\nheader = "Content-Type: application/json"\n'
        printf "data = \"%s\"\n" "${body//\"/\\\"}"
        printf 'output = "/dev/null"\n'
        [ "$i" -lt $N ] && printf 'next\n'
    done
} >"$WORK/curl.cfg"
curl -s -K "$WORK/curl.cfg" >/dev/null # warm-up
t0="$(date +%s%N)"
curl -s -K "$WORK/curl.cfg" >/dev/null
t1="$(date +%s%N)"
curl_ms="$(echo "($t1 - $t0) / 1000000" | bc -l)"
sql_ms="$(elapsed_ms "SELECT count(*) INTO n FROM generate_series(1, $N) i, LATERAL inference.encode_text('fast0', 'text ' || i) e")"
per_curl="$(echo "$curl_ms / $N" | bc -l)"
per_sql="$(echo "$sql_ms / $N" | bc -l)"
added="$(echo "$per_sql - $per_curl" | bc -l)"
printf '   bare curl, one kept-alive connection: %.3f ms per request\n' "$per_curl"
printf '   encode_text per row:                  %.3f ms per call\n' "$per_sql"
printf '   added per call: %.3f ms (target < 0.5 ms)\n' "$added"

cat >"$OUT" <<JSON
{"machine": "$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB",
 "batch_10000_ms": $batch_ms, "per_row_1000_ms": $row_ms,
 "batch_texts_per_s": $(printf '%.1f' "$batch_tps"), "per_row_texts_per_s": $(printf '%.2f' "$row_tps"),
 "batch_over_per_row": $(printf '%.2f' "$ratio"),
 "curl_ms_per_request": $(printf '%.4f' "$per_curl"), "encode_text_ms_per_call": $(printf '%.4f' "$per_sql"),
 "added_ms_per_call": $(printf '%.4f' "$added")}
JSON
echo "== written $OUT"
