#!/usr/bin/env bash
# The upgrade from 0.1.0 as a user lives it, on a private copy of the PostgreSQL installation (so
# that the machine's own, which the other tests use, keeps this tree's library): 0.1.0's library
# and scripts, built from the release's sources in the repository's history, with services, an
# access key and usage in the ledger; then this tree's library and scripts installed over them
# and the server restarted; every function refuses until ALTER EXTENSION pg_inference UPDATE,
# after which everything is still there and works, and the catalog is that of a fresh install.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/cluster.sh"
source "$ROOT/test/lib/check.sh"
source "$ROOT/test/lib/mock.sh"

RELEASE_0_1_0=c21a785  # the commit released as 0.1.0
if ! git -C "$ROOT" cat-file -e "$RELEASE_0_1_0^{commit}" 2>/dev/null; then
    echo "SKIP the upgrade test needs the repository's history (a git clone) to build 0.1.0"
    exit 0
fi
W="$TEST_WORK/upgrade"
D="$W/pg"
mkdir -p "$W/src-0.1.0"

# 0.1.0's library and scripts (unoptimised: it only has to run).
git -C "$ROOT" archive "$RELEASE_0_1_0" | tar -x -C "$W/src-0.1.0"
if ! (cd "$W/src-0.1.0" && make -s -j2 CXXFLAGS="-O0 -g0" >"$W/build-0.1.0.log" 2>&1); then
    fail "0.1.0 builds from the history" "$(grep -m3 error "$W/build-0.1.0.log")"
    exit 0
fi

# The private installation: its own bin (PostgreSQL finds lib and share relative to it), links
# to everything else but the extension's files.
PGBIN="$(pg_config --bindir)" PGLIB="$(pg_config --pkglibdir)" PGSHARE="$(pg_config --sharedir)"
TREE="$W/tree"
TB="$TREE$PGBIN"
# The cluster functions of test/lib/cluster.sh run the private installation's programs.
PG_BINDIR="$TB"
mkdir -p "$TREE$PGBIN" "$TREE$PGLIB" "$TREE$PGSHARE/extension"
cp -a "$PGBIN/." "$TB/"
for f in "$PGLIB"/*; do case "${f##*/}" in pg_inference*) ;; *) ln -s "$f" "$TREE$PGLIB/" ;; esac; done
for f in "$PGSHARE"/*; do [ "${f##*/}" = extension ] || ln -s "$f" "$TREE$PGSHARE/"; done
for f in "$PGSHARE"/extension/*; do
    case "${f##*/}" in pg_inference*) ;; *) ln -s "$f" "$TREE$PGSHARE/extension/" ;; esac
done
check_eq "the private installation finds its own extension directory" \
    "$TREE$PGSHARE" "$("$TB/pg_config" --sharedir)"
# install_from DIR: DIR's library, control file and scripts, as `make install` would put them.
install_from() {
    rm -f "$TREE$PGLIB/pg_inference.so" "$TREE$PGSHARE"/extension/pg_inference*
    cp "$1/pg_inference.so" "$TREE$PGLIB/"
    cp "$1/pg_inference.control" "$1"/sql/pg_inference--*.sql "$TREE$PGSHARE/extension/"
}

port="$(free_port "" "$PG_PORT" "$GATEWAY_PORT")"
gw_port="$(free_port "" "$PG_PORT" "$GATEWAY_PORT" "$port")"
GW="http://127.0.0.1:$gw_port"
trap 'cluster_stop "$D"' EXIT
q() { "$TB/psql" -X -At -v ON_ERROR_STOP=1 -h "$D" -p "$port" -U postgres -d "${DB:-postgres}" "$@" 2>&1; }
chat() { # KEY: one chat request through the gateway; its HTTP status
    curl -s -o /dev/null -w '%{http_code}' -m 10 -H "Authorization: Bearer $1" \
        -H 'Content-Type: application/json' "$GW/v1/chat/completions" \
        -d '{"model": "up-chat", "messages": [{"role": "user", "content": "hello across versions"}]}'
}
chat_ok() { [ "$(chat "$1")" = 200 ]; }
wait_for() { # SECONDS COMMAND...: until the command succeeds
    local n=$(($1 * 10))
    shift
    for _ in $(seq 1 "$n"); do "$@" && return 0; sleep 0.1; done
    return 1
}

# --- 0.1.0, in use ------------------------------------------------------------------------------
install_from "$W/src-0.1.0"
cluster_start "$D" "$port" "inference.gateway_port = $gw_port" ||
    { fail "the server starts with 0.1.0" "$(tail -5 "$D/server.log")"; exit 0; }
q -c "CREATE EXTENSION pg_inference" >/dev/null
check_eq "0.1.0 is installed" "0.1.0" "$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_inference'")"
q >/dev/null <<SQL
SELECT name FROM inference.register_external_service('up-chat', 'gpt-4o-mini', '$MOCK_URL/s/up',
       api_key => 'sk-test-upgrade', functions => '{chat}');
