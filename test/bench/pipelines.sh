#!/usr/bin/env bash
# Benchmark of pipelines: rows embedded per second by a pipeline against (a) the per-row path,
# UPDATE ... SET emb = inference.encode_text(...), and (b) the same worker held to pgai's
# vectorizer defaults (batch 50, one request in flight: one worker, inference.max_concurrency 1),
# with the mock upstream answering every request after 20 ms; and the lag of a pipeline after a burst of 10,000 inserts. All measured in
# one run on one cluster. Targets: pipeline >= 20 x (a), >= 5 x (b), lag < 5 s.
# BENCH_ROWS (default 100000) rows for the pipeline, BENCH_ROWS_PGAI (20000) for (b),
# BENCH_ROWS_PER_ROW (300) for (a). Writes JSON to $BENCH_OUT.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
source test/bench/prepare.sh

WORK="$(cluster_workdir pgi-bench)"
PG_PORT="$(free_port 25790)"
MOCK_PORT="$(free_port 18790 "$PG_PORT")"
MOCK_TLS_PORT="$(free_port 18791 "$PG_PORT" "$MOCK_PORT")"
ROWS="${BENCH_ROWS:-100000}" ROWS_PGAI="${BENCH_ROWS_PGAI:-20000}" ROWS_PER_ROW="${BENCH_ROWS_PER_ROW:-300}"
OUT="${BENCH_OUT:-$ROOT/test/bench/results/pipelines.json}"
mkdir -p "$(dirname "$OUT")"
stop_all() {
    cluster_stop "$WORK/pg"
    mock_stop
    rm -rf "$WORK"
}
trap stop_all EXIT

