#!/usr/bin/env bash
# Gateway governance: per-key limits enforced across both listeners, token budgets
# counted from streams of all three protocols, the usage ledger (exact, and complete after a
# clean restart) and /metrics. The checks themselves are in node/governance.mjs.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/gateway.sh"

gateway_setup_services || exit 1
psql_gw >/dev/null <<SQL || exit 1
SELECT inference.register_external_service(n, 'gpt-4o-mini', '$MOCK_URL/s/' || l,
                                          api_key => 'sk-test-gw-openai', validate => false)
  FROM (VALUES ('gov-err', 'server_error'), ('gov-404', 'not_found'),
               ('gov-broken-stream', 'stream_error'), ('gov-slow', 'slow:1500')) AS v(n, l)
 WHERE NOT EXISTS (SELECT 1 FROM inference.services s WHERE s.name = v.n);
-- A rerun on the same cluster starts from scratch.
DELETE FROM inference.access_key_store WHERE name LIKE 'gov-%';
DELETE FROM inference.tenant_limit_store WHERE tenant LIKE 'gov-%';
DELETE FROM inference.usage_ledger WHERE key_name LIKE 'gov-%' OR key_name LIKE 'role:gov_%';
-- The role whose SQL calls are counted under role:gov_sql_caller.
DO \$\$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gov_sql_caller') THEN
        CREATE ROLE gov_sql_caller;
    END IF;
END \$\$;
GRANT inference_user TO gov_sql_caller;
SQL

# While the flush interval is an hour, usage stays in shared memory: the restart below must
# flush all of it. The listeners pick the setting up at their next tick.
psql_gw -c "ALTER SYSTEM SET inference.gateway_usage_flush_interval = '1h'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5

export GOV_STATE="$TEST_WORK/governance.json" PG_DIR PG_PORT GATEWAY_URL
(cd "$ROOT/test/e2e/node" && node governance.mjs run) | tee -a "$RESULTS"

# A clean restart (pg_ctl's default fast mode: SIGTERM to every listener).
check "the server restarts cleanly (fast shutdown)" cluster_pg_ctl "$PG_DIR" restart
psql_gw -c "ALTER SYSTEM RESET inference.gateway_usage_flush_interval" -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 1 50); do [ "$(gw_status "$GATEWAY_URL/health")" = 200 ] && break; sleep 0.1; done
if [ -s "$GOV_STATE" ]; then
    (cd "$ROOT/test/e2e/node" && node governance.mjs verify) | tee -a "$RESULTS"
else
    fail "the run phase left its predictions for the restart check"
fi
check_not_contains "no listener failed to flush at exit" "could not flush usage" "$(cat "$PG_DIR/server.log")"

psql_gw -c "SELECT inference.revoke_access_key(name) FROM inference.access_keys
             WHERE name LIKE 'gov-%' AND revoked_at IS NULL" >/dev/null
