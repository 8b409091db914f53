#!/usr/bin/env bash
# pg_dump of a database with registered services, restored into a new database of the same
# cluster, gives back working services; and no registered key ever reaches the server log.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/cluster.sh"
source "$ROOT/test/lib/check.sh"
psql_() { cluster_psql "$PG_DIR" "$PG_PORT" "$@"; }

psql_ -c "DROP DATABASE IF EXISTS dump_src" -c "DROP DATABASE IF EXISTS dump_dst" \
    -c "CREATE DATABASE dump_src" -c "CREATE DATABASE dump_dst" || exit 1
psql_ -d dump_src <<SQL >/dev/null || exit 1
CREATE EXTENSION pg_inference;
SELECT inference.register_external_service('d-openai', 'gpt-4o-mini', '$MOCK_URL/s/dump1',
       api_key => 'sk-test-dump-openai', functions => '{chat}', tags => '{dump}');
SELECT inference.register_external_service('d-claude', 'claude-haiku-4-5', '$MOCK_URL/s/dump2',
       api_key => 'sk-test-dump-anthropic', protocol => 'ANTHROPIC_V1');
SELECT inference.register_external_service('d-gemini', 'text-embedding-004', '$MOCK_URL/s/dump3',
       api_key => 'sk-test-dump-gemini', protocol => 'GEMINI_V1_BETA');
SELECT inference.register_external_service('d-env', 'gpt-4o-mini', '$MOCK_URL/s/dump4',
       api_key => 'env:PGI_TEST_KEY_ENV');
SQL

dump="$TEST_WORK/dump_src.sql"
pg_dump -h "$PG_DIR" -p "$PG_PORT" -U postgres -d dump_src -f "$dump"
check "pg_dump writes a dump" test -s "$dump"
check_not_contains "the dump holds no plain key" "sk-test-dump" "$(cat "$dump")"
check_contains "the dump carries the services" "d-openai" "$(cat "$dump")"

psql_ -d dump_dst -f "$dump" >"$TEST_WORK/restore.log" 2>&1
check_eq "restore reports no error" "0" "$(grep -c ERROR "$TEST_WORK/restore.log")"

listing="$(psql_ -d dump_dst -At -c "SELECT name || ' ' || protocol || ' ' || has_api_key || ' ' || array_to_string(functions, ',')
                                      FROM inference.list_models() ORDER BY name")"
check_eq "restored services" "d-claude ANTHROPIC_V1 true 
d-env OPENAI_V1 true 
d-gemini GEMINI_V1_BETA true 
d-openai OPENAI_V1 true chat" "$listing"

status="$(psql_ -d dump_dst -At -c "SELECT string_agg(name || '=' || status, ' ' ORDER BY name) FROM inference.check_service()")"
check_eq "restored services are Ready" "d-claude=Ready d-env=Ready d-gemini=Ready d-openai=Ready" "$status"

# The restored keys are the ones sent upstream.
sent="$(curl -s "$MOCK_URL/_mock/requests?label=dump2" | node -e '
  const r = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(r[r.length - 1].headers["x-api-key"]);')"
check_eq "the restored Anthropic key reaches the upstream" "sk-test-dump-anthropic" "$sent"

psql_ -c "DROP DATABASE dump_src" -c "DROP DATABASE dump_dst" >/dev/null

# Every key this suite registered (all start with sk-test) stays out of the server log.
leaks="$(grep 'sk-test' "$PG_DIR/server.log" | head -3)"
check_eq "no key in the server log" "" "$leaks"
