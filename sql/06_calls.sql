-- Calling models from SQL: the exact request each protocol receives, and the values returned.
SELECT mock.reset();

-- chat: OPENAI_V1 gets the options as OpenAI fields.
SELECT inference.chat('openai-chat', 'hello there',
                      '{"system": "be brief", "max_tokens": 50, "temperature": 0.2, "stop": ["END"], "seed": 7}');
SELECT r->>'method' AS method, r->>'route_path' AS path, mock.auth_headers(r) AS auth,
       jsonb_pretty(r->'json') AS body
  FROM mock.last_request('openai') r;

-- ANTHROPIC_V1: top-level system, stop_sequences, and max_tokens from
-- inference.default_max_tokens when the caller gives none.
SELECT inference.chat('claude', 'hello there', '{"system": "be brief", "stop": "END"}');
SELECT r->>'route_path' AS path, mock.auth_headers(r) AS auth, jsonb_pretty(r->'json') AS body
  FROM mock.last_request('anthropic') r;
SET inference.default_max_tokens = 3;
SELECT inference.chat('claude', 'one two three four five');
SELECT r->'json'->'max_tokens' AS max_tokens FROM mock.last_request('anthropic') r;
RESET inference.default_max_tokens;

-- GEMINI_V1_BETA: contents, systemInstruction, generationConfig; "thought" parts are skipped.
SELECT inference.chat('gemini', 'hello there', '{"system": "be brief", "max_tokens": 50, "top_p": 0.9, "stop": ["END"]}');
SELECT r->>'route_path' AS path, mock.auth_headers(r) AS auth, jsonb_pretty(r->'json') AS body
  FROM mock.last_request('gemini') r;

-- An unknown option is refused before anything is sent.
SELECT inference.chat('openai-chat', 'hi', '{"temprature": 1}');

-- chat_completion: an OpenAI request in, an OpenAI response out, tool calls included.
CREATE TEMP TABLE weather_request AS SELECT '{
  "messages": [{"role": "system", "content": "use tools"},
               {"role": "user", "content": "what is the weather in Paris"}],
  "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
  "tool_choice": "auto"}'::jsonb AS request;
SELECT s AS service, c->'choices'->0->>'finish_reason' AS finish_reason,
       c->'choices'->0->'message'->'tool_calls'->0->'function'->>'name' AS tool,
       c->'choices'->0->'message'->'tool_calls'->0->'function'->>'arguments' AS arguments,
       c->'usage'->'total_tokens' = to_jsonb((c->'usage'->>'prompt_tokens')::int + (c->'usage'->>'completion_tokens')::int) AS usage_adds_up
  FROM unnest(ARRAY['openai-chat', 'claude', 'gemini']) s,
       LATERAL inference.chat_completion(s, (SELECT request FROM weather_request)) c;
SELECT r->'json'->'tools' AS anthropic_tools, r->'json'->'tool_choice' AS anthropic_tool_choice,
       r->'json'->'system' AS anthropic_system
  FROM mock.last_request('anthropic') r;
SELECT r->'json'->'tools' AS gemini_tools FROM mock.last_request('gemini') r;

-- A conversation that carries a tool result back, in each protocol's own shape.
CREATE TEMP TABLE tool_result_request AS SELECT '{
  "messages": [{"role": "user", "content": "what is the weather in Paris"},
               {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "{\"celsius\": 21}"},
               {"role": "user", "content": "thanks"}],
  "max_tokens": 20}'::jsonb AS request;
SELECT s AS service, c->'choices'->0->'message'->>'content' AS content,
       c->'choices'->0->>'finish_reason' AS finish_reason
  FROM unnest(ARRAY['openai-chat', 'claude', 'gemini']) s,
       LATERAL inference.chat_completion(s, (SELECT request FROM tool_result_request)) c;
