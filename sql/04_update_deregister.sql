-- update_external_service: tags, capability tags and the key can change; identity cannot.
SELECT mock.reset();

SELECT name, functions, tags, updated_at > created_at AS updated
  FROM inference.update_external_service('openai-chat', functions => '{chat,tools}',
                                         tags => '{team-b}');

-- A new key is probed with the new key before it replaces the old one.
SELECT name, has_api_key, status
  FROM inference.update_external_service('openai-chat', api_key => 'sk-test-openai-rotated');
SELECT mock.auth_headers(r) AS auth FROM mock.requests('openai') r;

-- A refused new key changes nothing: the old key is still the one used.
SELECT inference.update_external_service('openai-chat', api_key => 'sk-revoked');
SELECT mock.reset();
SELECT name, status FROM inference.check_service('openai-chat');
SELECT mock.auth_headers(r) AS auth FROM mock.requests('openai') r;

-- Identity fields are refused when they differ, naming the field; the same value is a no-op.
SELECT inference.update_external_service('openai-chat', model => 'gpt-4o');
SELECT inference.update_external_service('openai-chat', base_url => 'http://127.0.0.1:18181/other');
SELECT inference.update_external_service('openai-chat', protocol => 'ANTHROPIC_V1');
SELECT inference.update_external_service('openai-chat', allow_insecure => true);
SELECT name, model FROM inference.update_external_service('openai-chat', model => 'gpt-4o-mini',
    base_url => mock.url('openai') || '/', protocol => 'openai_v1', allow_insecure => false);
SELECT mock.error_of($$SELECT inference.update_external_service('nope', tags => '{x}')$$);

-- Deregister removes the service, its secret and its status.
SELECT inference.deregister_external_service('openai-env');
SELECT (SELECT count(*) FROM inference.services WHERE name = 'openai-env') AS services,
       (SELECT count(*) FROM inference.service_secrets WHERE service = 'openai-env') AS secrets,
       (SELECT count(*) FROM inference.service_status WHERE service = 'openai-env') AS statuses;
SELECT mock.error_of($$SELECT inference.deregister_external_service('openai-env')$$);
