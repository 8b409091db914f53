#!/usr/bin/env bash
# Benchmark of gateway governance: the cost of access keys, rate limits, usage counters
# and metrics on the request path. Two clusters, side by side, measured in one run:
#   on:  inference.gateway_require_key = on, every request with a key that has all three limits
#        (high enough never to refuse), so each request is admitted through the shared limiter;
#   off: inference.gateway_require_key = off and no key (usage and metrics still counted).
# BENCH_SUBJECT=request_log measures the request log instead: both clusters with the key,
#   on:  inference.gateway_request_log = metadata (a row per request in inference.request_log);
#   off: the log off;
# and checks that every request of "on" has its row or is counted as dropped.
# Load: wrk (keep-alive connections, a Lua script for the POST body) on non-streamed chat
# completions through both listeners to an OpenAI-protocol mock that answers at once. The two
# configurations are measured ROUNDS times each, back to back within a round, so that drift of
# the machine (a small one shares its cores between wrk, the mock and the servers) hits both
# alike; the verdict is on the median of the rounds' on/off ratios.
# Prints requests/s and p99 latency with the ratio on/off (target: < 10 % throughput lost), and
# writes them as JSON to $BENCH_OUT (default test/bench/results/governance.json).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
source test/bench/prepare.sh

WORK="$(cluster_workdir pgi-bench)"
PG_PORT="${PGI_BENCH_PG_PORT:-25760}" MOCK_PORT="${PGI_BENCH_MOCK_PORT:-18720}"
GATEWAY_PORT="${PGI_BENCH_GATEWAY_PORT:-18760}"
DURATION="${BENCH_DURATION:-4}" CONNECTIONS="${BENCH_CONNECTIONS:-32}" ROUNDS="${BENCH_ROUNDS:-9}"
SUBJECT="${BENCH_SUBJECT:-governance}"
OUT="${BENCH_OUT:-$ROOT/test/bench/results/$SUBJECT.json}"
declare -A SETTINGS=([on]="inference.gateway_require_key = on" [off]="inference.gateway_require_key = off")
if [ "$SUBJECT" = request_log ]; then
    SETTINGS=([on]="inference.gateway_request_log = metadata" [off]="inference.gateway_request_log = off")
fi
mkdir -p "$(dirname "$OUT")"

# Cluster "on" on PG_PORT and GATEWAY_PORT, "off" on the next ports.
declare -A PORT=([on]=$PG_PORT [off]=$((PG_PORT + 1))) GW=([on]=$GATEWAY_PORT [off]=$((GATEWAY_PORT + 1)))
stop_all() {
    cluster_stop "$WORK/on"
    cluster_stop "$WORK/off"
    mock_stop
    rm -rf "$WORK"
}
trap stop_all EXIT

mock_start "$WORK" "$MOCK_PORT" $((MOCK_PORT + 1)) --latency-ms 0 --max-records 1
for mode in on off; do
    cluster_start "$WORK/$mode" "${PORT[$mode]}" "inference.gateway_port = ${GW[$mode]}" \
        "${SETTINGS[$mode]}" "log_min_messages = warning"
    cluster_psql "$WORK/$mode" "${PORT[$mode]}" -d postgres >/dev/null <<SQL
CREATE EXTENSION pg_inference;
SELECT inference.register_external_service('bench', 'gpt-4o-mini', 'http://127.0.0.1:$MOCK_PORT',
       api_key => 'sk-test-bench');
SQL
done
declare -A KEYS=([on]="" [off]="")
for mode in on off; do
    [ "$SUBJECT" = governance ] && [ "$mode" = off ] && continue
    KEYS[$mode]="$(cluster_psql "$WORK/$mode" "${PORT[$mode]}" -d postgres -At -c \
        "SELECT inference.create_access_key('bench', requests_per_minute => 100000000,
                requests_per_hour => 1000000000, tokens_per_hour => 1000000000000)")"
