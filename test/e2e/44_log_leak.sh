#!/usr/bin/env bash
# An upstream key written into SQL never reaches the server log, even through calls that fail
# before or outside the extension's code, where PostgreSQL itself quotes the statement:
#   - with log_min_error_statement at its default (error), failing calls: no privilege, a
#     misspelt named argument, a bad tags value, a wrong-typed argument, a syntax error elsewhere
#     in the statement, a syntax error quoting the key, an unterminated literal, inside a DO
#     block (a failing call and a syntax error) and inside a PL/pgSQL function;
#   - log_statement = 'all' and log_min_duration_statement = 0 (the "statement:" and "duration:"
#     lines), PREPARE/EXECUTE (EXECUTE's line quotes the prepared text), bound parameters over the
#     extended protocol (the "parameters: $1 = '...'" detail), auto_explain's nested plans.
# Each call carries a key of its own, and the whole server log is searched for it. The error
# itself is still logged, a statement that carries no key still gets its STATEMENT line, the
# extension's own errors keep their text, and api_key => 'env:NAME' keeps the secret out of SQL.
#
# Runs its own cluster on a free port (no upstream is ever reached: nothing validates), stopped
# by pid. Standalone it takes the suite's lock and prints "N passed, M failed".
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/standalone.sh"
standalone_lock
source "$ROOT/test/lib/cluster.sh"
source "$ROOT/test/lib/mock.sh"
source "$ROOT/test/lib/check.sh"

standalone_workdir log-leak
LL_WORK="$WORKDIR"

LL_PORT=""
for p in $(seq "${PGI_TEST_LL_PORT:-25471}" 25490); do
    port_is_free "$p" && { LL_PORT=$p; break; }
done
[ -n "$LL_PORT" ] || { fail "a free port for the log-leak cluster"; exit 1; }
LL_DIR="$LL_WORK/pg"
LOG="$LL_DIR/server.log"
trap 'cluster_stop "$LL_DIR"' EXIT

# The secret behind api_key => 'env:LL_ENV_KEY', in the server's environment only.
ENV_SECRET="ll-env-secret-$RANDOM$RANDOM"
LL_ENV_KEY="$ENV_SECRET" cluster_start "$LL_DIR" "$LL_PORT" "inference.gateway_port = 0" \
    "inference.health_check_interval = '1h'" "lc_messages = 'C'" || exit 1

# A session that goes on after an error, like an application; every call bounded.
q() { timeout 20 psql -X -q -h "$LL_DIR" -p "$LL_PORT" -d postgres "$@"; }
q -U postgres -v ON_ERROR_STOP=1 >/dev/null <<'SQL' || { fail "setup"; exit 1; }
CREATE EXTENSION pg_inference;
-- Not a member of inference_admin; it may look into the schema, not call its functions.
CREATE ROLE ll_outsider LOGIN;
GRANT USAGE ON SCHEMA inference TO ll_outsider;
SQL

URL="http://127.0.0.1:9"
# A key of its own for each call. Every key starts with sk-leak-, searched for at the end.
key() { echo "sk-leak-$1-$RANDOM$RANDOM"; }
lines() { wc -l <"$LOG"; }
since() { tail -n +"$(($1 + 1))" "$LOG"; }

# leak_case NAME KEY EXPECTED_LOG_TEXT psql-args...: runs the call, then the new log lines must
# hold the expected text (the error is not lost) and the whole log must not hold the key.
leak_case() {
    local name="$1" k="$2" expected="$3" before
    shift 3
    before="$(lines)"
    q "$@" >/dev/null 2>&1
    check_contains "$name: logged" "$expected" "$(since "$before")"
    check_eq "$name: the key is not in the server log" "0" "$(grep -cF -- "$k" "$LOG")"
}

call() { # KEY [more named arguments [name]]: a register call in SQL
    echo "SELECT inference.register_external_service(name => '${3:-ll-svc}', model => 'm', base_url => '$URL', api_key => '$1'${2:+, $2})"
}

# --- failing calls, log_min_error_statement at its default -------------------------------------
k="$(key denied)"
leak_case "no privilege" "$k" "ERROR:  permission denied for function register_external_service" \
    -U ll_outsider -c "$(call "$k")"

k="$(key misspelt)"
leak_case "misspelt named argument" "$k" "ERROR:  function inference.register_external_service(" \
    -U postgres -c "SELECT inference.register_external_service(name => 'x', model => 'm', base_url => '$URL', api_kye => '$k')"

k="$(key tags)"
leak_case "bad tags value" "$k" 'ERROR:  malformed array literal: "[redacted]"' \
    -U postgres -c "$(call "$k" "tags => 'team-a'")"

