#!/usr/bin/env bash
# Sets up and runs pg_inference on an embedded default: a throwaway local cluster with the
# extension preloaded, the mock upstream standing in for OpenAI, Anthropic, Gemini and vLLM, and
# a short demo of every function. Everything it starts is stopped at the end, unless
# DEMO_KEEP=1 (then it prints how to connect and how to stop).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

bash scripts/install-deps.sh
bash scripts/build-install.sh

source test/lib/cluster.sh
source test/lib/mock.sh
WORK="$(cluster_workdir pgi-demo)"
# The usual ports when free, else free ones (DEMO_*_PORT set them).
PG_DIR="$WORK/pg" PG_PORT="${DEMO_PG_PORT:-$(free_port 25431)}"
MOCK_PORT="${DEMO_MOCK_PORT:-$(free_port 18281 "$PG_PORT")}"
MOCK_TLS_PORT="${DEMO_MOCK_TLS_PORT:-$(free_port 18282 "$PG_PORT" "$MOCK_PORT")}"
MOCK="http://127.0.0.1:$MOCK_PORT"
GATEWAY_PORT="${DEMO_GATEWAY_PORT:-$(free_port 8765 "$PG_PORT" "$MOCK_PORT" "$MOCK_TLS_PORT")}"
GATEWAY="http://127.0.0.1:$GATEWAY_PORT"

stop_all() {
    cluster_stop "$PG_DIR"
    mock_stop
    rm -rf "$WORK"
}
[ "${DEMO_KEEP:-0}" = 1 ] || trap stop_all EXIT

echo "== starting the mock upstream on $MOCK, a cluster on port $PG_PORT, the gateway on $GATEWAY"
mock_start "$WORK" "$MOCK_PORT" "$MOCK_TLS_PORT"
cluster_start "$PG_DIR" "$PG_PORT" "inference.gateway_port = $GATEWAY_PORT"

run() {
    echo
    echo "-- $1"
    cluster_psql "$PG_DIR" "$PG_PORT" -P pager=off -c "$2" || true
}

run "install the extension" "CREATE EXTENSION pg_inference"
run "register an OpenAI-protocol chat model (the probe runs first)" \
    "SELECT name, model, protocol, status FROM inference.register_external_service(
        'openai-chat', 'gpt-4o-mini', '$MOCK', api_key => 'sk-test-demo',
        functions => '{chat}', tags => '{demo}')"
run "register an Anthropic model" \
    "SELECT name, protocol, status FROM inference.register_external_service(
        'claude', 'claude-sonnet-4-5', '$MOCK', api_key => 'sk-test-demo',
        protocol => 'ANTHROPIC_V1', functions => '{chat}')"
run "register a Gemini embedding model" \
    "SELECT name, protocol, status FROM inference.register_external_service(
        'gemini-embed', 'text-embedding-004', '$MOCK', api_key => 'sk-test-demo',
        protocol => 'GEMINI_V1_BETA', functions => '{embeddings}')"
run "register a vLLM server (no key; found through the model list)" \
    "SELECT name, model, has_api_key, status FROM inference.register_external_service(
        'vllm', 'meta/llama-3.1-8b-instruct', '$MOCK/s/vllm', functions => '{chat}')"
run "a wrong key is refused with a diagnosis, and nothing is stored" \
    "SELECT inference.register_external_service('broken', 'gpt-4o-mini', '$MOCK',
        api_key => 'sk-wrong')"
run "list_models (all, then by capability)" \
    "SELECT name, model, protocol, has_api_key, status FROM inference.list_models()"
run "" "SELECT name FROM inference.list_models('chat')"
run "get_external_service" "SELECT * FROM inference.get_external_service('claude')"
run "update: new tags apply; a model change is refused" \
    "SELECT name, tags FROM inference.update_external_service('claude', tags => '{demo,anthropic}')"
run "" "SELECT inference.update_external_service('claude', model => 'claude-haiku-4-5')"
run "register an embedding model and a NIM reranker" \
    "SELECT name, status FROM inference.register_external_service(
        'openai-embed', 'text-embedding-3-small', '$MOCK', api_key => 'sk-test-demo',
        functions => '{embeddings}')
     UNION ALL
     SELECT name, status FROM inference.register_external_service(
        'nim-rerank', 'nvidia/nv-rerankqa-mistral-4b-v3', '$MOCK/s/nim', api_key => 'sk-test-demo',
        functions => '{rerank}')"
run "chat, the same call against three protocols" \
    "SELECT s AS service, inference.chat(s, 'hello from SQL', '{\"system\": \"be brief\", \"max_tokens\": 20}') AS reply
       FROM unnest(ARRAY['openai-chat', 'claude', 'vllm']) s"
run "chat_completion: an OpenAI request in, an OpenAI response out (here from Anthropic)" \
    "SELECT jsonb_pretty(inference.chat_completion('claude',
        '{\"messages\": [{\"role\": \"user\", \"content\": \"what is the weather in Paris\"}],
          \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\",
                      \"parameters\": {\"type\": \"object\"}}}]}')->'choices'->0)"
run "encode_text (OpenAI, base64 on the wire) and Gemini embeddings" \
    "SELECT inference.encode_text('openai-embed', 'PostgreSQL is a database') AS openai,
            inference.encode_text('gemini-embed', 'PostgreSQL is a database', '{\"dimensions\": 4}') AS gemini"
