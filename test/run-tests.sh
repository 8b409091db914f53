#!/usr/bin/env bash
# Runs every test of pg_inference and ends with "N passed, M failed":
#   1. installs missing Debian packages, builds and installs the extension (PGXS);
#   2. the core's GoogleTest suite under ctest;
#   3. starts the mock upstream and a throwaway cluster with the extension preloaded, then runs
#      the pg_regress suite (sql/, expected/) and the end-to-end scripts (test/e2e/*.sh);
#   4. stops every server it started, by pid.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

# One run at a time on a machine: the mock upstream has fixed loopback ports (the expected
# outputs show its URLs) and the extension is installed system-wide. The cluster and gateway
# ports are the usual ones when free, else any free ones (PGI_TEST_PG_PORT and
# PGI_TEST_GATEWAY_PORT set them).
exec 9>/tmp/pg_inference-tests.lock
flock 9
export PGI_TESTS_LOCK_HELD=1

bash scripts/install-deps.sh || exit 1
bash scripts/build-install.sh || exit 1
echo "== packages, build and install: $SECONDS s"

source test/lib/cluster.sh
source test/lib/mock.sh
export TEST_WORK
TEST_WORK="$(cluster_workdir pgi-test)"
export RESULTS="$TEST_WORK/results.txt"
: >"$RESULTS"

export MOCK_PORT=18181 MOCK_TLS_PORT=18182 MOCK_URL="http://127.0.0.1:18181"
export PG_DIR="$TEST_WORK/pg" PG_PORT="${PGI_TEST_PG_PORT:-$(free_port 25432 $MOCK_PORT $MOCK_TLS_PORT)}"
GATEWAY_PORT="${PGI_TEST_GATEWAY_PORT:-$(free_port 18765 "$PG_PORT" $MOCK_PORT $MOCK_TLS_PORT)}"
export GATEWAY_PORT GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT"

cleanup() {
    cluster_stop "$PG_DIR"
    mock_stop
}
trap cleanup EXIT

# Each part's line also says how long it took (since the previous line), so a run that grows
# long shows where.
phase_start=$SECONDS
count_line() { # label passed failed
    echo "$1: $2 passed, $3 failed ($((SECONDS - phase_start)) s)"
    echo "$2 $3" >>"$TEST_WORK/counts"
    phase_start=$SECONDS
}

# Stops what was started, removes the scratch folder and prints the total line.
finish() {
    cleanup
    trap - EXIT
    local passed=0 failed=0 p f
    while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done <"$TEST_WORK/counts"
    rm -rf "$TEST_WORK"
    echo "whole run: $SECONDS s"
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}
# The servers could not start: say why, count it as a failure and finish.
cannot_start() { # REASON
    echo "cannot start the test servers: $1"
    count_line "servers" 0 1
    finish
}

# --- 1. unit tests ---------------------------------------------------------------------------
echo "== unit tests (GoogleTest under ctest)"
# The core's objects come from the extension's build above; only the tests (and the load client
# the request-log test drives) are compiled here.
cmake -S . -B build -G 'Unix Makefiles' -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DPGI_REUSE_PGXS_OBJECTS=ON >/dev/null &&
    cmake --build build -j2 --target core_tests load_client >"$TEST_WORK/unit-build.log" 2>&1 ||
    { cat "$TEST_WORK/unit-build.log"; }
(cd build && ctest --output-on-failure -j2) >"$TEST_WORK/ctest.log" 2>&1
summary="$(grep -E 'tests passed, [0-9]+ tests failed out of' "$TEST_WORK/ctest.log" || true)"
if [ -n "$summary" ]; then
    total="$(echo "$summary" | sed -E 's/.*out of ([0-9]+).*/\1/')"
    failed="$(echo "$summary" | sed -E 's/.* ([0-9]+) tests failed.*/\1/')"
    [ "$failed" -gt 0 ] && grep -E '\*\*\*Failed|FAILED' "$TEST_WORK/ctest.log" | head -20
    count_line "unit" "$((total - failed))" "$failed"
else
    tail -20 "$TEST_WORK/ctest.log"
    count_line "unit" 0 1
fi

