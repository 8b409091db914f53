# Shared by the gateway end-to-end scripts. Sourced, not run; brings in the cluster and check
# helpers every one of them uses. The listeners serve the database named by inference.database
# (postgres), so these tests keep their services there.
source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"

psql_gw() { cluster_psql "$PG_DIR" "$PG_PORT" -d postgres "$@"; }

# Creates the extension in the gateway's database and registers the gw-* services once.
gateway_setup_services() {
    psql_gw >/dev/null <<SQL
CREATE EXTENSION IF NOT EXISTS pg_inference;
SELECT inference.register_external_service(n, m, '$MOCK_URL/s/' || l, api_key => k, protocol => p)
  FROM (VALUES
        ('gw-openai', 'gpt-4o-mini', 'gwoa', 'sk-test-gw-openai', 'OPENAI_V1'),
        ('gw-claude', 'claude-sonnet-4-5', 'gwcl', 'sk-test-gw-anthropic', 'ANTHROPIC_V1'),
        ('gw-gemini', 'gemini-2.0-flash', 'gwgem', 'sk-test-gw-gemini', 'GEMINI_V1_BETA'),
        ('gw-embed', 'text-embedding-3-small', 'gwemb', 'sk-test-gw-openai', 'OPENAI_V1'),
        ('gw-floats', 'text-embedding-3-small', 'floats_only', 'sk-test-gw-openai', 'OPENAI_V1'),
        ('gw-gembed', 'text-embedding-004', 'gwgemb', 'sk-test-gw-gemini', 'GEMINI_V1_BETA'),
        ('gw-nim', 'nvidia/nv-rerankqa-mistral-4b-v3', 'nim', 'sk-test-gw-openai', 'OPENAI_V1'),
        ('gw-cohere', 'BAAI/bge-reranker-v2-m3', 'cohere', 'sk-test-gw-openai', 'OPENAI_V1'))
        AS v(n, m, l, k, p)
 WHERE NOT EXISTS (SELECT 1 FROM inference.services s WHERE s.name = v.n);
SQL
}

# HTTP status of a gateway call: gw_status [curl args...]
gw_status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

# Waits (up to 3 s) until the gateway answers GET /v1/models with the given status for a key.
# Prints the milliseconds it took (until the first listener answered so).
wait_for_status() {
    local key="$1" want="$2" t0 i
    t0="$(date +%s%3N)"
    for i in $(seq 1 60); do
        if [ "$(gw_status -H "Authorization: Bearer $key" "$GATEWAY_URL/v1/models")" = "$want" ]; then
            echo $(($(date +%s%3N) - t0))
            # One listener answered; each listener reloads on its own 100 ms tick, so give the
            # others that long before the caller's next request may land on them.
            sleep 0.3
            return 0
        fi
        sleep 0.05
    done
    return 1
}
wait_for_key() { wait_for_status "$1" 200 >/dev/null; }

# A field of a JSON document on stdin, by a JavaScript path: echo "$json" | jget '.error.code'
jget() { node -e 'let d="";process.stdin.on("data",c=>d+=c).on("end",()=>{let v;try{v=eval("JSON.parse(d)"+process.argv[1])}catch(e){v="(not json)"}console.log(typeof v==="object"?JSON.stringify(v):String(v))})' "$1"; }

# The last request the mock received for a label, as JSON.
mock_last() { curl -s "$MOCK_URL/_mock/requests?label=$1" | node -e 'let d="";process.stdin.on("data",c=>d+=c).on("end",()=>{const r=JSON.parse(d);console.log(JSON.stringify(r[r.length-1]||{}))})'; }
