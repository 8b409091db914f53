-- Registering a service probes it first, with exactly the protocol's auth headers.
SELECT mock.reset();

-- OPENAI_V1: Authorization: Bearer, GET /v1/models/<model>
SELECT name, model, protocol, base_url, functions, tags, allow_insecure, has_api_key,
       status, status_message,
       replace(gateway_url, ':' || current_setting('inference.gateway_port') || '/', ':(port)/') AS gateway_url,
       checked_at IS NOT NULL AS checked
  FROM inference.register_external_service(
           'openai-chat', 'gpt-4o-mini', mock.url('openai') || '/',
           api_key => 'sk-test-openai', functions => '{chat}', tags => '{team-a,prod}');
SELECT r->>'method' AS method, r->>'route_path' AS path, mock.auth_headers(r) AS auth
  FROM mock.requests('openai') r;

-- ANTHROPIC_V1: x-api-key and anthropic-version
SELECT name, protocol, has_api_key, status
  FROM inference.register_external_service(
           'claude', 'claude-sonnet-4-5', mock.url('anthropic'),
           api_key => 'sk-test-anthropic', protocol => 'ANTHROPIC_V1', functions => '{chat}');
SELECT r->>'method' AS method, r->>'route_path' AS path, mock.auth_headers(r) AS auth
  FROM mock.requests('anthropic') r;

-- GEMINI_V1_BETA: x-goog-api-key, GET /v1beta/models/<model>; the protocol name is case-insensitive
SELECT name, protocol, has_api_key, status
  FROM inference.register_external_service(
           'gemini', 'gemini-2.0-flash', mock.url('gemini'),
           api_key => 'sk-test-gemini', protocol => 'gemini_v1_beta');
SELECT r->>'method' AS method, r->>'route_path' AS path, mock.auth_headers(r) AS auth
  FROM mock.requests('gemini') r;

-- vLLM serves no per-model route: the probe falls back to the model list. No key: no auth header.
SELECT name, model, has_api_key, status
  FROM inference.register_external_service(
           'vllm-llama', 'meta/llama-3.1-8b-instruct', mock.url('vllm'), functions => '{chat}');
SELECT r->>'method' AS method, r->>'route_path' AS path, mock.auth_headers(r) AS auth
  FROM mock.requests('vllm') r;

-- A key read from the server's environment at call time is never stored.
SELECT name, has_api_key, status
  FROM inference.register_external_service(
           'openai-env', 'text-embedding-3-small', mock.url('envkey'),
           api_key => 'env:PGI_TEST_KEY_ENV', functions => '{embeddings}');
SELECT mock.auth_headers(r) AS auth FROM mock.requests('envkey') r;
SELECT service, api_key_sealed IS NULL AS nothing_sealed, api_key_env
  FROM inference.service_secrets WHERE service = 'openai-env';

-- validate => false stores without a probe; the status says it is not verified yet.
SELECT name, status, status_message
  FROM inference.register_external_service(
           'unchecked', 'gpt-4o-mini', mock.url('unchecked'), validate => false);
SELECT count(*) AS probes FROM mock.requests('unchecked');

-- Keys are stored sealed (AES-256-GCM: version byte, 12-byte nonce, ciphertext, 16-byte tag).
SELECT service, get_byte(api_key_sealed, 0) AS version,
       length(api_key_sealed) = 1 + 12 + length('sk-test-openai') + 16 AS sealed_length_ok,
       position(convert_to('sk-test-openai', 'UTF8') IN api_key_sealed) = 0 AS no_plain_key
  FROM inference.service_secrets WHERE service = 'openai-chat';

-- list_models filters on a capability tag; get_external_service shows one service.
SELECT name, protocol, functions FROM inference.list_models('chat');
SELECT name, model, status FROM inference.list_models();
SELECT name, base_url FROM inference.get_external_service('vllm-llama');
SELECT * FROM inference.get_external_service('nope');

-- A duplicate name is refused with SQLSTATE 23505.
SELECT mock.error_of($$SELECT inference.register_external_service(
    'openai-chat', 'gpt-4o-mini', mock.url('openai'), api_key => 'sk-test-openai')$$);

-- check_service probes now (one service or all, concurrently) and records the result.
SELECT name, status, status_message, checked_at IS NOT NULL AS checked
  FROM inference.check_service('unchecked');
SELECT name, status FROM inference.check_service() ORDER BY name;
SELECT service, status FROM inference.service_status ORDER BY service;
SELECT mock.error_of($$SELECT * FROM inference.check_service('nope')$$);
