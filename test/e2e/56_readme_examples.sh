#!/usr/bin/env bash
# The README's examples run as written against the demo: the demo is started as the README says
# (DEMO_KEEP=1 bash scripts/demo.sh), then every ```bash and ```sql block of the README is run
# against it, in order, with the demo's ports in place of the usual ones it names. The blocks
# that start the demo or the test suite themselves are the two commands this test stands on.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/cluster.sh"
source "$ROOT/test/lib/check.sh"
source "$ROOT/test/lib/mock.sh"

OUT="$TEST_WORK/readme"
mkdir -p "$OUT"
# The demo's usual gateway port held by another listener (when free), as on a machine where an
# instance already runs: the demo must take another and say which.
dummy_pid=""
if port_is_free 8765; then
    python3 -c 'import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 8765)); s.listen(); time.sleep(600)' &
    dummy_pid=$!
    for _ in $(seq 1 50); do port_is_free 8765 || break; sleep 0.1; done
fi
DEMO_KEEP=1 bash "$ROOT/scripts/demo.sh" >"$OUT/demo.log" 2>&1
demo_rc=$?
[ -n "$dummy_pid" ] && kill "$dummy_pid" 2>/dev/null
left="$(grep '^Left running. Connect: ' "$OUT/demo.log" | tail -1)"
pg_port="$(echo "$left" | sed -nE 's/.* -p ([0-9]+) .*/\1/p')"
gw_port="$(echo "$left" | sed -nE 's/.*gateway: http:\/\/127\.0\.0\.1:([0-9]+)$/\1/p')"
# "Stop: kill <postmaster pid> <mock pid>; rm -rf <dir>": what the test stops, by pid, at the end.
stop_line="$(grep '^Stop: kill ' "$OUT/demo.log" | tail -1)"
read -r -a stop_pids <<<"$(echo "$stop_line" | sed -E 's/^Stop: kill ([0-9 ]+);.*/\1/')"
demo_dir="$(echo "$stop_line" | sed -nE 's/.*rm -rf (\/tmp\/pgi-demo\.[A-Za-z0-9]+)$/\1/p')"
stop_demo() {
    local pid
    for pid in "${stop_pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${stop_pids[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    [ -n "$demo_dir" ] && rm -rf "$demo_dir"
}
trap stop_demo EXIT
check_eq "the demo runs and stays up with DEMO_KEEP=1" "0 2" "$demo_rc ${#stop_pids[@]}"
[ -n "$dummy_pid" ] && check "with port 8765 taken, its gateway is on another ($gw_port)" \
    test -n "$gw_port" -a "$gw_port" != 8765
[ "$demo_rc" = 0 ] || { tail -20 "$OUT/demo.log"; exit 0; }

# The README's fenced blocks, one file each: NNN.bash or NNN.sql, in the README's order.
awk -v dir="$OUT" '
    /^```(bash|sql)[[:space:]]*$/ { n++; lang = substr($0, 4); gsub(/[[:space:]]/, "", lang);
                                    file = sprintf("%s/%03d.%s", dir, n, lang); next }
    /^```/ { file = ""; next }
    file != "" { print > file }
' "$ROOT/README.md"

ran=0
for block in "$OUT"/*.bash "$OUT"/*.sql; do
    [ -f "$block" ] || continue
    # The two commands (and the demo's start) are what this test itself runs; make installcheck
    # against a server of one's own is 57_installcheck.sh's.
    grep -qE 'scripts/demo\.sh|test/run-tests\.sh|make installcheck' "$block" && continue
    sed -i -e "s/\b25431\b/$pg_port/g" -e "s/\b8765\b/$gw_port/g" "$block"
    name="README block $(basename "$block")"
    case "$block" in
        *.bash) out="$(cd "$OUT" && PGHOST=127.0.0.1 bash -e -o pipefail "$block" 2>&1)" ;;
        *.sql) out="$(psql -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres \
            -f "$block" 2>&1)" ;;
    esac
    rc=$?
    ran=$((ran + 1))
    if [ "$rc" = 0 ] && ! echo "$out" | grep -qE '"error"|ERROR:'; then
        pass "$name runs as written against the demo"
    else
        fail "$name runs as written against the demo" "$(echo "$out" | tail -5)"
    fi
    echo "$out" >"$block.out"
done
check "the README has examples to run ($ran blocks)" test "$ran" -ge 2
# What the tour promises it shows.
check_contains "the tour's curl is answered through the gateway" "echo: hello through the gateway" \
    "$(cat "$OUT"/*.bash.out 2>/dev/null)"
check_contains "the tour's SQL reaches the models" "echo: hello from SQL" \
    "$(cat "$OUT"/*.sql.out 2>/dev/null)"