SELECT jsonb_pretty(r->'json'->'messages') AS anthropic_messages FROM mock.last_request('anthropic') r;
SELECT jsonb_pretty(r->'json'->'contents') AS gemini_contents FROM mock.last_request('gemini') r;

-- Stop reasons: a max_tokens cut is "length" whatever the protocol.
SELECT s AS service, c->'choices'->0->>'finish_reason' AS finish_reason,
       c->'choices'->0->'message'->>'content' AS content
  FROM unnest(ARRAY['openai-chat', 'claude', 'gemini']) s,
       LATERAL inference.chat_completion(s, '{"messages": [{"role": "user", "content": "a b c d e f"}], "max_tokens": 2}') c;
SELECT inference.chat_completion('openai-chat', '{"messages": [{"role": "user", "content": "hi"}], "stream": true}');

-- encode_text: OPENAI_V1 asks for base64 floats and decodes them.
SELECT name FROM inference.register_external_service('oa-embed', 'text-embedding-3-small',
    mock.url('oaembed'), api_key => 'sk-test-openai', functions => '{embeddings}');
SELECT inference.encode_text('oa-embed', 'hello world') = mock.embedding('hello world') AS same_as_mock,
       array_length(inference.encode_text('oa-embed', 'hello world'), 1) AS dims;
SELECT r->>'route_path' AS path, r->'json' AS body FROM mock.last_request('oaembed') r;
SELECT inference.encode_text('oa-embed', 'hello', '{"dimensions": 4, "input_type": "query", "truncate": "END"}')
       = mock.embedding('hello', 4) AS with_options;
SELECT r->'json' AS body FROM mock.last_request('oaembed') r;
-- GEMINI_V1_BETA: batchEmbedContents.
SELECT name FROM inference.register_external_service('gem-embed', 'text-embedding-004',
    mock.url('gemembed'), api_key => 'sk-test-gemini', protocol => 'GEMINI_V1_BETA');
SELECT inference.encode_text('gem-embed', 'hello world', '{"dimensions": 6, "input_type": "passage"}')
       = mock.embedding('hello world', 6) AS same_as_mock;
SELECT r->>'route_path' AS path, mock.auth_headers(r) AS auth, r->'json' AS body
  FROM mock.last_request('gemembed') r;
-- Upstreams that ignore or refuse base64 still work.
SELECT name FROM inference.register_external_service('floats-embed', 'text-embedding-3-small',
    mock.url('floats_only'), api_key => 'sk-test-openai');
SELECT name FROM inference.register_external_service('nob64-embed', 'text-embedding-3-small',
    mock.url('reject_base64'), api_key => 'sk-test-openai');
SELECT inference.encode_text('floats-embed', 'x y') = mock.embedding('x y') AS floats_only,
       inference.encode_text('nob64-embed', 'x y') = mock.embedding('x y') AS refuses_base64;
SELECT r->'json'->>'encoding_format' AS asked FROM mock.requests('reject_base64') r
 WHERE r->>'method' = 'POST' ORDER BY (r->>'seq')::int;
-- Anthropic serves no embeddings; bad options and empty input are refused.
SELECT inference.encode_text('claude', 'hello');
SELECT inference.encode_text('oa-embed', 'hello', '{"dimension": 4}');
SELECT inference.encode_text('oa-embed', '');
SELECT inference.encode_text('oa-embed', NULL) IS NULL AS null_in_null_out;
-- A real[] casts to pgvector's vector where pgvector is installed; here, a plain array.
SELECT pg_typeof(inference.encode_text('oa-embed', 'hello'));

