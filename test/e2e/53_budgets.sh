#!/usr/bin/env bash
# Budgets in money: exact under concurrency across both listeners, for a key and for a tenant,
# alerts by NOTIFY and renewal in a new period. The checks themselves are in node/budgets.mjs.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/gateway.sh"

gateway_setup_services || exit 1
psql_gw >/dev/null <<SQL || exit 1
SELECT inference.register_external_service('bud-chat', 'gpt-4o-mini', '$MOCK_URL/s/bud',
                                          api_key => 'sk-test-gw-openai')
 WHERE NOT EXISTS (SELECT 1 FROM inference.services s WHERE s.name = 'bud-chat');
-- A rerun on the same cluster starts from scratch.
DELETE FROM inference.access_key_store WHERE name LIKE 'bud-%';
DELETE FROM inference.tenant_limit_store WHERE tenant LIKE 'bud-%';
DELETE FROM inference.usage_ledger WHERE key_name LIKE 'bud-%';
SQL

export PG_DIR PG_PORT GATEWAY_URL
(cd "$ROOT/test/e2e/node" && node budgets.mjs) | tee -a "$RESULTS"

psql_gw -q -c "ALTER SYSTEM RESET inference.budget_clock_offset" -c "SELECT pg_reload_conf()" >/dev/null
psql_gw -q -c "DELETE FROM inference.access_key_store WHERE name LIKE 'bud-%'" \
    -c "DELETE FROM inference.tenant_limit_store WHERE tenant LIKE 'bud-%'" >/dev/null
