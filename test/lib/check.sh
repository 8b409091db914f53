# A tiny assertion library for the end-to-end shell tests. Sourced, not run.
# Each check appends "PASS name" or "FAIL name" to $RESULTS so the runner can count them.

: "${RESULTS:=/dev/null}"

pass() { echo "PASS $1" | tee -a "$RESULTS"; }
fail() {
    echo "FAIL $1" | tee -a "$RESULTS"
    [ -n "${2:-}" ] && printf '     %s\n' "$2"
    return 0
}

# check NAME COMMAND...: passes when the command exits 0.
check() {
    local name="$1"
    shift
    local out
    if out="$("$@" 2>&1)"; then pass "$name"; else fail "$name" "$(echo "$out" | tail -5)"; fi
}

# check_eq NAME EXPECTED ACTUAL
check_eq() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "expected [$2], got [$3]"; fi
}

# check_contains NAME NEEDLE HAYSTACK
check_contains() {
    case "$3" in
        *"$2"*) pass "$1" ;;
        *) fail "$1" "expected to contain [$2], got [$(echo "$3" | head -c 400)]" ;;
    esac
}

# check_not_contains NAME NEEDLE HAYSTACK
check_not_contains() {
    case "$3" in
        *"$2"*) fail "$1" "must not contain [$2]" ;;
        *) pass "$1" ;;
    esac
}

# check_installcheck NAME SOCKET_DIR PORT: `make installcheck` against that server passes every
# regress file; the first lines of the differences are shown when it does not.
check_installcheck() {
    local out files
    out="$(cd "$ROOT" && PGHOST="$2" PGPORT="$3" PGUSER=postgres make -s installcheck 2>&1)"
    files="$(ls "$ROOT"/sql/*.sql | grep -vc '/pg_inference--')"
    check_contains "$1 ($files files)" "All $files tests passed" "$out"
    if [ -f "$ROOT/regression.diffs" ]; then head -40 "$ROOT/regression.diffs"; fi
    return 0
}