mock_start "$WORK" "$MOCK_PORT" "$MOCK_TLS_PORT" --latency-ms 20 --max-records 1
cluster_start "$WORK/pg" "$PG_PORT" "inference.gateway_port = 0" "log_min_messages = warning"
psql_b() { cluster_psql "$WORK/pg" "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 "$@"; }
psql_b -q >/dev/null <<SQL
CREATE EXTENSION pg_inference;
SELECT inference.register_external_service('bench-embed', 'text-embedding-3-small',
       'http://127.0.0.1:$MOCK_PORT', api_key => 'sk-test-bench', validate => false);
SQL

now() { date +%s.%N; }
# make TABLE N: a table of N rows of distinct sentences.
make_table() {
    psql_b -q -c "CREATE TABLE $1 (id bigint PRIMARY KEY, body text NOT NULL, emb real[])" \
        -c "INSERT INTO $1 SELECT i, 'sentence number ' || i || ' about ' || md5(i::text)
              FROM generate_series(1, $2) i"
}
# drain PIPELINE: waits until its queue is empty; prints the seconds it took.
drain() {
    local t0 n
    t0="$(now)"
    for _ in $(seq 1 6000); do
        n="$(psql_b -At -c "SELECT queued FROM inference.pipelines WHERE name = '$1'")"
        [ "$n" = 0 ] && break
        sleep 0.05
    done
    echo "$(now) - $t0" | bc
}
# The CPU time of the pool of pipeline workers, in clock ticks.
worker_ticks() {
    local pid total=0
    for pid in $(psql_b -At -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_inference pipeline worker'"); do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}

# (a) The per-row path.
make_table per_row "$ROWS_PER_ROW"
t0="$(now)"
psql_b -q -c "UPDATE per_row SET emb = inference.encode_text('bench-embed', body)"
per_row_s="$(echo "$(now) - $t0" | bc)"
per_row_rps="$(echo "$ROWS_PER_ROW / $per_row_s" | bc -l)"
echo "per-row UPDATE: $ROWS_PER_ROW rows in $per_row_s s"

# The pipeline with its defaults, on ROWS rows queued by the backfill.
make_table docs "$ROWS"
ticks0="$(worker_ticks)"
psql_b -q -c "SELECT name FROM inference.create_pipeline('docs_emb', 'docs', 'body', 'bench-embed', destination => 'emb')" >/dev/null
pipe_s="$(drain docs_emb)"
ticks1="$(worker_ticks)"
pipe_rps="$(echo "$ROWS / $pipe_s" | bc -l)"
cpu_us="$(echo "($ticks1 - $ticks0) * 1000000 / $(getconf CLK_TCK) / $ROWS" | bc -l)"
missing="$(psql_b -At -c "SELECT count(*) FROM docs WHERE emb IS NULL")"
echo "pipeline: $ROWS rows in $pipe_s s, worker CPU $(printf '%.1f' "$cpu_us") us a row, $missing left without an embedding"

# Lag after a burst of 10,000 inserts.
t0="$(now)"
psql_b -q -c "INSERT INTO docs SELECT i, 'burst sentence ' || i FROM generate_series($ROWS + 1, $ROWS + 10000) i"
drain docs_emb >/dev/null
lag_s="$(echo "$(now) - $t0" | bc)"
echo "burst of 10,000 inserts: drained $lag_s s after the insert began"

# (b) pgai's defaults: batch 50, one request in flight, one worker.
make_table pgai "$ROWS_PGAI"
psql_b -q -c "ALTER SYSTEM SET inference.max_concurrency = 1" \
    -c "ALTER SYSTEM SET inference.pipeline_workers = 1" >/dev/null
cluster_pg_ctl "$WORK/pg" restart
psql_b -q -c "SELECT name FROM inference.create_pipeline('pgai_emb', 'pgai', 'body', 'bench-embed', destination => 'emb', batch_size => 50)" >/dev/null
pgai_s="$(drain pgai_emb)"
pgai_rps="$(echo "$ROWS_PGAI / $pgai_s" | bc -l)"
echo "pgai defaults: $ROWS_PGAI rows in $pgai_s s"

vs_row="$(echo "$pipe_rps / $per_row_rps" | bc -l)"
vs_pgai="$(echo "$pipe_rps / $pgai_rps" | bc -l)"
verdict=PASS
awk -v a="$vs_row" -v b="$vs_pgai" -v l="$lag_s" -v m="$missing" \
    'BEGIN { exit !(a >= 20 && b >= 5 && l < 5 && m == 0) }' || verdict=FAIL
cat >"$OUT" <<JSON
{
  "benchmark": "pipelines",
  "mock_latency_ms": 20,
  "per_row": {"rows": $ROWS_PER_ROW, "seconds": $per_row_s, "rows_per_second": $(printf '%.1f' "$per_row_rps")},
  "pipeline": {"rows": $ROWS, "seconds": $pipe_s, "rows_per_second": $(printf '%.1f' "$pipe_rps"),
               "worker_cpu_us_per_row": $(printf '%.1f' "$cpu_us"), "rows_left_without_embedding": $missing},
  "pgai_defaults": {"rows": $ROWS_PGAI, "seconds": $pgai_s, "rows_per_second": $(printf '%.1f' "$pgai_rps")},
  "burst_10000_lag_seconds": $lag_s,
  "pipeline_vs_per_row": $(printf '%.2f' "$vs_row"),
  "pipeline_vs_pgai_defaults": $(printf '%.2f' "$vs_pgai"),
  "targets": "pipeline >= 20 x per-row, >= 5 x pgai defaults, lag < 5 s",
  "result": "$verdict"
}
JSON
printf 'per-row %.1f rows/s, pipeline %.1f rows/s, pgai defaults %.1f rows/s\n' "$per_row_rps" "$pipe_rps" "$pgai_rps"
printf 'RESULT pipelines: %.1f x per-row (target >= 20), %.1f x pgai defaults (target >= 5), lag %.2f s after 10,000 inserts (target < 5): %s\n' \
    "$vs_row" "$vs_pgai" "$lag_s" "$verdict"
[ "$verdict" = PASS ]
