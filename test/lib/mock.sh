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

# free_port [PREFERRED [TAKEN...]]: PREFERRED when it is free, else a free loopback port in
# 20000-24999 that is none of TAKEN, so that a run shares the machine with whatever else listens.
free_port() {
    local want="${1:-}" p
    shift || true
    if [ -n "$want" ] && port_is_free "$want"; then
        echo "$want"
        return 0
    fi
    for _ in $(seq 1 300); do
        p=$((20000 + RANDOM % 5000))
        case " $* " in *" $p "*) continue ;; esac
        port_is_free "$p" && { echo "$p"; return 0; }
    done
    return 1
}
