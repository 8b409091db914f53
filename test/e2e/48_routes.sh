#!/usr/bin/env bash
# Routes through the gateway's listeners and from SQL, with the breakers in shared memory. The
# checks are in node/routes.mjs; this script creates the services, routes and key it uses.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/gateway.sh"

gateway_setup_services || exit 1
psql_gw -v ON_ERROR_STOP=1 >/dev/null <<SQL || { fail "routes: the services and routes are created"; exit 0; }
SELECT inference.register_external_service(n, m, '$MOCK_URL/s/' || l, api_key => k, protocol => p)
  FROM (VALUES
        ('rt-claude', 'claude-sonnet-4-5', 'rtcl', 'sk-test-rt', 'ANTHROPIC_V1'),
        ('rt-openai', 'gpt-4o-mini', 'rtoa', 'sk-test-rt', 'OPENAI_V1'),
        ('rt-openai2', 'gpt-4o-mini', 'rtoa2', 'sk-test-rt', 'OPENAI_V1'),
        ('rt-pa', 'gpt-4o-mini', 'rtpa', 'sk-test-rt', 'OPENAI_V1'),
        ('rt-hw', 'gpt-4o-mini', 'rthw', 'sk-test-rt', 'OPENAI_V1'),
        ('rt-sdown', 'gpt-4o-mini', 'rtsd', 'sk-test-rt', 'OPENAI_V1'),
        ('rt-mid', 'gpt-4o-mini', 'rtmid', 'sk-test-rt', 'OPENAI_V1'),
        ('rt-w1', 'gpt-4o-mini', 'rtw1', 'sk-test-rt', 'OPENAI_V1'),
        ('rt-w2', 'gpt-4o-mini', 'rtw2', 'sk-test-rt', 'OPENAI_V1')) AS v(n, m, l, k, p);
SELECT inference.create_route('rt-mixed',
    '[{"service": "rt-claude"}, {"service": "rt-openai", "priority": 2}]');
SELECT inference.create_route('rt-probe',
    '[{"service": "rt-pa"}, {"service": "rt-openai", "priority": 2}]', cooldown => '2 seconds');
SELECT inference.create_route('rt-health',
    '[{"service": "rt-hw"}, {"service": "rt-openai", "priority": 2}]');
SELECT inference.create_route('rt-stream',
    '[{"service": "rt-sdown"}, {"service": "rt-openai", "priority": 2}]');
SELECT inference.create_route('rt-midway',
    '[{"service": "rt-mid"}, {"service": "rt-openai2", "priority": 2}]');
SELECT inference.create_route('rt-weights',
    '[{"service": "rt-w1", "weight": 3}, {"service": "rt-w2", "weight": 1}]');
SQL
# No retries: each request makes one try per target, so the mock's log counts requests.
psql_gw -c "ALTER SYSTEM SET inference.max_retries = 0" -c "SELECT pg_reload_conf()" >/dev/null
KEY="$(psql_gw -At -c "SELECT inference.create_access_key('rt-tests')")"
wait_for_key "$KEY" || { fail "routes: the new key reaches the gateway"; exit 0; }

(cd "$ROOT/test/e2e/node" && GATEWAY_URL="$GATEWAY_URL" GATEWAY_KEY="$KEY" MOCK_URL="$MOCK_URL" \
    PG_DIR="$PG_DIR" PG_PORT="$PG_PORT" timeout 300 node routes.mjs) | tee -a "$RESULTS"

psql_gw -c "ALTER SYSTEM RESET inference.max_retries" -c "SELECT pg_reload_conf()" >/dev/null
psql_gw >/dev/null <<'SQL'
SELECT inference.revoke_access_key('rt-tests');
DELETE FROM inference.access_key_store WHERE name = 'rt-tests';
SELECT inference.drop_route(name) FROM inference.routes WHERE name LIKE 'rt-%';
SELECT inference.deregister_external_service(name) FROM inference.services WHERE name LIKE 'rt-%';
SQL
