#!/usr/bin/env bash
# Sets up and runs pg_inference on an embedded default: a throwaway local cluster with the
# extension preloaded, the mock upstream standing in for OpenAI, Anthropic, Gemini and vLLM, and
# a short demo of every function. Everything it starts is stopped at the end, unless
# DEMO_KEEP=1 (then it prints how to connect and how to stop).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

echo "== checking the Debian packages it needs (installs what is missing; minutes the first time)"
bash scripts/install-deps.sh
# A first build takes a minute or two: say so while it runs rather than stay silent.
echo "== building the extension with PGXS and installing it"
bash scripts/build-install.sh &
build_pid=$!
started=$SECONDS
while kill -0 "$build_pid" 2>/dev/null; do
    sleep 1
    [ $(((SECONDS - started) % 10)) -eq 0 ] && kill -0 "$build_pid" 2>/dev/null &&
        echo "   still building ($((SECONDS - started)) s)"
done
wait "$build_pid"
echo "   built and installed in $((SECONDS - started)) s"

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
# Health rounds every 5 s instead of 300, so that the demo shows the worker at work.
cluster_start "$PG_DIR" "$PG_PORT" "inference.gateway_port = $GATEWAY_PORT" \
    "inference.health_check_interval = '5s'"

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
run "a route: one name for two services, claude three times in four, fallback to the other" \
    "SELECT name, targets FROM inference.create_route('demo-chat',
        '[{\"service\": \"claude\", \"weight\": 3}, {\"service\": \"openai-chat\"}]')"
run "" "SELECT inference.chat('demo-chat', 'hello through a route') AS reply"
run "a pipeline keeps a table's embeddings current: create it (existing rows are queued)" \
    "CREATE TABLE demo_docs (id int PRIMARY KEY, body text NOT NULL, embedding real[]);
     INSERT INTO demo_docs VALUES (1, 'PostgreSQL stores rows'), (2, 'pipelines embed them');
     SELECT name, queued FROM inference.create_pipeline('demo_docs_embedding', 'demo_docs', 'body',
                                                        'openai-embed', destination => 'embedding')"
for _ in $(seq 1 50); do
    [ "$(cluster_psql "$PG_DIR" "$PG_PORT" -At -c "SELECT count(*) FROM demo_docs WHERE embedding IS NULL")" = 0 ] && break
    sleep 0.1
done
run "the pipeline's workers filled the column; an update is embedded again in the background" \
    "SELECT id, body, array_length(embedding, 1) AS dims FROM demo_docs ORDER BY id"
run "" "SELECT name, state, queued, done, failed FROM inference.pipelines"
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
echo "-- GET /metrics (Prometheus text; no key), a few of its lines"
curl -s "$GATEWAY/metrics" | grep -E '^pg_inference_gateway_requests_total' | head -6
# A round that saw the services registered above (the first ran when the cluster started).
for _ in $(seq 1 100); do
    [ "$(cluster_psql "$PG_DIR" "$PG_PORT" -At -c "SELECT last_round_services > 0 FROM inference.health_worker_status()")" = t ] && break
    sleep 0.1
done
run "the health worker: a round every 5 s here (inference.health_check_interval), each service probed" \
    "SELECT state, rounds, last_round_services, last_round_failed, last_round_ms
       FROM inference.health_worker_status()"
run "" "SELECT name, status, checked_at FROM inference.list_models()"
# The usage writer flushes every 2 s (inference.gateway_usage_flush_interval).
sleep 2
run "the usage ledger: every call, gateway keys by name and SQL callers as role:<name>" \
    "SELECT key_name, service, requests, total_tokens FROM inference.usage ORDER BY key_name, service"

echo
if [ "${DEMO_KEEP:-0}" = 1 ]; then
    echo "Left running. Connect: psql -h $PG_DIR -p $PG_PORT -U postgres; gateway: $GATEWAY"
    echo "Stop: kill $(cluster_pid "$PG_DIR") $MOCK_PID; rm -rf $WORK"
else
    echo "== demo done; stopping the cluster and the mock"
fi
