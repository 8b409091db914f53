# What an end-to-end script with a cluster of its own needs to run both inside the suite and
# alone. Sourced, not run.

# standalone_lock: run alone (the suite's lock not held), takes the suite's lock as the suite
# does, so the script never shares the machine's fixed ports with a suite run; sets STANDALONE.
standalone_lock() {
    STANDALONE=0
    if [ -z "${PGI_TESTS_LOCK_HELD:-}" ]; then
        STANDALONE=1
        exec 9>/tmp/pg_inference-tests.lock
        flock -w 900 9 || { echo "could not take /tmp/pg_inference-tests.lock"; exit 1; }
        export PGI_TESTS_LOCK_HELD=1
    fi
}

# standalone_workdir NAME: sets WORKDIR to the script's work directory ($TEST_WORK/NAME in the
# suite, a new /tmp/pgi-NAME.XXXXXX alone) and, alone, sends the results to WORKDIR/results.txt.
standalone_workdir() {
    if [ -n "${TEST_WORK:-}" ]; then
        WORKDIR="$TEST_WORK/$1"
        mkdir -p "$WORKDIR" && chmod 755 "$WORKDIR"
    else
        WORKDIR="$(cluster_workdir "pgi-$1")" || exit 1
    fi
    if [ "$STANDALONE" = 1 ] && [ "${RESULTS:-/dev/null}" = /dev/null ]; then
        RESULTS="$WORKDIR/results.txt"
        : >"$RESULTS"
    fi
}

# standalone_summary: alone, prints "N passed, M failed" and where the logs are kept
# (PGI_KEEP=1).
standalone_summary() {
    [ "$STANDALONE" = 1 ] || return 0
    echo "$(grep -c '^PASS' "$RESULTS") passed, $(grep -c '^FAIL' "$RESULTS") failed"
    [ "${PGI_KEEP:-0}" = 1 ] && echo "   results and logs kept in $WORKDIR"
    return 0
}

# pick_port [TAKEN...]: a free loopback port away from the suite's usual ones and from TAKEN.
pick_port() { free_port "" 18181 18182 18765 25432 "$@"; }

# standalone_mock DIR: without the suite's mock (MOCK_URL unset), starts one of the script's own
# on free ports, logging into DIR; sets MOCK_URL, MOCK_TLS_PORT and OWN_MOCK (1: stop it with
# mock_stop when done).
standalone_mock() {
    OWN_MOCK=0
    [ -n "${MOCK_URL:-}" ] && return 0
    MOCK_PORT="$(pick_port)" && MOCK_TLS_PORT="$(pick_port "$MOCK_PORT")" || exit 1
    mock_start "$1" "$MOCK_PORT" "$MOCK_TLS_PORT" || exit 1
    OWN_MOCK=1
    MOCK_URL="http://127.0.0.1:$MOCK_PORT"
}
