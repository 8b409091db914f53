#!/usr/bin/env bash
# make installcheck, the PGXS habit, against a plain cluster started as the README says: initdb
# with nothing but the defaults, then the README's two lines (the server as the postgres user,
# as PostgreSQL requires; make as whoever runs the tests).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/cluster.sh"
source "$ROOT/test/lib/check.sh"
source "$ROOT/test/lib/mock.sh"

DIR="$TEST_WORK/installcheck"
mkdir -p "$DIR"
[ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
export PGDATA="$DIR/data"
as_pg "$PG_BINDIR/initdb" -D "$PGDATA" -U postgres -A trust >"$DIR/initdb.log" 2>&1 ||
    { fail "a plain cluster is made" "$(tail -3 "$DIR/initdb.log")"; exit 0; }
port="$(free_port "" "$PG_PORT" "$GATEWAY_PORT")"
gw_port="$(free_port "" "$PG_PORT" "$GATEWAY_PORT" "$port")"
# Only where it must differ from the defaults: a free port and socket directory, and the gateway
# on a free port, so that the run shares the machine.
printf "port = %s\nunix_socket_directories = '%s'\ninference.gateway_port = %s\n" "$port" "$DIR" "$gw_port" |
    as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
trap 'cluster_stop "$DIR"' EXIT

block="$(awk '/^```bash/ { b = ""; inb = 1; next } /^```/ { if (inb && b ~ /make installcheck/) print b; inb = 0; next }
               inb { b = b $0 "\n" }' "$ROOT/README.md")"
start_line="$(echo "$block" | grep 'pg_ctl')"
check_contains "the README says how to start the server for make installcheck" "shared_preload_libraries=pg_inference" "$start_line"
check_contains "and to run make installcheck" "make installcheck" "$block"
(cd "$DIR" && as_pg env PGDATA="$PGDATA" bash -c "$start_line") >"$DIR/start.log" 2>&1
check "the server starts as the README says" as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" status
check_installcheck "make installcheck passes every file against it" "$DIR" "$port"
check_not_contains "nothing crashed" "terminated by signal" "$(cat "$PGDATA/server.log" 2>/dev/null)"