SELECT name FROM inference.register_external_service('up-claude', 'claude-sonnet-4-5',
       '$MOCK_URL/s/upa', api_key => 'sk-test-upgrade', protocol => 'ANTHROPIC_V1',
       functions => '{chat}');
SQL
key="$(q -c "SELECT inference.create_access_key('up-app', requests_per_minute => 600)")"
# 0.1.0's listeners take up to a reload tick to learn a new key.
served=0
for _ in 1 2 3; do wait_for 5 chat_ok "$key" && served=$((served + 1)); done
check_eq "0.1.0's gateway serves the key" 3 "$served"
ledger() { q -c "SELECT coalesce(sum(requests), 0) FROM inference.usage WHERE key_name = 'up-app' AND service = 'up-chat'"; }
ledger_above() { [ "$(ledger)" -gt "$1" ]; }
wait_for 10 ledger_above 2
before="$(ledger)"
check "0.1.0's ledger holds the requests ($before)" test "$before" -ge 3
services_before="$(q -c "SELECT string_agg(name || ':' || protocol, ',' ORDER BY name) FROM inference.list_models()")"
cluster_stop "$D"

# --- this tree's library over it ------------------------------------------------------------------
install_from "$ROOT"
cluster_pg_ctl "$D" start ||
    { fail "the server starts with the new library" "$(tail -5 "$D/server.log")"; exit 0; }
out="$(q -c "SELECT name FROM inference.list_models()")"
check_contains "before the update, a function refuses" "extension in this database is at version 0.1.0" "$out"
check_contains "with a hint saying what to run" "Run ALTER EXTENSION pg_inference UPDATE" "$out"
check_contains "the workers wait for the update, and say so" "waiting for ALTER EXTENSION pg_inference UPDATE" \
    "$(cat "$D/server.log")"
waiting_gateway() {
    curl -s -m 10 -w ' %{http_code}' -H "Authorization: Bearer $key" "$GW/v1/models" |
        grep -q 'until ALTER EXTENSION pg_inference UPDATE.* 503$'
}
check "the gateway answers 503, saying it waits for the update" wait_for 10 waiting_gateway
check "ALTER EXTENSION pg_inference UPDATE" q -c "ALTER EXTENSION pg_inference UPDATE"
check_eq "the extension and its library are at 0.2.0" "0.2.0|0.2.0" \
    "$(q -c "SELECT extversion, inference.version() FROM pg_extension WHERE extname = 'pg_inference'")"
check_eq "the services are still there" "$services_before" \
    "$(q -c "SELECT string_agg(name || ':' || protocol, ',' ORDER BY name) FROM inference.list_models()")"
check_eq "their sealed keys still open: a SQL call" "echo: after the upgrade" \
    "$(q -c "SELECT inference.chat('up-chat', 'after the upgrade')")"
check "the access key made under 0.1.0 still works at the gateway" wait_for 10 chat_ok "$key"
check "the ledger kept its rows and counts on (from $before)" wait_for 10 ledger_above "$before"
check "what 0.2.0 adds works on the upgraded catalog" q -c \
    "SELECT inference.create_route('up-route', '[{\"service\": \"up-chat\"}, {\"service\": \"up-claude\"}]');
     SELECT inference.set_price('up-chat', 1, 2);
     SELECT inference.update_access_key('up-app', budget => 10)"

# --- the catalog equals a fresh install's -------------------------------------------------------
q -c "CREATE DATABASE fresh" >/dev/null
DB=fresh q -c "CREATE EXTENSION pg_inference" >/dev/null
# pg_dump leaves an extension's objects out: both databases detach them from the extension first.
detach() {
    DB="$1" q -c "SELECT format('ALTER EXTENSION pg_inference DROP %s %s;',
                         CASE o.type WHEN 'composite type' THEN 'type' ELSE o.type END, o.identity)
                    FROM pg_depend d, pg_identify_object(d.classid, d.objid, d.objsubid) o
                   WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                     AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_inference')" |
        DB="$1" q >/dev/null
}
schema() { # DB: its schema, modulo order
    "$TB/pg_dump" -h "$D" -p "$port" -U postgres --schema-only --no-comments "$1" |
        grep -vE '^(--|SET |SELECT pg_catalog\.set_config|\\(un)?restrict |$)' | sed -e 's/,$//' | sort
}
detach postgres
detach fresh
upgraded="$(schema postgres)"
fresh="$(schema fresh)"
check "the upgraded catalog was dumped ($(echo "$upgraded" | wc -l) lines)" test "$(echo "$upgraded" | wc -l)" -gt 500
if [ "$upgraded" = "$fresh" ]; then
    pass "the upgraded catalog equals a fresh 0.2.0 install's (pg_dump --schema-only, modulo order)"
else
    fail "the upgraded catalog equals a fresh 0.2.0 install's (pg_dump --schema-only, modulo order)" \
        "$(diff <(echo "$upgraded") <(echo "$fresh") | head -20)"
fi
check_not_contains "nothing crashed" "terminated by signal" "$(cat "$D/server.log")"
