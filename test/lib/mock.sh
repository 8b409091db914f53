# Starting and stopping the mock upstream. Sourced, not run.
MOCK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../mock" && pwd)"

# mock_start WORKDIR HTTP_PORT TLS_PORT [extra args...]; sets MOCK_PID.
mock_start() {
    local work="$1" port="$2" tls_port="$3"
    shift 3
    bash "$MOCK_DIR/make_cert.sh" "$work/certs" >/dev/null
    node "$MOCK_DIR/mock_upstream.js" --port "$port" --tls-port "$tls_port" \
        --tls-cert "$work/certs/mock_cert.pem" --tls-key "$work/certs/mock_key.pem" "$@" \
        >"$work/mock.log" 2>&1 &
    MOCK_PID=$!
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/_mock/stats" && return 0
        kill -0 "$MOCK_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "mock upstream did not start:" >&2
    cat "$work/mock.log" >&2
    return 1
}

mock_stop() {
    [ -n "${MOCK_PID:-}" ] || return 0
    kill -TERM "$MOCK_PID" 2>/dev/null || true
    wait "$MOCK_PID" 2>/dev/null || true
    MOCK_PID=""
}

port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