# The key in the wrong argument: PostgreSQL's own message quotes the value it refuses.
k="$(key slot)"
leak_case "key in the wrong argument" "$k" 'ERROR:  malformed array literal: "[redacted]"' \
    -U postgres -c "$(call "not-a-key" "tags => '$k'")"

k="$(key typed)"
leak_case "wrong-typed argument" "$k" 'ERROR:  invalid input syntax for type boolean: "[redacted]"' \
    -U postgres -c "$(call "$k" "allow_insecure => 'perhaps'")"

k="$(key syntax)"
leak_case "syntax error later in the statement" "$k" 'ERROR:  syntax error at or near "[redacted]"' \
    -U postgres -c "$(call "$k") FROM WHERE 1"

k="$(key token)"
leak_case "syntax error quoting the key" "$k" 'ERROR:  syntax error at or near "[redacted]"' \
    -U postgres -c "SELECT inference.register_external_service(name => 'x', model => 'm', base_url => '$URL', api_key => 'a' '$k')"

k="$(key unterminated)"
leak_case "unterminated literal" "$k" 'ERROR:  unterminated quoted string at or near "[redacted]"' \
    -U postgres -c "SELECT inference.register_external_service(name => 'x', api_key => '$k)"

k="$(key escape)"
leak_case "E'' literal and a bad argument" "$k" 'ERROR:  malformed array literal: "[redacted]"' \
    -U postgres -c "SELECT inference.update_external_service('ll-svc', api_key => E'$k\\'', functions => 'x')"

k="$(key do)"
leak_case "inside a DO block" "$k" "QUERY:  SELECT inference.register_external_service(name => '[redacted]'" \
    -U postgres -c "DO \$\$ BEGIN PERFORM $(call "$k" "tags => 'bad'" | sed 's/^SELECT //'); END \$\$"

# Failing at run time inside the extension: its own message stays readable, while the CONTEXT
# that quotes the caller's statement is scrubbed.
k="$(key doruntime)"
leak_case "inside a DO block, the extension's own error" "$k" "SQL statement \"SELECT inference.register_external_service(name => '[redacted]'" \
    -U postgres -c "DO \$\$ BEGIN PERFORM inference.register_external_service(name => 'll-do', model => 'm', base_url => '$URL/v1', api_key => '$k'); END \$\$"
check_contains "... with its message as raised" 'ERROR:  base URL "http://127.0.0.1:9/v1" must not end in "/v1"' \
    "$(tail -20 "$LOG")"

k="$(key dosyntax)"
leak_case "syntax error inside a DO block" "$k" "ERROR:  syntax error at or near" \
    -U postgres -c "DO \$body\$ BEGIN PERFORM inference.register_external_service(api_key => '$k',, ); END \$body\$"

k="$(key plpgsql)"
q -U postgres -c "CREATE FUNCTION ll_register() RETURNS void LANGUAGE plpgsql AS \$\$
BEGIN
    PERFORM $(call "$k" "tags => 'bad'" | sed 's/^SELECT //');
END \$\$" >/dev/null 2>&1
leak_case "inside a PL/pgSQL function" "$k" "PL/pgSQL function ll_register() line 3 at PERFORM" \
    -U postgres -c "SELECT ll_register()"

# --- statements logged as they run --------------------------------------------------------------
k="$(key logall)"
leak_case "log_statement = 'all'" "$k" "statement: SELECT inference.register_external_service(name => '[redacted]'" \
    -U postgres -c "SET log_statement = 'all'" -c "$(call "$k" "tags => 'bad'")"

k="$(key duration)"
leak_case "log_min_duration_statement = 0" "$k" "statement: SELECT inference.register_external_service(name => '[redacted]'" \
    -U postgres -c "SET log_min_duration_statement = 0" -c "$(call "$k" "validate => false" ll-duration)"
check_contains "log_min_duration_statement = 0: a duration line" "duration: " "$(tail -5 "$LOG")"

k="$(key prepared)"
leak_case "PREPARE / EXECUTE failing" "$k" 'ERROR:  invalid input syntax for type boolean: "[redacted]"' \
    -U postgres -c "PREPARE ll_reg(text, text) AS SELECT inference.register_external_service(name => 'll-p', model => 'm', base_url => '$URL', api_key => \$1, allow_insecure => \$2::boolean)" \
    -c "EXECUTE ll_reg('$k', 'perhaps')"

