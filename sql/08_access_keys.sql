-- Access keys: what create checks, update (NULL keeps a field, clear removes it), rotate and
-- revoke; every refusal changes nothing, and the view never shows a secret.
SELECT length(inference.create_access_key('app', services => '{openai-chat}',
              requests_per_minute => 60, tokens_per_hour => 1000, tenant => 'acme',
              expires_at => now() + interval '1 day')) AS key_length;
CREATE VIEW app_key AS
  SELECT name, tenant, services, requests_per_minute AS rpm, requests_per_hour AS rph,
         tokens_per_hour AS tph, burst, expires_at IS NOT NULL AS expires,
         revoked_at IS NOT NULL AS revoked
    FROM inference.access_keys WHERE name = 'app';
SELECT * FROM app_key;

-- Refused at creation, nothing created.
SELECT inference.create_access_key('App!');
SELECT inference.create_access_key('app');
SELECT inference.create_access_key('other', services => '{openai-chat,nope}');
SELECT inference.create_access_key('other', services => ARRAY['openai-chat', NULL]);
SELECT inference.create_access_key('other', requests_per_minute => 0);
SELECT inference.create_access_key('other', expires_at => now() - interval '1 second');
SELECT count(*) AS others FROM inference.access_keys WHERE name = 'other';

-- NULL leaves a field unchanged; a value replaces it.
SELECT inference.update_access_key('app', requests_per_hour => 500, burst => 10);
SELECT * FROM app_key;

-- clear sets fields back to their defaults: no limit, every service, no tenant, no expiry.
SELECT inference.update_access_key('app',
    clear => '{requests_per_minute,services,tenant,expires_at}');
SELECT * FROM app_key;

-- Refused updates change nothing.
SELECT inference.update_access_key('app', clear => '{rpm,burst}');
SELECT inference.update_access_key('app', clear => ARRAY[NULL]);
SELECT inference.update_access_key('app', tokens_per_hour => 5, clear => '{tokens_per_hour}');
SELECT inference.update_access_key('app', burst => -1);
SELECT inference.update_access_key('app', services => '{nope}');
SELECT inference.update_access_key('nope', burst => 1);
SELECT * FROM app_key;

-- passthrough: true unless created false; update_access_key changes it only when given.
SELECT length(inference.create_access_key('closed', passthrough => false)) AS key_length;
SELECT name, passthrough FROM inference.access_keys WHERE name IN ('app', 'closed') ORDER BY name;
SELECT inference.update_access_key('closed', burst => 5);
SELECT name, passthrough FROM inference.access_keys WHERE name = 'closed';
SELECT inference.update_access_key('closed', passthrough => true);
SELECT inference.update_access_key('app', passthrough => false);
SELECT name, passthrough FROM inference.access_keys WHERE name IN ('app', 'closed') ORDER BY name;
SELECT inference.create_access_key('other', passthrough => NULL);
SELECT count(*) AS others FROM inference.access_keys WHERE name = 'other';
SELECT inference.revoke_access_key('closed');

-- A new secret on rotation (new prefix); revocation keeps the row.
CREATE TEMP TABLE before AS SELECT key_prefix FROM inference.access_keys WHERE name = 'app';
SELECT left(inference.rotate_access_key('app'), 4) AS prefix;
SELECT a.key_prefix <> b.key_prefix AS new_prefix
  FROM inference.access_keys a, before b WHERE a.name = 'app';
SELECT inference.revoke_access_key('app');
SELECT name, revoked FROM app_key;
SELECT inference.rotate_access_key('nope');
SELECT inference.revoke_access_key('nope');

-- No column of the view holds a secret or its hash.
SELECT array_agg(column_name::text ORDER BY ordinal_position) AS columns
  FROM information_schema.columns
 WHERE table_schema = 'inference' AND table_name = 'access_keys';
DROP VIEW app_key;

-- A standby under cluster-wide limits borrows blocks of a key's limits from the primary: as
-- much as the key's buckets hold, shared with the primary's own gateway; nothing for a key
-- that does not exist or is revoked.
SELECT inference.create_access_key('lent', requests_per_minute => 5, tokens_per_hour => 1000) IS NOT NULL AS created;
SELECT * FROM inference_internal.lend_limits('lent', 3, 400);
SELECT * FROM inference_internal.lend_limits('lent', 3, 400);
SELECT * FROM inference_internal.lend_limits('lent', 3, 400);
SELECT * FROM inference_internal.lend_limits('nope', 3, 400);
SELECT inference.revoke_access_key('lent');
SELECT * FROM inference_internal.lend_limits('lent', 3, 400);
SELECT * FROM inference_internal.lend_limits('lent', -1, 0);

-- Tenant limits, shared by every key of the tenant; all limits NULL removes them.
SELECT inference.create_access_key('t1', tenant => 'acme') IS NOT NULL AS created;
SELECT inference.create_access_key('t2', tenant => 'acme', requests_per_minute => 100) IS NOT NULL AS created;
SELECT inference.set_tenant_limits('acme', requests_per_minute => 50, tokens_per_hour => 10000);
SELECT tenant, requests_per_minute, requests_per_hour, tokens_per_hour, burst, keys
  FROM inference.tenant_limits;
SELECT inference.set_tenant_limits('acme', requests_per_hour => 600, burst => 5);
SELECT inference.set_tenant_limits('acme', requests_per_minute => 10, burst => 5);
SELECT tenant, requests_per_minute, requests_per_hour, tokens_per_hour, burst, keys
  FROM inference.tenant_limits;
SELECT inference.set_tenant_limits('solo', tokens_per_hour => 1);
SELECT tenant, keys FROM inference.tenant_limits ORDER BY tenant;
-- Bad input changes nothing.
SELECT inference.set_tenant_limits('acme', requests_per_minute => 0);
SELECT inference.set_tenant_limits(NULL, requests_per_minute => 1);
SELECT inference.set_tenant_limits('', requests_per_minute => 1);
SELECT inference.set_tenant_limits(repeat('x', 63), requests_per_minute => 1);
SELECT inference.set_tenant_limits(E'a\nb', requests_per_minute => 1);
SELECT tenant, requests_per_minute, burst FROM inference.tenant_limits ORDER BY tenant;
SELECT inference.set_tenant_limits('solo');
SELECT inference.set_tenant_limits('acme');
SELECT count(*) AS tenants FROM inference.tenant_limits;
SELECT inference.revoke_access_key('t1'), inference.revoke_access_key('t2');

-- Limits per end user of a key.
SELECT inference.create_access_key('per-user', user_requests_per_minute => 50, user_tokens_per_hour => 1000) IS NOT NULL AS created;
SELECT name, user_requests_per_minute, user_tokens_per_hour FROM inference.access_keys WHERE name = 'per-user';
SELECT inference.update_access_key('per-user', user_requests_per_minute => 0);
SELECT inference.update_access_key('per-user', user_tokens_per_hour => 5, clear => '{user_requests_per_minute}');
SELECT name, user_requests_per_minute, user_tokens_per_hour FROM inference.access_keys WHERE name = 'per-user';
SELECT inference.update_access_key('per-user', clear => '{user_tokens_per_hour,nope}');
SELECT inference.create_access_key('per-user-2', user_tokens_per_hour => -1);
SELECT inference.revoke_access_key('per-user');

-- An error of the API carries none of its wrappers' CONTEXT lines; a caller's own function keeps
-- its lines.
CREATE FUNCTION regress_make_key() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM inference.create_access_key('Bad Name');
END
$$;
SELECT regress_make_key();
DROP FUNCTION regress_make_key();
