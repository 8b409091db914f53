#!/usr/bin/env bash
# /metrics read by a Prometheus text-format parser (the Python client's, from Debian's
# python3-prometheus-client), and the OpenTelemetry GenAI metrics measured against known
# upstream timings: streams from a mock service that waits 20 ms before answering read 20 to
# 25 ms in gen_ai_server_time_to_first_token_seconds; the token usage, time per output token and
# per-dialect duration histograms count the same requests.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/gateway.sh"

PY=/usr/bin/python3  # Debian's, where python3-prometheus-client is installed
if ! "$PY" -c 'import prometheus_client' 2>/dev/null; then
    fail "genai metrics: the Python Prometheus client (python3-prometheus-client) is installed"
    exit 0
fi

gateway_setup_services || exit 1
psql_gw -q >/dev/null <<SQL
DELETE FROM inference.access_key_store WHERE name = 'met-key';
SELECT inference.register_external_service('met-slow', 'gpt-4o-mini', '$MOCK_URL/s/slow:20',
                                           api_key => 'sk-test-met', validate => false)
 WHERE NOT EXISTS (SELECT 1 FROM inference.services WHERE name = 'met-slow');
SQL
KEY="$(psql_gw -At -c "SELECT inference.create_access_key('met-key')")"
wait_for_key "$KEY" || { fail "genai metrics: the key reaches the gateway"; exit 0; }

# Parses /metrics with the client's parser (which refuses text that is not the format) and
# prints the samples of met-slow as JSON: {"name{label=value,...}": value}.
samples() {
    curl -s "$GATEWAY_URL/metrics" | "$PY" -c '
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out, families = {}, 0
for family in text_string_to_metric_families(sys.stdin.read()):
    families += 1
    for s in family.samples:
        if s.labels.get("service") == "met-slow":
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "service")
            out[f"{s.name}{{{labels}}}"] = s.value
out["families"] = families
print(json.dumps(out))'
}
value() { # JSON NAME{LABELS}
    node -e 'const o = JSON.parse(process.argv[1]); console.log(o[process.argv[2]] ?? 0)' "$1" "$2"
}

before="$(samples)"
check "/metrics parses with the Prometheus Python client's parser" [ -n "$before" ]
N=5
for i in $(seq 1 $N); do
    curl -s -N -m 10 -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        "$GATEWAY_URL/v1/chat/completions" \
        -d '{"model":"met-slow","stream":true,"messages":[{"role":"user","content":"one two three four"}]}' \
        >/dev/null
done
sleep 0.2
after="$(samples)"
check "/metrics still parses after the streams ($(value "$after" families) families)" \
    [ "$(value "$after" families)" -ge 20 ]

delta() { # NAME{LABELS}: how much it grew
    node -e 'console.log(Number(process.argv[2]) - Number(process.argv[1]))' \
        "$(value "$before" "$1")" "$(value "$after" "$1")"
}
TTFT=gen_ai_server_time_to_first_token_seconds
count="$(delta "${TTFT}_count{}")"
check_eq "$TTFT counts the $N streams" "$N" "$count"
below20="$(delta "${TTFT}_bucket{le=0.02}")"
to25="$(delta "${TTFT}_bucket{le=0.025}")"
mean_ms="$(node -e 'console.log((1000 * Number(process.argv[1]) / Number(process.argv[2])).toFixed(2))' \
    "$(delta "${TTFT}_sum{}")" "$N")"
check_eq "no stream's first token reads under the upstream's 20 ms delay (mean $mean_ms ms)" 0 "$below20"
check "most streams read 20-25 ms ($to25 of $N within 25 ms)" [ "$to25" -ge $((N / 2 + 1)) ]
check_eq "gen_ai_client_token_usage counts input tokens of each request" "$N" \
    "$(delta "gen_ai_client_token_usage_count{gen_ai_token_type=input}")"
check_eq "gen_ai_client_token_usage sums the input tokens (4 each)" "$((4 * N))" \
    "$(delta "gen_ai_client_token_usage_sum{gen_ai_token_type=input}")"
check_eq "gen_ai_server_time_per_output_token_seconds counts the streams" "$N" \
    "$(delta "gen_ai_server_time_per_output_token_seconds_count{}")"
check_eq "gen_ai_server_request_duration_seconds counts them under dialect openai_chat" "$N" \
    "$(delta "gen_ai_server_request_duration_seconds_count{dialect=openai_chat}")"
check_eq "the existing pg_inference_gateway_request_duration_seconds counts them too" "$N" \
    "$(delta "pg_inference_gateway_request_duration_seconds_count{}")"

psql_gw -q -c "DELETE FROM inference.access_key_store WHERE name = 'met-key'" >/dev/null
