#!/usr/bin/env bash
# The official openai, Anthropic and Google Gen AI npm SDKs (installed from the committed
# lockfile) against the gateway.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/gateway.sh"

gateway_setup_services || exit 1
KEY="$(psql_gw -At -c "SELECT inference.create_access_key('sdk-tests')")"
LIMITED_KEY="$(psql_gw -At -c "SELECT inference.create_access_key('sdk-limited', requests_per_minute => 1, burst => 1)")"
wait_for_key "$KEY" || { fail "the new key reaches the gateway"; exit 0; }
wait_for_key "$LIMITED_KEY" || { fail "the limited key reaches the gateway"; exit 0; }

(cd "$ROOT/test/e2e/node" && GATEWAY_URL="$GATEWAY_URL" GATEWAY_KEY="$KEY" MOCK_URL="$MOCK_URL" \
    node gateway_sdk.mjs) | tee -a "$RESULTS"
(cd "$ROOT/test/e2e/node" && GATEWAY_URL="$GATEWAY_URL" GATEWAY_KEY="$KEY" MOCK_URL="$MOCK_URL" \
    node responses_sdk.mjs) | tee -a "$RESULTS"
(cd "$ROOT/test/e2e/node" && GATEWAY_URL="$GATEWAY_URL" GATEWAY_KEY="$KEY" MOCK_URL="$MOCK_URL" \
    LIMITED_KEY="$LIMITED_KEY" node anthropic_sdk.mjs) | tee -a "$RESULTS"
(cd "$ROOT/test/e2e/node" && GATEWAY_URL="$GATEWAY_URL" GATEWAY_KEY="$KEY" MOCK_URL="$MOCK_URL" \
    node gemini_sdk.mjs) | tee -a "$RESULTS"
psql_gw -c "SELECT inference.revoke_access_key('sdk-tests'), inference.revoke_access_key('sdk-limited')" >/dev/null
