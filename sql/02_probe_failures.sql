-- A failed probe refuses the registration with its diagnosis and stores nothing.
SELECT mock.reset();

-- Wrong key, for each protocol (Gemini answers a bad key with 400 API_KEY_INVALID).
SELECT inference.register_external_service('bad-key-openai', 'gpt-4o-mini', mock.url('k1'),
                                           api_key => 'sk-wrong');
SELECT inference.register_external_service('bad-key-anthropic', 'claude-sonnet-4-5', mock.url('k2'),
                                           api_key => 'sk-wrong', protocol => 'ANTHROPIC_V1');
SELECT inference.register_external_service('bad-key-gemini', 'gemini-2.0-flash', mock.url('k3'),
                                           api_key => 'sk-wrong', protocol => 'GEMINI_V1_BETA');
SELECT mock.error_of($$SELECT inference.register_external_service('bad-key-openai', 'gpt-4o-mini',
                       mock.url('k1'), api_key => 'sk-wrong')$$) AS sqlstate_and_message;

-- A model the upstream does not serve.
SELECT inference.register_external_service('no-model-openai', 'no-such-model', mock.url('m1'),
                                           api_key => 'sk-test-openai');
SELECT inference.register_external_service('no-model-anthropic', 'no-such-model', mock.url('m2'),
                                           api_key => 'sk-test-anthropic', protocol => 'ANTHROPIC_V1');
SELECT inference.register_external_service('no-model-gemini', 'no-such-model', mock.url('m3'),
                                           api_key => 'sk-test-gemini', protocol => 'GEMINI_V1_BETA');
-- vLLM: the per-model route 404s, and the list does not contain the model either.
SELECT inference.register_external_service('no-model-vllm', 'no-such-model', mock.url('vllm'));

-- Nothing listens on port 18189.
SELECT mock.error_of($$SELECT inference.register_external_service('down-openai', 'gpt-4o-mini',
    'http://127.0.0.1:18189', api_key => 'sk-test-openai')$$);
SELECT mock.error_of($$SELECT inference.register_external_service('down-anthropic', 'claude-sonnet-4-5',
    'http://127.0.0.1:18189', api_key => 'sk-test-anthropic', protocol => 'ANTHROPIC_V1')$$);
SELECT mock.error_of($$SELECT inference.register_external_service('down-gemini', 'gemini-2.0-flash',
    'http://127.0.0.1:18189', api_key => 'sk-test-gemini', protocol => 'GEMINI_V1_BETA')$$);

-- HTTPS with a self-signed certificate is refused, with a hint about allow_insecure ...
SELECT inference.register_external_service('tls-openai', 'gpt-4o-mini', mock.tls_url('t1'),
                                           api_key => 'sk-test-openai');
SELECT inference.register_external_service('tls-anthropic', 'claude-sonnet-4-5', mock.tls_url('t2'),
                                           api_key => 'sk-test-anthropic', protocol => 'ANTHROPIC_V1');
SELECT inference.register_external_service('tls-gemini', 'gemini-2.0-flash', mock.tls_url('t3'),
                                           api_key => 'sk-test-gemini', protocol => 'GEMINI_V1_BETA');
-- ... and accepted with allow_insecure => true.
SELECT name, allow_insecure, status FROM inference.register_external_service(
    'tls-openai', 'gpt-4o-mini', mock.tls_url('t1'), api_key => 'sk-test-openai',
    allow_insecure => true);
SELECT name, allow_insecure, status FROM inference.register_external_service(
    'tls-anthropic', 'claude-sonnet-4-5', mock.tls_url('t2'), api_key => 'sk-test-anthropic',
    protocol => 'ANTHROPIC_V1', allow_insecure => true);
SELECT name, allow_insecure, status FROM inference.register_external_service(
    'tls-gemini', 'gemini-2.0-flash', mock.tls_url('t3'), api_key => 'sk-test-gemini',
    protocol => 'GEMINI_V1_BETA', allow_insecure => true);

-- The rest of the diagnoses (README, Health checks), through scenarios of the mock.
SELECT inference.register_external_service('s-forbidden', 'gpt-4o-mini', mock.url('forbidden'),
                                           api_key => 'sk-test-openai');
SELECT inference.register_external_service('s-quota', 'gpt-4o-mini', mock.url('quota'),
                                           api_key => 'sk-test-openai');
SELECT inference.register_external_service('s-ratelimited', 'gpt-4o-mini', mock.url('rate_limited'),
                                           api_key => 'sk-test-openai');
SELECT inference.register_external_service('s-unavailable', 'gpt-4o-mini', mock.url('unavailable'),
                                           api_key => 'sk-test-openai');
SELECT inference.register_external_service('s-overloaded', 'claude-sonnet-4-5', mock.url('overloaded'),
                                           api_key => 'sk-test-anthropic', protocol => 'ANTHROPIC_V1');
SELECT inference.register_external_service('s-servererror', 'gpt-4o-mini', mock.url('server_error'),
                                           api_key => 'sk-test-openai');
-- The harness sets inference.health_check_timeout = 3s: a hanging upstream fails after it.
SELECT mock.error_of($$SELECT inference.register_external_service('s-hang', 'gpt-4o-mini',
    mock.url('hang'), api_key => 'sk-test-openai')$$);

-- None of the refused services left a row anywhere.
SELECT count(*) AS services FROM inference.services
 WHERE name NOT IN ('openai-chat', 'claude', 'gemini', 'vllm-llama', 'openai-env', 'unchecked',
                    'tls-openai', 'tls-anthropic', 'tls-gemini');
SELECT count(*) AS secrets FROM inference.service_secrets
 WHERE service NOT IN (SELECT name FROM inference.services);