run "encode_text_batch: 1,000 texts in 8 concurrent upstream requests" \
    "SELECT count(*), min(id), max(id), max(array_length(embedding, 1)) AS dims
       FROM inference.encode_text_batch('openai-embed', ARRAY(SELECT 'doc ' || i FROM generate_series(1, 1000) i))"
run "rerank, best first" \
    "SELECT * FROM inference.rerank('nim-rerank', 'postgres extension',
        ARRAY['a cooking recipe', 'a postgres extension in C++', 'postgres docs'])"
run "check_service probes every service now, concurrently" \
    "SELECT name, status, status_message FROM inference.check_service()"
run "deregister" "SELECT inference.deregister_external_service('vllm')"
run "keys are sealed (AES-256-GCM); only the owner can read this table" \
    "SELECT service, length(api_key_sealed) AS sealed_bytes FROM inference.service_secrets"

echo
echo "== the gateway: an OpenAI-compatible API on $GATEWAY, served by PostgreSQL's own workers"
KEY="$(cluster_psql "$PG_DIR" "$PG_PORT" -At -c "SELECT inference.create_access_key('demo-app', requests_per_minute => 600)")"
echo "-- an access key, shown once: ${KEY:0:12}... (stored as its SHA-256)"
for _ in $(seq 1 30); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "$GATEWAY/v1/models")" = 200 ] && break
    sleep 0.1
done
show() {
    echo
    echo "-- $1"
    shift
    curl -s "$@"
    echo
}
show "GET /v1/models" -H "Authorization: Bearer $KEY" "$GATEWAY/v1/models"
show "POST /v1/chat/completions, model = an Anthropic service (translated both ways)" \
    -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "$GATEWAY/v1/chat/completions" \
    -d '{"model": "claude", "messages": [{"role": "user", "content": "hello through the gateway"}]}'
show "the same, streamed (SSE translated event by event)" -N \
    -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "$GATEWAY/v1/chat/completions" \
    -d '{"model": "claude", "stream": true, "messages": [{"role": "user", "content": "stream me"}]}'
show "POST /v1/messages (Anthropic's API, as Claude Code sends it), model = an OpenAI service" \
    -H "x-api-key: $KEY" -H 'anthropic-version: 2023-06-01' -H 'Content-Type: application/json' \
    "$GATEWAY/v1/messages" \
    -d '{"model": "openai-chat", "max_tokens": 50, "messages": [{"role": "user", "content": "hello from an Anthropic client"}]}'
show "POST /v1beta/models/claude:generateContent (Gemini's API), to an Anthropic service" \
    -H "x-goog-api-key: $KEY" -H 'Content-Type: application/json' \
    "$GATEWAY/v1beta/models/claude:generateContent" \
    -d '{"contents": [{"role": "user", "parts": [{"text": "hello from a Gemini client"}]}]}'
show "POST /v1/responses (OpenAI's Responses API), to an Anthropic service" \
    -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "$GATEWAY/v1/responses" \
    -d '{"model": "claude", "instructions": "be brief", "input": "hello from a Responses client"}'
show "POST /v1/completions (legacy completions), passed to an OpenAI service's own route" \
    -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "$GATEWAY/v1/completions" \
    -d '{"model": "openai-chat", "prompt": "once upon a time", "max_tokens": 20}'
show "POST /v1/messages/count_tokens, for an OpenAI service (estimated: OpenAI cannot count)" \
    -H "x-api-key: $KEY" -H 'anthropic-version: 2023-06-01' -H 'Content-Type: application/json' \
    "$GATEWAY/v1/messages/count_tokens" \
    -d '{"model": "openai-chat", "messages": [{"role": "user", "content": "how many tokens is this?"}]}'
show "POST /v1/embeddings to a Gemini service" \
    -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "$GATEWAY/v1/embeddings" \
    -d '{"model": "gemini-embed", "input": ["PostgreSQL"], "dimensions": 4}'
show "POST /v1/rerank, answered by NIM's /v1/ranking" \
    -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "$GATEWAY/v1/rerank" \
    -d '{"model": "nim-rerank", "query": "postgres", "documents": ["a recipe", "postgres docs"]}'
show "pass-through: /inferenceservices/openai-chat/v1/models, the upstream key injected" \
    -H "Authorization: Bearer $KEY" "$GATEWAY/inferenceservices/openai-chat/v1/models"
cluster_psql "$PG_DIR" "$PG_PORT" -c "SELECT inference.revoke_access_key('demo-app')" >/dev/null
sleep 0.5
show "after revoke_access_key('demo-app'), the same key is refused" -w ' (HTTP %{http_code})' \
    -H "Authorization: Bearer $KEY" "$GATEWAY/v1/models"

echo
if [ "${DEMO_KEEP:-0}" = 1 ]; then
    echo "Left running. Connect: psql -h $PG_DIR -p $PG_PORT -U postgres; gateway: $GATEWAY"
    echo "Stop: kill $(cluster_pid "$PG_DIR") $MOCK_PID; rm -rf $WORK"
else
    echo "== demo done; stopping the cluster and the mock"
fi
