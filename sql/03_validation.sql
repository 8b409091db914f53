-- Every field rule of a service, with the refused value and the message. Nothing here reaches
-- the network (validate => false) and nothing is stored.
CREATE FUNCTION try_register(name text, model text, base_url text, api_key text DEFAULT NULL,
                             protocol text DEFAULT 'OPENAI_V1', functions text[] DEFAULT '{}')
RETURNS text LANGUAGE sql AS $$
    SELECT mock.error_of(format(
        'SELECT inference.register_external_service(%L, %L, %L, api_key => %L, protocol => %L, functions => %L, validate => false)',
        name, model, base_url, api_key, protocol, functions))
$$;

-- name: DNS-style, 1 to 63 characters
SELECT try_register('MyService', 'gpt-4o-mini', 'http://127.0.0.1:18181');
SELECT try_register('my_service', 'gpt-4o-mini', 'http://127.0.0.1:18181');
SELECT try_register(repeat('a', 64), 'gpt-4o-mini', 'http://127.0.0.1:18181');
SELECT try_register('-leading', 'gpt-4o-mini', 'http://127.0.0.1:18181');
SELECT try_register('trailing-', 'gpt-4o-mini', 'http://127.0.0.1:18181');
SELECT try_register('a.-b', 'gpt-4o-mini', 'http://127.0.0.1:18181');
SELECT try_register('a..b', 'gpt-4o-mini', 'http://127.0.0.1:18181');
SELECT try_register('', 'gpt-4o-mini', 'http://127.0.0.1:18181');
SELECT try_register(E'evil\r\nx', 'gpt-4o-mini', 'http://127.0.0.1:18181');
-- accepted: 63 characters, dots and inner dashes
SELECT name FROM inference.register_external_service(repeat('a', 63), 'gpt-4o-mini',
    'http://127.0.0.1:18181', validate => false);
SELECT name FROM inference.register_external_service('team-a.chat-1', 'gpt-4o-mini',
    'http://127.0.0.1:18181', validate => false);

-- model: the upstream's id; '/' allowed, no whitespace, control characters, '?', '#' or '..'
SELECT try_register('m1', 'gpt 4o', 'http://127.0.0.1:18181');
SELECT try_register('m2', E'gpt\n4o', 'http://127.0.0.1:18181');
SELECT try_register('m3', 'gpt?x=1', 'http://127.0.0.1:18181');
SELECT try_register('m4', 'gpt#frag', 'http://127.0.0.1:18181');
SELECT try_register('m5', 'meta/../admin', 'http://127.0.0.1:18181');
SELECT try_register('m6', '', 'http://127.0.0.1:18181');

-- base_url: http(s), host, optional port and path; trailing '/' stripped; no /v1 or /v1beta
SELECT try_register('u1', 'gpt-4o-mini', 'http://127.0.0.1:18181/v1');
SELECT try_register('u2', 'gpt-4o-mini', 'https://api.example.com/v1/');
SELECT try_register('u3', 'gpt-4o-mini', 'https://generativelanguage.example.com/v1beta');
SELECT try_register('u4', 'gpt-4o-mini', 'ftp://127.0.0.1/models');
SELECT try_register('u5', 'gpt-4o-mini', E'http://127.0.0.1:18181/\r\nX-Injected: 1');
SELECT try_register('u6', 'gpt-4o-mini', 'http://user:pass@127.0.0.1:18181');
SELECT try_register('u7', 'gpt-4o-mini', 'http://127.0.0.1:18181/a/../b');
SELECT try_register('u8', 'gpt-4o-mini', 'http://127.0.0.1:18181/?x=1');
SELECT try_register('u9', 'gpt-4o-mini', '127.0.0.1:18181');
SELECT try_register('u10', 'gpt-4o-mini', 'http://127.0.0.1:99999');
SELECT name, base_url FROM inference.register_external_service('u-ok', 'gpt-4o-mini',
    'HTTPS://openrouter.example.com/api///', validate => false);

-- api_key: the key alone
SELECT try_register('k1', 'gpt-4o-mini', 'http://127.0.0.1:18181', 'Bearer sk-test-openai');
SELECT try_register('k2', 'gpt-4o-mini', 'http://127.0.0.1:18181', 'bearer sk-test-openai');
SELECT try_register('k3', 'gpt-4o-mini', 'http://127.0.0.1:18181', E'sk-test\r\nX-Evil: 1');
SELECT try_register('k4', 'gpt-4o-mini', 'http://127.0.0.1:18181', '');
SELECT try_register('k5', 'gpt-4o-mini', 'http://127.0.0.1:18181', 'env:1BAD');
SELECT try_register('k6', 'gpt-4o-mini', 'http://127.0.0.1:18181', 'env:PGI_TEST_UNSET_VARIABLE');

-- protocol and capability tags
SELECT try_register('p1', 'gpt-4o-mini', 'http://127.0.0.1:18181', NULL, 'OPENAI_V2');
SELECT try_register('f1', 'gpt-4o-mini', 'http://127.0.0.1:18181', NULL, 'OPENAI_V1', '{chat,NULL}');

-- Only the three accepted registrations above exist.
SELECT name FROM inference.services WHERE NOT (name = ANY (ARRAY['openai-chat', 'claude', 'gemini',
    'vllm-llama', 'openai-env', 'unchecked', 'tls-openai', 'tls-anthropic', 'tls-gemini']))
 ORDER BY name;
SELECT inference.deregister_external_service(n)
  FROM unnest(ARRAY[repeat('a', 63), 'team-a.chat-1', 'u-ok']) n;
DROP FUNCTION try_register;
