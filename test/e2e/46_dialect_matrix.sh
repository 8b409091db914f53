#!/usr/bin/env bash
# Every caller dialect against a service of every protocol, streamed and not: the ledger's
# tokens, the rate-limit headers and 429s in each dialect. The checks are in
# node/dialect_matrix.mjs.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/gateway.sh"

gateway_setup_services || exit 1
(cd "$ROOT/test/e2e/node" && GATEWAY_URL="$GATEWAY_URL" PG_DIR="$PG_DIR" PG_PORT="$PG_PORT" \
    node dialect_matrix.mjs) | tee -a "$RESULTS" || fail "dialect matrix: node/dialect_matrix.mjs ran to its end"
psql_gw -c "DELETE FROM inference.access_key_store WHERE name LIKE 'mx-%'" >/dev/null
