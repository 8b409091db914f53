#!/usr/bin/env bash
# Pipelines: embeddings that keep themselves up to date through random changes, upstream
# outages, a kill -9 and a restart (the checks are in node/pipelines.mjs), on a cluster of its
# own, since the test kills and restarts it.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/cluster.sh"
source "$ROOT/test/lib/check.sh"
source "$ROOT/test/lib/mock.sh"

DIR="$TEST_WORK/pipelines"
PORT="$(free_port $((PG_PORT + 7)) "$PG_PORT")"
trap 'cluster_stop "$DIR"' EXIT
cluster_start "$DIR" "$PORT" "inference.gateway_port = 0" || { fail "the pipelines' cluster starts"; exit 1; }
export PG_DIR="$DIR" PG_PORT="$PORT" PG_BINDIR
cluster_psql "$DIR" "$PORT" -d postgres -q >/dev/null <<SQL || { fail "the pipelines' tables are made"; exit 1; }
CREATE EXTENSION pg_inference;
SELECT inference.register_external_service('pl-embed', 'text-embedding-3-small', '$MOCK_URL/s/pl',
                                          api_key => 'sk-test-gw-openai', validate => false);
CREATE TABLE pl_docs (id int PRIMARY KEY, title text NOT NULL, body text NOT NULL,
                      other int NOT NULL, emb real[]);
CREATE TABLE pl_notes (id bigint PRIMARY KEY, note text NOT NULL);
SQL
psql_pl() { cluster_psql "$DIR" "$PORT" -d postgres "$@"; }
# The default pool, whose workers split every queue between them; the property test runs on it.
for _ in $(seq 1 50); do
    n="$(psql_pl -At -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_inference pipeline worker'")"
    [ "$n" = 2 ] && break
    sleep 0.1
done
check_eq "inference.pipeline_workers (2) pipeline workers run" 2 "$n"
(cd "$ROOT/test/e2e/node" && node pipelines.mjs) | tee -a "$RESULTS"
# pgvector's vector as the destination, where pgvector is installed (it is not in Debian 12).
if [ -n "$(psql_pl -At -c "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")" ]; then
    psql_pl -q >/dev/null <<'SQL'
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE pl_vec (id int PRIMARY KEY, body text NOT NULL, emb vector(8));
INSERT INTO pl_vec VALUES (1, 'one vector', NULL), (2, 'two vectors', NULL);
SELECT name FROM inference.create_pipeline('pl_vec_emb', 'pl_vec', 'body', 'pl-embed', destination => 'emb');
SQL
    for _ in $(seq 1 100); do
        [ "$(psql_pl -At -c "SELECT count(*) FROM pl_vec WHERE emb IS NOT NULL")" = 2 ] && break
        sleep 0.1
    done
    check_eq "a vector column gets the embedding of its row's input" "t" \
        "$(psql_pl -At -c "SELECT bool_and(emb = inference.encode_text('pl-embed', body)::vector) FROM pl_vec")"
else
    echo "SKIP pgvector is not installed here: the vector destination is tested where it exists"
fi

check_not_contains "no pipeline worker error in the server log" "pipeline worker stopped" \
    "$(cat "$DIR/server.log")"
check_not_contains "no process of the server crashed" "terminated by signal 11" \
    "$(cat "$DIR/server.log")"