done
for mode in on off; do
    key="${KEYS[$mode]}"
    for i in $(seq 1 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' ${key:+-H "Authorization: Bearer $key"} \
             "http://127.0.0.1:${GW[$mode]}/v1/models")" = 200 ] && break
        sleep 0.1
    done
done

cat >"$WORK/chat.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"hello from the benchmark"}]}'
if os.getenv("BENCH_KEY") ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
end
LUA

# wrk_run on|off SECONDS [--latency]: wrk's report on stdout.
wrk_run() {
    BENCH_KEY="${KEYS[$1]}" wrk -t2 -c"$CONNECTIONS" -d"$2s" ${3:-} -s "$WORK/chat.lua" \
        "http://127.0.0.1:${GW[$1]}/v1/chat/completions"
}

# CPU time (clock ticks) the gateway listeners of cluster on|off have used so far: per request,
# it shows the cost of governance even when other load on the machine makes throughput noisy.
listener_ticks() {
    local t=0 p
    for p in $(pgrep -P "$(cluster_pid "$WORK/$1")" -f "${2:-gateway listener}"); do
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
    done
    echo "$t"
}

# measure on|off: prints "requests_per_second p99_ms non2xx listener_cpu_us_per_request
# usage_writer_cpu_us_per_request".
measure() {
    local t0 t1 w0 w1
    t0="$(listener_ticks "$1")"
    w0="$(listener_ticks "$1" "usage writer")"
    wrk_run "$1" "$DURATION" --latency >"$WORK/wrk.out"
    t1="$(listener_ticks "$1")"
    w1="$(listener_ticks "$1" "usage writer")"
    awk -v ticks=$((t1 - t0)) -v wticks=$((w1 - w0)) -v hz="$(getconf CLK_TCK)" '
        function ms(v) {
            if (v ~ /us$/) return v / 1000
            if (v ~ /ms$/) return v + 0
            if (v ~ /s$/) return v * 1000
            return v
        }
        / requests in / { n = $1 }
        /^Requests\/sec:/ { rps = $2 }
        $1 == "99%" { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { bad = $NF }
        END { printf "%s %s %d %.1f %.1f\n", rps, p99, bad, ticks * 1e6 / hz / n,
                     wticks * 1e6 / hz / n }' "$WORK/wrk.out"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

for mode in on off; do wrk_run "$mode" 3 >/dev/null; done  # warm-up: connections, JIT, caches
declare -A rps_list=([on]="" [off]="") p99_list=([on]="" [off]="") cpu_list=([on]="" [off]="")
declare -A wcpu_list=([on]="" [off]="")
declare -A bad=([on]=0 [off]=0) rps cpu
ratios=""
for round in $(seq 1 "$ROUNDS"); do
    for mode in on off; do
        read -r rps[$mode] p99 non2xx cpu[$mode] wcpu < <(measure "$mode")
        wcpu_list[$mode]+="$wcpu"$'\n'
        rps_list[$mode]+="${rps[$mode]}"$'\n'
        p99_list[$mode]+="$p99"$'\n'
        cpu_list[$mode]+="${cpu[$mode]}"$'\n'
        bad[$mode]=$((bad[$mode] + non2xx))
    done
    r="$(awk -v a="${rps[on]}" -v b="${rps[off]}" 'BEGIN { printf "%.3f", a / b }')"
    ratios+="$r"$'\n'
    echo "round $round: on ${rps[on]} requests/s (listeners ${cpu[on]} us CPU/request)," \
         "off ${rps[off]} requests/s (${cpu[off]} us), on/off $r"
done

declare -A RPS P99 CPU WCPU
for mode in on off; do
    RPS[$mode]="$(printf '%s' "${rps_list[$mode]}" | median)"
    P99[$mode]="$(printf '%s' "${p99_list[$mode]}" | median)"
    CPU[$mode]="$(printf '%s' "${cpu_list[$mode]}" | median)"
    WCPU[$mode]="$(printf '%s' "${wcpu_list[$mode]}" | median)"
done
sleep 3  # one flush interval and a little more
USAGE="$(cluster_psql "$WORK/on" "${PORT[on]}" -d postgres -At -c \
         "SELECT coalesce(sum(requests), 0) FROM inference.usage WHERE key_name = 'bench'")"
LOGGED=0 DROPPED=0
if [ "$SUBJECT" = request_log ]; then
    LOGGED="$(cluster_psql "$WORK/on" "${PORT[on]}" -d postgres -At -c \
              "SELECT count(*) FROM inference.request_log WHERE key_name = 'bench' AND service = 'bench'")"
    DROPPED="$(curl -s "http://127.0.0.1:${GW[on]}/metrics" |
        sed -nE 's/^pg_inference_gateway_request_log_rows_total\{outcome="dropped"\} ([0-9]+)$/\1/p')"
    USAGE="$(cluster_psql "$WORK/on" "${PORT[on]}" -d postgres -At -c \
             "SELECT coalesce(sum(requests), 0) FROM inference.usage
               WHERE key_name = 'bench' AND service = 'bench'")"
fi
ratio="$(printf '%s' "$ratios" | median)"
p99_ratio="$(awk -v a="${P99[on]}" -v b="${P99[off]}" 'BEGIN { printf "%.3f", a / b }')"
cpu_ratio="$(awk -v a="${CPU[on]}" -v b="${CPU[off]}" 'BEGIN { printf "%.3f", a / b }')"
verdict=PASS
awk -v r="$ratio" 'BEGIN { exit !(r >= 0.9) }' || verdict=FAIL
[ "${bad[on]}" -eq 0 ] && [ "${bad[off]}" -eq 0 ] || verdict=FAIL
if [ "$SUBJECT" = request_log ] && [ $((LOGGED + DROPPED)) -ne "$USAGE" ]; then
    echo "request log: $LOGGED rows and $DROPPED dropped for $USAGE requests"
    verdict=FAIL
fi

cat >"$OUT" <<JSON
{
  "benchmark": "$SUBJECT",
  "connections": $CONNECTIONS,
  "duration_s": $DURATION,
  "rounds": $ROUNDS,
  "on": {"requests_per_second": ${RPS[on]}, "p99_ms": ${P99[on]}, "non_2xx": ${bad[on]},
         "listener_cpu_us_per_request": ${CPU[on]}, "usage_writer_cpu_us_per_request": ${WCPU[on]},
         "rounds_requests_per_second": [$(printf '%s' "${rps_list[on]}" | paste -sd,)]},
  "off": {"requests_per_second": ${RPS[off]}, "p99_ms": ${P99[off]}, "non_2xx": ${bad[off]},
          "listener_cpu_us_per_request": ${CPU[off]}, "usage_writer_cpu_us_per_request": ${WCPU[off]},
          "rounds_requests_per_second": [$(printf '%s' "${rps_list[off]}" | paste -sd,)]},
  "round_ratios_on_off": [$(printf '%s' "$ratios" | paste -sd,)],
  "throughput_ratio_on_off": $ratio,
  "p99_ratio_on_off": $p99_ratio,
  "listener_cpu_ratio_on_off": $cpu_ratio,
  "ledger_requests_for_the_key": $USAGE,
  "request_log_rows": $LOGGED,
  "request_log_dropped": ${DROPPED:-0},
  "target": "throughput ratio >= 0.9",
  "result": "$verdict"
}
JSON
echo "$SUBJECT on:  ${RPS[on]} requests/s, p99 ${P99[on]} ms, listeners ${CPU[on]} us CPU/request, usage writer ${WCPU[on]} us (medians of $ROUNDS rounds)"
echo "$SUBJECT off: ${RPS[off]} requests/s, p99 ${P99[off]} ms, listeners ${CPU[off]} us CPU/request, usage writer ${WCPU[off]} us"
echo "listener CPU per request on/off: ${cpu_ratio}x"
echo "ledger: $USAGE requests counted for the key"
[ "$SUBJECT" = request_log ] && echo "request log: $LOGGED rows, ${DROPPED:-0} dropped"
echo "RESULT $SUBJECT: throughput on/off ${ratio}x (median of the rounds' ratios; target >= 0.9), p99 on/off ${p99_ratio}x: $verdict"
[ "$verdict" = PASS ]