# --- 1b. fuzzing -------------------------------------------------------------------------------
# Every libFuzzer target of test/fuzz for a few seconds each: a regression net for the parsers
# and translators, not a search (test/fuzz/README.md has the long runs), so the targets are
# built unoptimised (build-fuzz-quick/), which halves the build.
FUZZ_SECONDS="${PGI_FUZZ_SECONDS:-1}"
echo "== fuzz (libFuzzer, ${FUZZ_SECONDS} s per target)"
PGI_FUZZ_QUICK=1 bash test/fuzz/run.sh "$FUZZ_SECONDS" >"$TEST_WORK/fuzz.log" 2>&1
grep -vE ': ok, |^[0-9]+ passed, [0-9]+ failed$' "$TEST_WORK/fuzz.log" | tail -40
summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$TEST_WORK/fuzz.log" | tail -1)"
if [ -n "$summary" ]; then
    count_line "fuzz" "$(echo "$summary" | cut -d' ' -f1)" "$(echo "$summary" | cut -d' ' -f3)"
else
    tail -20 "$TEST_WORK/fuzz.log"
    count_line "fuzz" 0 1
fi

# --- 2. servers --------------------------------------------------------------------------------
# The official openai SDK for the gateway tests, from the committed lockfile.
(cd test/e2e/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
    cannot_start "npm ci failed in test/e2e/node"

for p in "$PG_PORT" "$MOCK_PORT" "$MOCK_TLS_PORT" "$GATEWAY_PORT"; do
    [ -n "$p" ] || cannot_start "no free loopback port was found"
    port_is_free "$p" || cannot_start "port $p is busy (the mock upstream's ports are fixed; the others are set by PGI_TEST_PG_PORT and PGI_TEST_GATEWAY_PORT)"
done
echo "== servers: cluster on port $PG_PORT, gateway on $GATEWAY_PORT, mock upstream on $MOCK_PORT"
mock_start "$TEST_WORK" "$MOCK_PORT" "$MOCK_TLS_PORT" || cannot_start "the mock upstream did not start"
export PGI_TEST_KEY_ENV="sk-test-from-env"
PGI_TEST_KEY_ENV="$PGI_TEST_KEY_ENV" cluster_start "$PG_DIR" "$PG_PORT" \
    "pgi_test.mock = '$MOCK_URL'" \
    "pgi_test.mock_tls = 'https://127.0.0.1:$MOCK_TLS_PORT'" \
    "inference.health_check_timeout = '3s'" \
    "inference.gateway_port = $GATEWAY_PORT" "inference.gateway_client_timeout = '2s'" ||
    cannot_start "the cluster did not start"

# --- 3. pg_regress -----------------------------------------------------------------------------
echo "== pg_regress (sql/*.sql against expected/*.out)"
PGHOST="$PG_DIR" PGPORT="$PG_PORT" PGUSER=postgres \
    make -s installcheck >"$TEST_WORK/regress.log" 2>&1
grep -E '^(test |ok |not ok |     )' "$TEST_WORK/regress.log" | grep -E '\.\.\. |^(ok|not ok) ' || true
rp="$(grep -cE '\.\.\. ok|^ok ' "$TEST_WORK/regress.log")"
rf="$(grep -cE '\.\.\. FAILED|\.\.\. failed|^not ok ' "$TEST_WORK/regress.log")"
if [ "$rf" -gt 0 ] && [ -f regression.diffs ]; then head -80 regression.diffs; fi
[ "$rp" -eq 0 ] && [ "$rf" -eq 0 ] && { tail -20 "$TEST_WORK/regress.log"; rf=1; }
count_line "pg_regress" "$rp" "$rf"

# --- 4. end-to-end scripts ---------------------------------------------------------------------
for t in test/e2e/*.sh; do
    [ -e "$t" ] || continue
    echo "== $t"
    before_pass="$(grep -c '^PASS' "$RESULTS")"
    before_fail="$(grep -c '^FAIL' "$RESULTS")"
    bash "$t" || echo "FAIL $t exited with an error" >>"$RESULTS"
    p="$(($(grep -c '^PASS' "$RESULTS") - before_pass))"
    f="$(($(grep -c '^FAIL' "$RESULTS") - before_fail))"
    count_line "$(basename "$t")" "$p" "$f"
done

finish
