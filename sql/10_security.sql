-- Administrators who are not superusers: env:NAME reads only the variables listed in
-- inference.allowed_env_keys, and no service they register may reach an address in
-- inference.blocked_networks, checked after DNS on every connection. Superusers are not
-- restricted.
CREATE ROLE regress_sec_admin LOGIN IN ROLE inference_admin;
GRANT USAGE ON SCHEMA mock TO regress_sec_admin;
SELECT mock.reset();

-- Both settings are for superusers alone, and their syntax is checked.
SET inference.blocked_networks = '169.254.0.0/16, 10.0.0.0/33';
SET inference.blocked_networks = '169.254.0.0/16, metadata.internal';
SET inference.allowed_env_keys = 'OPENAI_API_KEY, 1BAD';
SET ROLE regress_sec_admin;
SHOW inference.blocked_networks;
SET inference.blocked_networks = '';
SET inference.allowed_env_keys = 'PGPASSWORD';

-- env:NAME for an unlisted variable is refused, at registration and at a key update, before
-- the variable is even read.
SELECT mock.error_of($$SELECT inference.register_external_service('sec-env', 'gpt-4o-mini',
    mock.url('sec'), api_key => 'env:PGPASSWORD', validate => false)$$);
SELECT mock.error_of($$SELECT inference.update_external_service('openai-chat',
    api_key => 'env:PGPASSWORD')$$);

-- An upstream in a blocked network is refused, written as an address or as a name that
-- resolves there ("localhost", once 127.0.0.0/8 is blocked).
SELECT mock.error_of($$SELECT inference.register_external_service('sec-meta', 'gpt-4o-mini',
    'http://169.254.169.254', api_key => 'sk-test-sec', validate => false)$$);
SELECT mock.error_of($$SELECT inference.register_external_service('sec-meta', 'gpt-4o-mini',
    'http://[fe80::a9fe:a9fe]:80', validate => false)$$);
SELECT mock.error_of($$SELECT inference.register_external_service('sec-meta', 'gpt-4o-mini',
    'http://[::ffff:169.254.169.254]', validate => false)$$);
RESET ROLE;
SET inference.blocked_networks = '169.254.0.0/16, 127.0.0.0/8';
SET ROLE regress_sec_admin;
SELECT mock.error_of($$SELECT inference.register_external_service('sec-local', 'gpt-4o-mini',
    replace(mock.url('sec'), '127.0.0.1', 'localhost'), validate => false)$$);
RESET ROLE;
RESET inference.blocked_networks;

-- A listed variable may be used; taking it off the list stops the service at its next call.
SET inference.allowed_env_keys = 'PATH';
SET ROLE regress_sec_admin;
SELECT name, has_api_key, status FROM inference.register_external_service('sec-env',
    'gpt-4o-mini', mock.url('sec'), api_key => 'env:PATH', validate => false);
RESET ROLE;
RESET inference.allowed_env_keys;
SET ROLE regress_sec_admin;
SELECT mock.error_of($$SELECT inference.chat('sec-env', 'hi')$$);
RESET ROLE;

-- Checked on every connection: an upstream allowed when it was registered is refused once its
-- network is blocked, on the kept-alive connection too, for whoever calls the service.
SET ROLE regress_sec_admin;
SELECT name, status FROM inference.register_external_service('sec-late', 'gpt-4o-mini',
    mock.url('sec'), api_key => 'sk-test-sec');
SELECT inference.chat('sec-late', 'hello') IS NOT NULL AS answered;
RESET ROLE;
SET inference.blocked_networks = '169.254.0.0/16, 127.0.0.0/8';
SET ROLE regress_sec_admin;
SELECT mock.error_of($$SELECT inference.chat('sec-late', 'hello')$$);
SELECT mock.error_of($$SELECT inference.encode_text('sec-late', 'hello')$$);
SELECT name, status, status_message FROM inference.check_service('sec-late');
RESET ROLE;
SELECT mock.error_of($$SELECT inference.chat('sec-late', 'hello')$$);
SELECT count(*) AS requests_after_blocking
  FROM mock.requests('sec') r WHERE r->>'route_path' = '/v1/chat/completions';

-- A superuser is not restricted: a blocked address, a name resolving there, any variable.
SELECT name, status FROM inference.register_external_service('sec-root', 'gpt-4o-mini',
    replace(mock.url('sec'), '127.0.0.1', 'localhost'), api_key => 'sk-test-sec');
SELECT inference.chat('sec-root', 'hello') IS NOT NULL AS answered;
SELECT name, has_api_key, status FROM inference.register_external_service('sec-root-env',
    'gpt-4o-mini', 'http://169.254.169.254', api_key => 'env:PATH', validate => false);
-- A key set by an administrator who is not a superuser makes the service restricted again.
SET ROLE regress_sec_admin;
SELECT mock.error_of($$SELECT inference.update_external_service('sec-root',
    api_key => 'sk-test-sec2')$$);
RESET ROLE;
RESET inference.blocked_networks;

SELECT inference.deregister_external_service(s)
  FROM unnest(ARRAY['sec-env', 'sec-late', 'sec-root', 'sec-root-env']) s;
REVOKE USAGE ON SCHEMA mock FROM regress_sec_admin;
DROP ROLE regress_sec_admin;
