#!/usr/bin/env bash
# Read-your-writes for access keys: the request sent right after create_access_key (or
# rotate_access_key, or revoke_access_key) has committed is served accordingly, by whichever
# listener takes it, without waiting for the listeners' next reload tick.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/gateway.sh"

gateway_setup_services || exit 1
psql_gw -q -c "DELETE FROM inference.access_key_store WHERE name LIKE 'ryw-%'" >/dev/null
models() { gw_status -m 5 -H "Authorization: Bearer $1" "$GATEWAY_URL/v1/models"; }

N=100
ok=0 codes=""
for i in $(seq 1 $N); do
    key="$(psql_gw -At -c "SELECT inference.create_access_key('ryw-$i')")"
    code="$(models "$key")"
    [ "$code" = 200 ] && ok=$((ok + 1)) || codes="$codes $code"
done
check_eq "a key is served by the request right after create_access_key ($ok of $N;$codes)" "$N" "$ok"

old="$(psql_gw -At -c "SELECT inference.create_access_key('ryw-rotate')")"
new="$(psql_gw -At -c "SELECT inference.rotate_access_key('ryw-rotate')")"
check_eq "the new key works right after rotate_access_key" 200 "$(models "$new")"
check_eq "the old key is refused right after rotate_access_key" 401 "$(models "$old")"
psql_gw -q -c "SELECT inference.revoke_access_key('ryw-rotate')" >/dev/null
check_eq "a key is refused right after revoke_access_key" 401 "$(models "$new")"

psql_gw -q -c "DELETE FROM inference.access_key_store WHERE name LIKE 'ryw-%'" >/dev/null