k="$(key execute)"
leak_case "PREPARE / EXECUTE with log_statement = 'all'" "$k" "statement: EXECUTE ll_reg('[redacted]'" \
    -U postgres -c "SET log_statement = 'all'" \
    -c "PREPARE ll_reg(text, text) AS SELECT inference.register_external_service(name => 'll-p', model => 'm', base_url => '$URL', api_key => \$1, tags => \$2::text[])" \
    -c "EXECUTE ll_reg('$k', 'bad')"

# Bound parameters over the extended protocol (pgbench sends :variables as $n): the call succeeds
# (validate => false), so log_statement logs "execute <unnamed>" with the values in DETAIL.
k="$(key bind)"
echo "SELECT inference.register_external_service(name => 'll-bound', model => 'm', base_url => :url, api_key => :key, validate => false)" \
    >"$LL_WORK/bind.sql"
before="$(lines)"
PGOPTIONS="-c log_statement=all" timeout 20 pgbench -n -M extended -t 1 -h "$LL_DIR" -p "$LL_PORT" \
    -U postgres -D key="$k" -D url="$URL" -f "$LL_WORK/bind.sql" postgres >/dev/null 2>&1
new="$(since "$before")"
check_contains "bound parameters: logged" "execute <unnamed>: SELECT inference.register_external_service(" "$new"
check_contains "bound parameters: values redacted" "parameters: \$1 = '[redacted]', \$2 = '[redacted]'" "$new"
check_eq "bound parameters: the key is not in the server log" "0" "$(grep -cF -- "$k" "$LOG")"

# auto_explain logs nested statements (the PL/pgSQL call's text) through the same hook.
k="$(key explain)"
q -U postgres -c "CREATE OR REPLACE FUNCTION ll_update() RETURNS void LANGUAGE plpgsql AS \$\$
BEGIN
    PERFORM $(call "$k" "validate => false" ll-explained | sed 's/^SELECT //');
END \$\$" >/dev/null 2>&1
leak_case "auto_explain of nested statements" "$k" "Query Text: SELECT inference.register_external_service(name => '[redacted]'" \
    -U postgres -c "LOAD 'auto_explain'" -c "SET auto_explain.log_min_duration = 0" \
    -c "SET auto_explain.log_nested_statements = on" -c "SELECT ll_update()"

# --- what must stay --------------------------------------------------------------------------
before="$(lines)"
q -U postgres -c "SELECT 1/0 AS ll_canary" >/dev/null 2>&1
check_contains "a statement without a key keeps its STATEMENT line" "STATEMENT:  SELECT 1/0 AS ll_canary" \
    "$(since "$before")"
before="$(lines)"
q -U postgres -c "SET log_statement = 'all'" -c "SELECT 'll-plain-literal' AS ll_canary" >/dev/null 2>&1
check_contains "a statement without a key is logged as written" "statement: SELECT 'll-plain-literal' AS ll_canary" \
    "$(since "$before")"

k="$(key dup)"
q -U postgres -c "$(call "$k" "validate => false")" >/dev/null 2>&1
leak_case "the extension's own error keeps its text" "$k" 'ERROR:  service "ll-svc" already exists' \
    -U postgres -c "$(call "$k" "validate => false")"
check_not_contains "... and no STATEMENT line" "STATEMENT:  SELECT inference.register_external_service(name => 'll-svc'" \
    "$(cat "$LOG")"

# --- the remedy: the key never in SQL ----------------------------------------------------------
before="$(lines)"
q -U postgres -c "SET log_statement = 'all'" \
    -c "SELECT inference.register_external_service(name => 'll-env', model => 'm', base_url => '$URL', api_key => 'env:LL_ENV_KEY', validate => false)" \
    -c "SELECT inference.register_external_service(name => 'll-env', model => 'm', base_url => '$URL', api_key => 'env:LL_ENV_KEY', tags => 'bad')" \
    >/dev/null 2>&1
check_eq "env:NAME registers" "t" \
    "$(q -U postgres -At -c "SELECT has_api_key FROM inference.list_models() WHERE name = 'll-env'")"
check_contains "env:NAME: the failing call is logged" 'ERROR:  malformed array literal: "[redacted]"' "$(since "$before")"
check_eq "env:NAME: the secret is nowhere in the server log" "0" "$(grep -cF -- "$ENV_SECRET" "$LOG")"

check_eq "no key of this script anywhere in the server log" "" "$(grep -F 'sk-leak-' "$LOG" | head -3)"

cluster_stop "$LL_DIR"
trap - EXIT
standalone_summary
# Alone, the keys this script made up are not left on disk unless asked (PGI_KEEP=1).
if [ "$STANDALONE" = 1 ] && [ "${PGI_KEEP:-0}" != 1 ]; then
    rm -rf "$LL_WORK"
fi
exit 0
