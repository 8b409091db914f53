#!/usr/bin/env bash
# Builds the libFuzzer targets of test/fuzz (if needed) and runs each for SECONDS seconds on a
# temporary copy of its committed seed corpus, so the corpus in the repository stays small.
#   test/fuzz/run.sh SECONDS [TARGET...]
# Prints each target's executions and ends with "N passed, M failed": a target passes when it
# ends without a crash, a leak, a sanitizer report or a broken property. Crash inputs are kept
# in artifacts/ of the build directory. PGI_FUZZ_RUNS=N also stops a target after N executions;
# PGI_FUZZ_CORPUS=DIR keeps each target's grown corpus in DIR/<target> for the next run;
# PGI_FUZZ_FORK=N runs each target in N processes at once (libFuzzer's fork mode), which counts
# the executions of all of them against PGI_FUZZ_RUNS. PGI_FUZZ_QUICK=1 builds the targets
# unoptimised in build-fuzz-quick/ (half the build time; a stream target runs an eighth as fast),
# for brief runs.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
SECONDS_EACH="${1:-10}"
shift || true
QUICK=OFF
[ -n "${PGI_FUZZ_QUICK:-}" ] && QUICK=ON
if [ "$QUICK" = ON ]; then
    BUILD="${PGI_FUZZ_BUILD:-$ROOT/build-fuzz-quick}"
else
    BUILD="${PGI_FUZZ_BUILD:-$ROOT/build-fuzz}"
fi

# clang with libFuzzer and the sanitizer runtimes; Debian ships the runtimes apart, named for
# clang's major version.
can_fuzz() {
    local dir
    dir="$(mktemp -d)"
    echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char *, unsigned long) { return 0; }' \
        >"$dir/t.cpp"
    clang++ -fsanitize=fuzzer,address,undefined "$dir/t.cpp" -o "$dir/t" >/dev/null 2>&1
    local rc=$?
    rm -rf "$dir"
    return $rc
}
if ! command -v clang++ >/dev/null 2>&1 || ! can_fuzz; then
    echo "fuzz: installing clang and its sanitizer runtimes"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends clang >/dev/null
    major="$(clang++ --version | sed -nE 's/.*clang version ([0-9]+).*/\1/p' | head -1)"
    $SUDO apt-get install -y -qq --no-install-recommends "libclang-rt-$major-dev" >/dev/null ||
        $SUDO apt-get install -y -qq --no-install-recommends "libclang-common-$major-dev" >/dev/null
    can_fuzz || { echo "fuzz: clang cannot build libFuzzer targets"; echo "0 passed, 1 failed"; exit 1; }
fi

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G 'Unix Makefiles' -DPGI_FUZZ=ON \
        -DPGI_FUZZ_QUICK="$QUICK" >/dev/null ||
        { echo "fuzz: configure failed"; echo "0 passed, 1 failed"; exit 1; }
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for d in test/fuzz/corpus/*/; do targets+=("$(basename "$d")"); done
fi

# Named targets are the only ones built, so a long run of one target starts in minutes.
build_targets=()
[ $# -gt 0 ] && build_targets=(--target "$@")
if ! cmake --build "$BUILD" -j2 "${build_targets[@]}" >"$BUILD/build.log" 2>&1; then
    grep -E 'error' "$BUILD/build.log" | head -20
    echo "fuzz: build failed"
    echo "0 passed, 1 failed"
    exit 1
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$BUILD/artifacts"
passed=0 failed=0
extra=()
[ -n "${PGI_FUZZ_RUNS:-}" ] && extra+=("-runs=$PGI_FUZZ_RUNS")
[ -n "${PGI_FUZZ_FORK:-}" ] && extra+=("-fork=$PGI_FUZZ_FORK")
for t in "${targets[@]}"; do
    bin="$BUILD/test/fuzz/$t"
    if [ ! -x "$bin" ]; then
        echo "$t: FAILED (no such target)"
        failed=$((failed + 1))
        continue
    fi
    corpus="$WORK/corpus/$t"
    # A long campaign keeps what it learnt: with PGI_FUZZ_CORPUS=DIR each target works in
    # DIR/<target> (seeded from the committed corpus once) and a later run resumes from there.
    [ -n "${PGI_FUZZ_CORPUS:-}" ] && corpus="$PGI_FUZZ_CORPUS/$t"
    mkdir -p "$corpus"
    cp -n test/fuzz/corpus/"$t"/* "$corpus/" 2>/dev/null
    start=$(date +%s.%N)
    "$bin" "$corpus" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=25 \
        -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$t-" "${extra[@]}" \
        >"$WORK/$t.log" 2>&1
    rc=$?
    secs=$(echo "$(date +%s.%N) - $start" | bc)
    execs="$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$WORK/$t.log" | tail -1)"
    # Fork mode prints no final stats; its last progress line holds the total of all processes.
    [ -z "$execs" ] && execs="$(sed -nE 's/^#([0-9]+): cov: .*/\1/p' "$WORK/$t.log" | tail -1)"
    execs="${execs:-0}"
    rate=$(echo "$execs / ($secs + 0.001)" | bc)
    if [ $rc -eq 0 ] && ! grep -qE '^(==[0-9]+==ERROR|SUMMARY: |fuzz property failed)' "$WORK/$t.log"; then
        printf '%s: ok, %s executions in %.0f s (%s/s)\n' "$t" "$execs" "$secs" "$rate"
        passed=$((passed + 1))
    else
        printf '%s: FAILED after %s executions (exit %s)\n' "$t" "$execs" "$rc"
        grep -E 'ERROR|SUMMARY|fuzz property failed|runtime error|Test unit written' "$WORK/$t.log" |
            head -8 | sed 's/^/    /'
        cp "$WORK/$t.log" "$BUILD/artifacts/$t.log"
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