-- encode_text_batch: 1,000 inputs in ceil(1000 / batch size) requests, at most
-- inference.max_concurrency in flight, results in input order.
-- (the mock's "slow:100" scenario answers after 100 ms, so requests overlap)
SELECT name FROM inference.register_external_service('slow-embed', 'text-embedding-3-small',
    mock.url('slow:100'), api_key => 'sk-test-openai', validate => false);
SELECT mock.reset();
SET inference.embedding_batch_size = 100;
SET inference.max_concurrency = 3;
CREATE TEMP TABLE batch AS
SELECT * FROM inference.encode_text_batch('slow-embed',
    ARRAY(SELECT 'text number ' || i FROM generate_series(1, 1000) i));
SELECT count(*) AS rows, min(id), max(id), bool_and(array_length(embedding, 1) = 8) AS all_8_dims
  FROM batch;
SELECT id, embedding = mock.embedding('text number ' || id) AS matches_its_input
  FROM batch WHERE id IN (1, 2, 500, 999, 1000) ORDER BY id;
SELECT count(*) AS upstream_requests,
       sum(jsonb_array_length(r->'json'->'input')) AS inputs_sent,
       max((r->>'in_flight')::int) AS max_in_flight
  FROM mock.requests('slow:100') r;
SELECT inference.deregister_external_service('slow-embed');
RESET inference.embedding_batch_size;
RESET inference.max_concurrency;
SELECT count(*) FROM inference.encode_text_batch('gem-embed', ARRAY['a', 'b', 'c']);
SELECT * FROM inference.encode_text_batch('oa-embed', ARRAY['fine', NULL, 'fine']);
SELECT * FROM inference.encode_text_batch('oa-embed', ARRAY['fine', 'fine', '']);
SELECT count(*) FROM inference.encode_text_batch('oa-embed', '{}');

-- Keep-alive: one connection serves a row-by-row loop.
SELECT mock.reset();
SELECT count(*) FROM generate_series(1, 20) i, LATERAL inference.encode_text('oa-embed', 'row ' || i) e;
SELECT count(*) AS requests, count(DISTINCT r->>'conn') AS connections FROM mock.requests('oaembed') r;

-- rerank: NIM serves /v1/ranking; Cohere-style servers /v1/rerank (found after a 404 and
-- remembered); best first, ids 1-based.
SELECT name FROM inference.register_external_service('nim-rerank', 'nvidia/nv-rerankqa-mistral-4b-v3',
    mock.url('nim'), api_key => 'sk-test-openai', functions => '{rerank}');
SELECT name FROM inference.register_external_service('cohere-rerank', 'BAAI/bge-reranker-v2-m3',
    mock.url('cohere'), api_key => 'sk-test-openai', functions => '{rerank}');
SELECT mock.reset();
SELECT id, document, round(score::numeric, 4) AS score
  FROM inference.rerank('nim-rerank', 'postgres extension',
                        ARRAY['a cooking recipe', 'a postgres extension in C++', 'postgres docs']);
SELECT r->>'route_path' AS path, r->'json' AS body FROM mock.requests('nim') r;
SELECT id, document, round(score::numeric, 4) AS score
  FROM inference.rerank('cohere-rerank', 'postgres extension',
                        ARRAY['a cooking recipe', 'a postgres extension in C++', 'postgres docs'], 2);
SELECT id FROM inference.rerank('cohere-rerank', 'postgres', ARRAY['postgres', 'other']);
SELECT r->>'route_path' AS path, r->>'status' AS status FROM mock.requests('cohere') r
 ORDER BY (r->>'seq')::int;
SELECT name, rerank_route FROM inference.services WHERE name IN ('nim-rerank', 'cohere-rerank') ORDER BY name;
SELECT * FROM inference.rerank('claude', 'q', ARRAY['d']);
SELECT name FROM inference.register_external_service('no-rerank', 'gpt-4o-mini', mock.url('not_found'),
    validate => false);
SELECT * FROM inference.rerank('no-rerank', 'q', ARRAY['d']);
SELECT inference.deregister_external_service('no-rerank');
SELECT * FROM inference.rerank('oa-embed', 'q', ARRAY['d', NULL]);
SELECT * FROM inference.rerank('oa-embed', 'q', ARRAY['d'], 0);
DROP TABLE batch, weather_request, tool_result_request;
