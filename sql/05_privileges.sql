-- Administration is not for PUBLIC, key tables are for the owner alone, and no key is ever
-- shown.
CREATE ROLE regress_nobody LOGIN;
CREATE ROLE regress_app LOGIN IN ROLE inference_user;
CREATE ROLE regress_ops LOGIN IN ROLE inference_admin;

SET ROLE regress_nobody;
SELECT inference.register_external_service('x', 'gpt-4o-mini', 'http://127.0.0.1:18181',
                                           validate => false);
SELECT * FROM inference.list_models();
SELECT * FROM inference.service_secrets;
RESET ROLE;

SET ROLE regress_app;
-- A calling role sees services (and whether they have a key), never keys or tables.
SELECT name, has_api_key FROM inference.list_models() ORDER BY name;
SELECT inference.register_external_service('x', 'gpt-4o-mini', 'http://127.0.0.1:18181',
                                           validate => false);
SELECT inference.update_external_service('openai-chat', tags => '{x}');
SELECT inference.deregister_external_service('openai-chat');
SELECT * FROM inference.check_service('openai-chat');
SELECT * FROM inference.services;
SELECT * FROM inference.service_secrets;
SELECT inference_internal.live_status('openai-chat');
-- Usage per end user names the callers' users: for admins only.
SELECT end_user FROM inference.usage_by_user WHERE false;
RESET ROLE;

SET ROLE regress_ops;
-- The admin role administers through the functions, yet still cannot read the key table.
SELECT name FROM inference.register_external_service('ops-svc', 'gpt-4o-mini',
    'http://127.0.0.1:18181', api_key => 'sk-test-ops', validate => false);
SELECT inference.deregister_external_service('ops-svc');
SELECT * FROM inference.service_secrets;
SELECT key_name, end_user, service, day, requests, total_tokens FROM inference.usage_by_user
 WHERE false;
RESET ROLE;

-- No row of any table, and no function result, contains a registered key.
SELECT count(*) FILTER (WHERE t::text ~ 'sk-test') AS services_rows_with_key
  FROM inference.services t;
SELECT count(*) FILTER (WHERE t::text ~ 'sk-test') AS secrets_rows_with_key
  FROM inference.service_secrets t;
SELECT count(*) FILTER (WHERE position(convert_to('sk-test', 'UTF8') IN api_key_sealed) > 0)
       AS sealed_with_plain_key
  FROM inference.service_secrets t WHERE api_key_sealed IS NOT NULL;
SELECT count(*) FILTER (WHERE t::text ~ 'sk-test') AS list_models_rows_with_key
  FROM inference.list_models() t;
SELECT count(*) FILTER (WHERE t::text ~ 'sk-test') AS status_rows_with_key
  FROM inference.service_status t;

-- Function privileges as granted by the extension: the API in "inference", the helpers in
-- "inference_internal", whose schema only administrators may use.
SELECT role, has_schema_privilege(role, 'inference_internal', 'USAGE') AS internal_usage
  FROM unnest(ARRAY['regress_nobody', 'inference_user', 'inference_admin']) AS role;
SELECT n.nspname AS schema, p.proname,
       has_function_privilege('regress_nobody', p.oid, 'EXECUTE') AS public_can,
       has_function_privilege('inference_user', p.oid, 'EXECUTE') AS user_can,
       has_function_privilege('inference_admin', p.oid, 'EXECUTE') AS admin_can,
       p.prosecdef AS security_definer
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('inference', 'inference_internal')
 ORDER BY n.nspname, p.proname;

DROP ROLE regress_nobody, regress_app, regress_ops;
