-- pg_inference 0.2.0. The same script also completes an upgrade from 0.1.0 (the upgrade script
-- is sql/upgrade/0.1.0--0.2.0.sql followed by this one): the tables 0.1.0 had are created only
-- if missing (the upgrade has altered them to this shape first), and functions and views are
-- created or replaced.
\echo Use "CREATE EXTENSION pg_inference" to load this file. \quit

-- Roles through which the extension grants its functions. Roles are cluster-wide, so a second
-- database (or a restore) finds them already there.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'inference_user') THEN
        CREATE ROLE inference_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'inference_admin') THEN
        CREATE ROLE inference_admin NOLOGIN;
    END IF;
END
$$;
GRANT inference_user TO inference_admin;
GRANT USAGE ON SCHEMA inference TO inference_user;

-- The functions the API is built on (C entry points, triggers, the usage writer's) live apart,
-- out of users' sight in \df inference.*: only administrators may use the schema, and only the
-- functions granted to them below.
CREATE SCHEMA inference_internal;
REVOKE ALL ON SCHEMA inference_internal FROM PUBLIC;
GRANT USAGE ON SCHEMA inference_internal TO inference_admin;

-------------------------------------------------------------------------------------------------
-- Catalog. Only the extension owner can read these tables: they hold sealed keys, and the
-- functions that need them are SECURITY DEFINER.

CREATE TABLE IF NOT EXISTS inference.services (
    name           text PRIMARY KEY,
    model          text NOT NULL,
    base_url       text NOT NULL,
    protocol       text NOT NULL CHECK (protocol IN ('OPENAI_V1', 'GEMINI_V1_BETA', 'ANTHROPIC_V1')),
    functions      text[] NOT NULL DEFAULT '{}',
    tags           text[] NOT NULL DEFAULT '{}',
    allow_insecure boolean NOT NULL DEFAULT false,
    -- which rerank route the upstream answered on ('ranking' or 'rerank'), learned on first use
    rerank_route   text CHECK (rerank_route IN ('ranking', 'rerank')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- Since 0.2.0 (columns keep the order an upgrade from 0.1.0 gives them):
    -- the longest one upstream request may take; NULL: inference.request_timeout
    request_timeout interval,
    -- TLS files the server reads (set by superusers only): a CA bundle to verify the endpoint
    -- against instead of the system's, and a client certificate with its key
    ca_file          text,
    client_cert_file text,
    client_key_file  text,
    -- whether the role that registered the service (or last set its key) was a superuser; when
    -- not, inference.allowed_env_keys and inference.blocked_networks apply to every use of it
    registered_by_superuser boolean NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS inference.service_secrets (
    service        text PRIMARY KEY REFERENCES inference.services (name) ON DELETE CASCADE,
    -- AES-256-GCM: version byte, nonce, ciphertext, tag; the service name is the associated data
    api_key_sealed bytea,
    -- the name of a server environment variable (api_key => 'env:NAME')
    api_key_env    text,
    CHECK ((api_key_sealed IS NULL) <> (api_key_env IS NULL))
);

-- The last probe result of each service, kept for inspection across restarts. What functions
-- report as the live status comes from shared memory.
CREATE TABLE IF NOT EXISTS inference.service_status (
    service        text PRIMARY KEY REFERENCES inference.services (name) ON DELETE CASCADE,
    status         text NOT NULL,
    status_message text,
    checked_at     timestamptz
);

REVOKE ALL ON inference.services, inference.service_secrets, inference.service_status FROM PUBLIC;

-- pg_dump carries the registry (keys stay sealed); statuses are not worth restoring.
SELECT pg_catalog.pg_extension_config_dump('inference.services', '');
SELECT pg_catalog.pg_extension_config_dump('inference.service_secrets', '');

-- 0.1.0 had it already: an upgrade keeps it, and the functions that return it.
DO $$
BEGIN
    CREATE TYPE inference.service_info AS (
        name           text,
        model          text,
        protocol       text,
        base_url       text,
        functions      text[],
        tags           text[],
        allow_insecure boolean,
        has_api_key    boolean,
        status         text,
        status_message text,
        checked_at     timestamptz,
        gateway_url    text,
        created_at     timestamptz,
        updated_at     timestamptz
    );
EXCEPTION WHEN duplicate_object THEN NULL;
END
$$;

-------------------------------------------------------------------------------------------------
-- Internal C functions; PUBLIC cannot execute them, the SECURITY DEFINER wrappers below can.

CREATE OR REPLACE FUNCTION inference_internal.register_external_service(
    name text, model text, base_url text, api_key text, protocol text, functions text[],
    tags text[], allow_insecure boolean, validate boolean, request_timeout interval,
    ca_file text, client_cert_file text, client_key_file text)
RETURNS void AS 'MODULE_PATHNAME', 'pgi_register_external_service' LANGUAGE C VOLATILE;

CREATE OR REPLACE FUNCTION inference_internal.update_external_service(
    name text, api_key text, functions text[], tags text[], model text, base_url text,
    protocol text, allow_insecure boolean, request_timeout interval, ca_file text,
    client_cert_file text, client_key_file text)
RETURNS void AS 'MODULE_PATHNAME', 'pgi_update_external_service' LANGUAGE C VOLATILE;

CREATE OR REPLACE FUNCTION inference_internal.deregister_external_service(name text)
RETURNS void AS 'MODULE_PATHNAME', 'pgi_deregister_external_service' LANGUAGE C STRICT VOLATILE;

CREATE OR REPLACE FUNCTION inference_internal.live_status(
    name text, OUT status text, OUT status_message text, OUT checked_at timestamptz)
RETURNS record AS 'MODULE_PATHNAME', 'pgi_live_status' LANGUAGE C STRICT VOLATILE;

CREATE OR REPLACE FUNCTION inference_internal.check_services(name text)
RETURNS TABLE (name text, status text, status_message text, checked_at timestamptz)
AS 'MODULE_PATHNAME', 'pgi_check_services' LANGUAGE C CALLED ON NULL INPUT VOLATILE;

REVOKE ALL ON FUNCTION
    inference_internal.register_external_service(text, text, text, text, text, text[], text[], boolean, boolean, interval, text, text, text),
    inference_internal.update_external_service(text, text, text[], text[], text, text, text, boolean, interval, text, text, text),
    inference_internal.deregister_external_service(text),
    inference_internal.live_status(text),
    inference_internal.check_services(text)
FROM PUBLIC;

CREATE OR REPLACE FUNCTION inference_internal.gateway_base_url() RETURNS text
AS 'MODULE_PATHNAME', 'pgi_gateway_base_url' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION inference_internal.gateway_base_url() FROM PUBLIC;

-------------------------------------------------------------------------------------------------
-- Public API

-- The library's version; refused, like every function, while the extension's SQL objects are at
-- another (ALTER EXTENSION pg_inference UPDATE brings them to it).
CREATE OR REPLACE FUNCTION inference.version() RETURNS text
AS 'MODULE_PATHNAME', 'pgi_version' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION inference.version() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION inference.version() TO inference_user;

CREATE OR REPLACE FUNCTION inference.list_models(function text DEFAULT NULL)
RETURNS SETOF inference.service_info
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.name, s.model, s.protocol, s.base_url, s.functions, s.tags, s.allow_insecure,
           EXISTS (SELECT 1 FROM inference.service_secrets k WHERE k.service = s.name),
           st.status, st.status_message, st.checked_at,
           inference_internal.gateway_base_url() || '/inferenceservices/' || s.name,
           s.created_at, s.updated_at
      FROM inference.services s,
           LATERAL inference_internal.live_status(s.name) st
     WHERE $1 IS NULL OR $1 = ANY (s.functions)
     ORDER BY s.name
$$;

CREATE OR REPLACE FUNCTION inference.get_external_service(name text)
RETURNS SETOF inference.service_info
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM inference.services s WHERE s.name = $1) THEN
        RAISE EXCEPTION 'service "%" does not exist', $1
            USING ERRCODE = 'undefined_object',
                  HINT = 'Call inference.list_models() to see the registered services.';
    END IF;
    RETURN QUERY SELECT * FROM inference.list_models() m WHERE m.name = $1;
END
$$;

CREATE OR REPLACE FUNCTION inference.register_external_service(
    name text, model text, base_url text,
    api_key text DEFAULT NULL,
    protocol text DEFAULT 'OPENAI_V1',
    functions text[] DEFAULT '{}',
    tags text[] DEFAULT '{}',
    allow_insecure boolean DEFAULT false,
    validate boolean DEFAULT true,
    request_timeout interval DEFAULT NULL,
    ca_file text DEFAULT NULL,
    client_cert_file text DEFAULT NULL,
    client_key_file text DEFAULT NULL)
RETURNS SETOF inference.service_info
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT inference_internal.register_external_service($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                                                $12, $13);
    SELECT * FROM inference.get_external_service($1);
$$;

CREATE OR REPLACE FUNCTION inference.update_external_service(
    name text,
    api_key text DEFAULT NULL,
    functions text[] DEFAULT NULL,
    tags text[] DEFAULT NULL,
    model text DEFAULT NULL,
    base_url text DEFAULT NULL,
    protocol text DEFAULT NULL,
    allow_insecure boolean DEFAULT NULL,
    request_timeout interval DEFAULT NULL,
    ca_file text DEFAULT NULL,
    client_cert_file text DEFAULT NULL,
    client_key_file text DEFAULT NULL)
RETURNS SETOF inference.service_info
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT inference_internal.update_external_service($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                                              $12);
    SELECT * FROM inference.get_external_service($1);
$$;

-- Deregistering a service that an access key or a route names: refused unless force, which
-- removes the service from those keys' lists and routes' targets.
CREATE OR REPLACE FUNCTION inference.deregister_external_service(name text, force boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys text;
    routes text;
    pipelines text;
    emptied record;
BEGIN
    SELECT string_agg(format('"%s"', k.name), ', ' ORDER BY k.name) INTO keys
      FROM inference.access_key_store k WHERE $1 = ANY (k.services);
    IF keys IS NOT NULL AND NOT coalesce($2, false) THEN
        RAISE EXCEPTION 'service "%" is named by access key %', $1, keys
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Pass force => true to remove the service from those keys as well.';
    END IF;
    SELECT string_agg(format('"%s"', r.name), ', ' ORDER BY r.name) INTO routes
      FROM inference.route_store r
     WHERE EXISTS (SELECT 1 FROM jsonb_array_elements(r.targets) t WHERE t->>'service' = $1);
    IF routes IS NOT NULL AND NOT coalesce($2, false) THEN
        RAISE EXCEPTION 'service "%" is a target of route %', $1, routes
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Pass force => true to remove the service from those routes as well (a route left without targets is dropped), or change them with inference.update_route().';
    END IF;
    SELECT string_agg(format('"%s"', p.name), ', ' ORDER BY p.name) INTO pipelines
      FROM inference.pipeline_store p WHERE p.service = $1;
    IF pipelines IS NOT NULL AND NOT coalesce($2, false) THEN
        RAISE EXCEPTION 'service "%" is used by pipeline %', $1, pipelines
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Pass force => true to drop those pipelines as well, or drop them with inference.drop_pipeline().';
    END IF;
    PERFORM inference.drop_pipeline(p.name) FROM inference.pipeline_store p WHERE p.service = $1;
    UPDATE inference.access_key_store k SET services = array_remove(k.services, $1)
     WHERE $1 = ANY (k.services);
    FOR emptied IN
        UPDATE inference.route_store r
           SET targets = (SELECT coalesce(jsonb_agg(t ORDER BY n), '[]')
                            FROM jsonb_array_elements(r.targets) WITH ORDINALITY AS e (t, n)
                           WHERE t->>'service' <> $1),
               updated_at = now()
         WHERE EXISTS (SELECT 1 FROM jsonb_array_elements(r.targets) t WHERE t->>'service' = $1)
        RETURNING r.name, r.targets
    LOOP
        IF jsonb_array_length(emptied.targets) = 0 THEN
            PERFORM inference.drop_route(emptied.name);
            RAISE NOTICE 'route "%" had no other target and was dropped', emptied.name;
        END IF;
    END LOOP;
    PERFORM inference_internal.deregister_external_service($1);
END
$$;

CREATE OR REPLACE FUNCTION inference.check_service(name text DEFAULT NULL)
RETURNS TABLE (name text, status text, status_message text, checked_at timestamptz)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM inference_internal.check_services($1);
$$;

-------------------------------------------------------------------------------------------------
-- Privileges: administration through inference_admin, calling through inference_user.

REVOKE ALL ON FUNCTION
    inference.register_external_service(text, text, text, text, text, text[], text[], boolean, boolean, interval, text, text, text),
    inference.update_external_service(text, text, text[], text[], text, text, text, boolean, interval, text, text, text),
    inference.deregister_external_service(text, boolean),
    inference.check_service(text),
    inference.list_models(text),
    inference.get_external_service(text)
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    inference.register_external_service(text, text, text, text, text, text[], text[], boolean, boolean, interval, text, text, text),
    inference.update_external_service(text, text, text[], text[], text, text, text, boolean, interval, text, text, text),
    inference.deregister_external_service(text, boolean),
    inference.check_service(text)
TO inference_admin;

GRANT EXECUTE ON FUNCTION
    inference.list_models(text),
    inference.get_external_service(text)
TO inference_user;

-------------------------------------------------------------------------------------------------
-- Calling models. SECURITY DEFINER: they read the sealed key of the service they call.

CREATE OR REPLACE FUNCTION inference.encode_text(service text, input text, options jsonb DEFAULT '{}')
RETURNS real[] AS 'MODULE_PATHNAME', 'pgi_encode_text'
LANGUAGE C STRICT VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION inference.encode_text_batch(service text, inputs text[], options jsonb DEFAULT '{}')
RETURNS TABLE (id int, embedding real[]) AS 'MODULE_PATHNAME', 'pgi_encode_text_batch'
LANGUAGE C STRICT VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION inference.chat(service text, prompt text, options jsonb DEFAULT '{}')
RETURNS text AS 'MODULE_PATHNAME', 'pgi_chat'
LANGUAGE C STRICT VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- The prompts concurrently (inference.max_concurrency), results in input order; with
-- throw_on_error => false a failed prompt gives a NULL reply and its error.
CREATE OR REPLACE FUNCTION inference.chat_batch(service text, prompts text[], options jsonb DEFAULT '{}',
                                     throw_on_error boolean DEFAULT true)
RETURNS TABLE (id int, reply text, error text) AS 'MODULE_PATHNAME', 'pgi_chat_batch'
LANGUAGE C CALLED ON NULL INPUT VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION inference.chat_completion(service text, request jsonb)
RETURNS jsonb AS 'MODULE_PATHNAME', 'pgi_chat_completion'
LANGUAGE C STRICT VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION inference.rerank(service text, query text, documents text[], top_n int DEFAULT NULL)
RETURNS TABLE (id int, document text, score double precision) AS 'MODULE_PATHNAME', 'pgi_rerank'
LANGUAGE C CALLED ON NULL INPUT VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION
    inference.encode_text(text, text, jsonb),
    inference.encode_text_batch(text, text[], jsonb),
    inference.chat(text, text, jsonb),
    inference.chat_batch(text, text[], jsonb, boolean),
    inference.chat_completion(text, jsonb),
    inference.rerank(text, text, text[], int)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    inference.encode_text(text, text, jsonb),
    inference.encode_text_batch(text, text[], jsonb),
    inference.chat(text, text, jsonb),
    inference.chat_batch(text, text[], jsonb, boolean),
    inference.chat_completion(text, jsonb),
    inference.rerank(text, text, text[], int)
TO inference_user;

-------------------------------------------------------------------------------------------------
-- Health worker — begin. The worker's report on itself, read from shared memory:
--   pid            the worker's process id; NULL when no worker runs
--   database       inference.database, the one database whose services the worker checks
--   state          off (library not in shared_preload_libraries: no worker), stopped, starting,
--                  no extension (waiting for CREATE EXTENSION in that database), sleeping, checking
--   rounds         rounds completed since the server started
--   last_round_at, last_round_ms, last_round_services, last_round_failed
--                  start, wall-clock duration, service count and failures of the last round
--   last_error     why the last round failed (the worker retries at the next interval), else NULL

CREATE OR REPLACE FUNCTION inference.health_worker_status(
    OUT pid integer, OUT database text, OUT state text, OUT rounds bigint,
    OUT last_round_at timestamptz, OUT last_round_ms double precision,
    OUT last_round_services integer, OUT last_round_failed integer, OUT last_error text)
RETURNS record AS 'MODULE_PATHNAME', 'pgi_health_worker_status' LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION inference.health_worker_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION inference.health_worker_status() TO inference_admin;
-- Health worker — end.

-------------------------------------------------------------------------------------------------
-- Gateway access keys. Keys are shown once and stored as SHA-256 hashes.

CREATE TABLE IF NOT EXISTS inference.access_key_store (
    name                text PRIMARY KEY,
    key_hash            bytea NOT NULL UNIQUE,
    key_prefix          text NOT NULL,
    tenant              text,
    services            text[],          -- NULL: every service
    requests_per_minute int CHECK (requests_per_minute > 0),
    requests_per_hour   int CHECK (requests_per_hour > 0),
    tokens_per_hour     bigint CHECK (tokens_per_hour > 0),
    burst               int CHECK (burst > 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz,
    revoked_at          timestamptz,
    last_used_at        timestamptz,
    -- Since 0.2.0 (columns keep the order an upgrade from 0.1.0 gives them):
    -- limits per end user of the key (docs/routing.md)
    user_requests_per_minute int CHECK (user_requests_per_minute > 0),
    user_tokens_per_hour     bigint CHECK (user_tokens_per_hour > 0),
    -- may use the gateway's /inferenceservices/ pass-through
    passthrough         boolean NOT NULL DEFAULT true,
    -- a budget in money per calendar period, UTC (docs/spend.md)
    budget              numeric CHECK (budget > 0),
    budget_period       text NOT NULL DEFAULT 'month'
                        CHECK (budget_period IN ('day', 'week', 'month', 'total'))
);
REVOKE ALL ON inference.access_key_store FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inference.access_key_store', '');

CREATE OR REPLACE VIEW inference.access_keys AS
    SELECT name, key_prefix, tenant, services, requests_per_minute, requests_per_hour,
           tokens_per_hour, burst, passthrough, created_at, expires_at, revoked_at, last_used_at,
           user_requests_per_minute, user_tokens_per_hour, budget, budget_period
      FROM inference.access_key_store;
REVOKE ALL ON inference.access_keys FROM PUBLIC;
GRANT SELECT ON inference.access_keys TO inference_admin;

CREATE OR REPLACE FUNCTION inference_internal.new_access_key() RETURNS text
AS 'MODULE_PATHNAME', 'pgi_new_access_key' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION inference_internal.new_access_key() FROM PUBLIC;

-- Checks the optional fields of create/update_access_key; raises 22023 or 42704 with a hint.
CREATE OR REPLACE FUNCTION inference_internal.check_access_key_fields(
    services text[], requests_per_minute int, requests_per_hour int, tokens_per_hour bigint,
    burst int, expires_at timestamptz, user_requests_per_minute int DEFAULT NULL,
    user_tokens_per_hour bigint DEFAULT NULL, budget numeric DEFAULT NULL,
    budget_period text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    unknown text;
BEGIN
    IF array_position(services, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'services must not contain NULL elements'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Remove the NULL elements.';
    END IF;
    SELECT string_agg(format('"%s"', s), ', ') INTO unknown
      FROM unnest(services) s
     WHERE NOT EXISTS (SELECT 1 FROM inference.services v WHERE v.name = s)
       AND NOT EXISTS (SELECT 1 FROM inference.route_store r WHERE r.name = s);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown service %', unknown
            USING ERRCODE = 'undefined_object',
                  HINT = 'Call inference.list_models() to see the registered services, and read inference.routes for the routes.';
    END IF;
    IF requests_per_minute <= 0 OR requests_per_hour <= 0 OR tokens_per_hour <= 0 OR burst <= 0
       OR user_requests_per_minute <= 0 OR user_tokens_per_hour <= 0 THEN
        RAISE EXCEPTION 'limits must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL for no limit (in update_access_key, NULL leaves a limit unchanged and clear => ''{name}'' removes it).';
    END IF;
    IF expires_at <= now() THEN
        RAISE EXCEPTION 'expires_at must be in the future'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use revoke_access_key to end a key now.';
    END IF;
    IF budget <= 0 OR budget IN ('NaN'::numeric, 'Infinity'::numeric) THEN
        RAISE EXCEPTION 'budget must be a positive amount'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A budget is an amount in the currency of the services'' prices, as inference.prices shows them; pass NULL for no budget.';
    END IF;
    IF budget_period NOT IN ('day', 'week', 'month', 'total') THEN
        RAISE EXCEPTION 'invalid budget_period "%"', budget_period
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''day'', ''week'' or ''month'' (calendar periods, UTC) or ''total'' (never renews).';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION inference_internal.check_access_key_fields(text[], int, int, bigint, int, timestamptz, int, bigint, numeric, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION inference.create_access_key(
    name text,
    services text[] DEFAULT NULL,
    requests_per_minute int DEFAULT NULL,
    requests_per_hour int DEFAULT NULL,
    tokens_per_hour bigint DEFAULT NULL,
    burst int DEFAULT NULL,
    tenant text DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL,
    passthrough boolean DEFAULT true,
    user_requests_per_minute int DEFAULT NULL,
    user_tokens_per_hour bigint DEFAULT NULL,
    budget numeric DEFAULT NULL,
    budget_period text DEFAULT 'month')
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key text := inference_internal.new_access_key();
BEGIN
    IF $1 IS NULL OR $1 !~ '^[a-z0-9][a-z0-9._-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid access key name "%"', $1
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 1 to 63 lowercase letters, digits, ".", "_" and "-", starting with a letter or digit.';
    END IF;
    IF EXISTS (SELECT 1 FROM inference.access_key_store k WHERE k.name = $1) THEN
        RAISE EXCEPTION 'access key "%" already exists', $1
            USING ERRCODE = 'unique_violation',
                  HINT = 'Use rotate_access_key for a new secret, or update_access_key for its settings.';
    END IF;
    PERFORM inference_internal.check_access_key_fields($2, $3, $4, $5, $6, $8, $10, $11, $12, $13);
    IF $9 IS NULL THEN
        RAISE EXCEPTION 'passthrough must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass true to allow the gateway''s /inferenceservices/ pass-through, false to refuse it.';
    END IF;
    INSERT INTO inference.access_key_store (name, key_hash, key_prefix, tenant, services,
        requests_per_minute, requests_per_hour, tokens_per_hour, burst, expires_at, passthrough,
        user_requests_per_minute, user_tokens_per_hour, budget, budget_period)
    VALUES ($1, sha256(convert_to(key, 'UTF8')), left(key, 12), $7, $2, $3, $4, $5, $6, $8, $9,
            $10, $11, $12, coalesce($13, 'month'));
    RETURN key;
END
$$;

CREATE OR REPLACE FUNCTION inference.rotate_access_key(name text) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key text := inference_internal.new_access_key();
BEGIN
    UPDATE inference.access_key_store k
       SET key_hash = sha256(convert_to(key, 'UTF8')), key_prefix = left(key, 12)
     WHERE k.name = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'access key "%" does not exist', $1
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM inference.access_keys lists them.';
    END IF;
    RETURN key;
END
$$;

-- NULL leaves a field as it is; `clear` names the fields to set back to their default (no limit,
-- every service, no tenant, no expiry), since NULL cannot say that here.
CREATE OR REPLACE FUNCTION inference.update_access_key(
    name text,
    services text[] DEFAULT NULL,
    requests_per_minute int DEFAULT NULL,
    requests_per_hour int DEFAULT NULL,
    tokens_per_hour bigint DEFAULT NULL,
    burst int DEFAULT NULL,
    tenant text DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL,
    clear text[] DEFAULT NULL,
    passthrough boolean DEFAULT NULL,
    user_requests_per_minute int DEFAULT NULL,
    user_tokens_per_hour bigint DEFAULT NULL,
    budget numeric DEFAULT NULL,
    budget_period text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fields constant text[] := ARRAY['services', 'requests_per_minute', 'requests_per_hour',
                                    'tokens_per_hour', 'burst', 'tenant', 'expires_at',
                                    'user_requests_per_minute', 'user_tokens_per_hour', 'budget'];
    -- Whether each of `fields`, in that order, was given a value.
    given constant boolean[] := ARRAY[$2 IS NOT NULL, $3 IS NOT NULL, $4 IS NOT NULL,
                                      $5 IS NOT NULL, $6 IS NOT NULL, $7 IS NOT NULL,
                                      $8 IS NOT NULL, $11 IS NOT NULL, $12 IS NOT NULL,
                                      $13 IS NOT NULL];
    wrong text;
BEGIN
    IF array_position($9, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'clear must not contain NULL elements'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Remove the NULL elements.';
    END IF;
    SELECT string_agg(format('"%s"', c), ', ') INTO wrong
      FROM unnest($9) c WHERE NOT c = ANY (fields);
    IF wrong IS NOT NULL THEN
        RAISE EXCEPTION 'clear names unknown fields: %', wrong
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name any of ' || array_to_string(fields, ', ') || '.';
    END IF;
    SELECT string_agg(f, ', ') INTO wrong
      FROM unnest(fields, given) AS u(f, is_given) WHERE is_given AND f = ANY ($9);
    IF wrong IS NOT NULL THEN
        RAISE EXCEPTION 'fields both given and cleared: %', wrong
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a field a value or name it in clear, not both.';
    END IF;
    PERFORM inference_internal.check_access_key_fields($2, $3, $4, $5, $6, $8, $11, $12, $13, $14);
    UPDATE inference.access_key_store k
       SET services = CASE WHEN 'services' = ANY ($9) THEN NULL ELSE coalesce($2, k.services) END,
           requests_per_minute = CASE WHEN 'requests_per_minute' = ANY ($9) THEN NULL
                                      ELSE coalesce($3, k.requests_per_minute) END,
           requests_per_hour = CASE WHEN 'requests_per_hour' = ANY ($9) THEN NULL
                                    ELSE coalesce($4, k.requests_per_hour) END,
           tokens_per_hour = CASE WHEN 'tokens_per_hour' = ANY ($9) THEN NULL
                                  ELSE coalesce($5, k.tokens_per_hour) END,
           burst = CASE WHEN 'burst' = ANY ($9) THEN NULL ELSE coalesce($6, k.burst) END,
           tenant = CASE WHEN 'tenant' = ANY ($9) THEN NULL ELSE coalesce($7, k.tenant) END,
           expires_at = CASE WHEN 'expires_at' = ANY ($9) THEN NULL ELSE coalesce($8, k.expires_at) END,
           passthrough = coalesce($10, k.passthrough),
           user_requests_per_minute = CASE WHEN 'user_requests_per_minute' = ANY ($9) THEN NULL
                                           ELSE coalesce($11, k.user_requests_per_minute) END,
           user_tokens_per_hour = CASE WHEN 'user_tokens_per_hour' = ANY ($9) THEN NULL
                                       ELSE coalesce($12, k.user_tokens_per_hour) END,
           budget = CASE WHEN 'budget' = ANY ($9) THEN NULL ELSE coalesce($13, k.budget) END,
           budget_period = coalesce($14, k.budget_period)
     WHERE k.name = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'access key "%" does not exist', $1
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM inference.access_keys lists them.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION inference.revoke_access_key(name text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE inference.access_key_store k SET revoked_at = coalesce(k.revoked_at, now()) WHERE k.name = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'access key "%" does not exist', $1
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM inference.access_keys lists them.';
    END IF;
END
$$;


REVOKE ALL ON FUNCTION
    inference.create_access_key(text, text[], int, int, bigint, int, text, timestamptz, boolean, int, bigint, numeric, text),
    inference.rotate_access_key(text),
    inference.update_access_key(text, text[], int, int, bigint, int, text, timestamptz, text[], boolean, int, bigint, numeric, text),
    inference.revoke_access_key(text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    inference.create_access_key(text, text[], int, int, bigint, int, text, timestamptz, boolean, int, bigint, numeric, text),
    inference.rotate_access_key(text),
    inference.update_access_key(text, text[], int, int, bigint, int, text, timestamptz, text[], boolean, int, bigint, numeric, text),
    inference.revoke_access_key(text)
TO inference_admin;

-------------------------------------------------------------------------------------------------
-- Tenant limits: limits that all access keys of a tenant share, on top of each key's own
-- (docs/routing.md). No foreign key: a tenant is only a label on keys, and its limits may be
-- set before its first key exists.

CREATE TABLE inference.tenant_limit_store (
    tenant              text PRIMARY KEY,
    requests_per_minute int CHECK (requests_per_minute > 0),
    requests_per_hour   int CHECK (requests_per_hour > 0),
    tokens_per_hour     bigint CHECK (tokens_per_hour > 0),
    burst               int CHECK (burst > 0),
    budget              numeric CHECK (budget > 0),
    budget_period       text NOT NULL DEFAULT 'month'
                        CHECK (budget_period IN ('day', 'week', 'month', 'total')),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON inference.tenant_limit_store FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inference.tenant_limit_store', '');

CREATE OR REPLACE VIEW inference.tenant_limits AS
    SELECT t.tenant, t.requests_per_minute, t.requests_per_hour, t.tokens_per_hour, t.burst,
           (SELECT count(*) FROM inference.access_key_store k WHERE k.tenant = t.tenant) AS keys,
           t.updated_at, t.budget, t.budget_period
      FROM inference.tenant_limit_store t;
REVOKE ALL ON inference.tenant_limits FROM PUBLIC;
GRANT SELECT ON inference.tenant_limits TO inference_admin;

-- Replaces the tenant's limits; every limit NULL removes them (the keys keep their own).
CREATE OR REPLACE FUNCTION inference.set_tenant_limits(
    tenant text,
    requests_per_minute int DEFAULT NULL,
    tokens_per_hour bigint DEFAULT NULL,
    requests_per_hour int DEFAULT NULL,
    burst int DEFAULT NULL,
    budget numeric DEFAULT NULL,
    budget_period text DEFAULT 'month')
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF $1 IS NULL OR octet_length($1) NOT BETWEEN 1 AND 62 OR $1 ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid tenant %', coalesce(to_json($1)::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A tenant is 1 to 62 bytes of text without control characters, as given to create_access_key(tenant => ...).';
    END IF;
    PERFORM inference_internal.check_access_key_fields(NULL, $2, $4, $3, $5, NULL, NULL, NULL, $6, $7);
    IF $5 IS NOT NULL AND $2 IS NULL THEN
        RAISE EXCEPTION 'burst needs requests_per_minute'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'burst is the number of requests the per-minute limit lets through at once.';
    END IF;
    IF $2 IS NULL AND $3 IS NULL AND $4 IS NULL AND $6 IS NULL THEN
        DELETE FROM inference.tenant_limit_store t WHERE t.tenant = $1;
        RETURN;
    END IF;
    INSERT INTO inference.tenant_limit_store AS t
        (tenant, requests_per_minute, requests_per_hour, tokens_per_hour, burst, budget,
         budget_period)
    VALUES ($1, $2, $4, $3, $5, $6, coalesce($7, 'month'))
    ON CONFLICT ON CONSTRAINT tenant_limit_store_pkey DO UPDATE
       SET requests_per_minute = excluded.requests_per_minute,
           requests_per_hour = excluded.requests_per_hour,
           tokens_per_hour = excluded.tokens_per_hour,
           burst = excluded.burst,
           budget = excluded.budget,
           budget_period = excluded.budget_period,
           updated_at = now();
END
$$;
REVOKE ALL ON FUNCTION inference.set_tenant_limits(text, int, bigint, int, int, numeric, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION inference.set_tenant_limits(text, int, bigint, int, int, numeric, text) TO inference_admin;

-------------------------------------------------------------------------------------------------
-- Routes: one name for several services (docs/routing.md). Route and service names share one
-- namespace; a route's targets are services, never other routes.

CREATE TABLE inference.route_store (
    name        text PRIMARY KEY,
    -- [{"service": ..., "weight": ..., "priority": ...}], in the normal form inference_internal.check_route writes
    targets     jsonb NOT NULL,
    fallback_on text[] NOT NULL,
    cooldown    interval NOT NULL,
    functions   text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON inference.route_store FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inference.route_store', '');

CREATE OR REPLACE VIEW inference.routes AS
    SELECT name, targets, fallback_on, cooldown, functions, created_at, updated_at
      FROM inference.route_store;
REVOKE ALL ON inference.routes FROM PUBLIC;
GRANT SELECT ON inference.routes TO inference_user;

CREATE TYPE inference.route_info AS (
    name        text,
    targets     jsonb,
    fallback_on text[],
    cooldown    interval,
    functions   text[],
    created_at  timestamptz,
    updated_at  timestamptz
);

-- Checks a route's fields (a NULL is left alone) and returns the normal forms of those given:
-- {"targets": [...], "fallback_on": [...], "functions": [...]}. Raises 22023 with a hint.
CREATE OR REPLACE FUNCTION inference_internal.check_route(
    name text, targets jsonb, fallback_on text[], cooldown interval, functions text[])
RETURNS jsonb AS 'MODULE_PATHNAME', 'pgi_check_route' LANGUAGE C CALLED ON NULL INPUT IMMUTABLE;
REVOKE ALL ON FUNCTION inference_internal.check_route(text, jsonb, text[], interval, text[]) FROM PUBLIC;

-- Every target names a registered service. Takes the lock that registrations take before they
-- check that their name is free, so a route and a service cannot take one name at once.
CREATE OR REPLACE FUNCTION inference_internal.check_route_targets(name text, targets jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad text;
BEGIN
    PERFORM inference_internal.lock_names();
    IF EXISTS (SELECT 1 FROM inference.services s WHERE s.name = $1) THEN
        RAISE EXCEPTION 'name "%" is taken by a service', $1
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Routes and services share one namespace; choose another name.';
    END IF;
    SELECT string_agg(format('"%s"', t->>'service'), ', ') INTO bad
      FROM jsonb_array_elements($2) t
     WHERE EXISTS (SELECT 1 FROM inference.route_store r WHERE r.name = t->>'service');
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'target % is a route', bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A route''s targets are services; list that route''s services instead.';
    END IF;
    SELECT string_agg(format('"%s"', t->>'service'), ', ') INTO bad
      FROM jsonb_array_elements($2) t
     WHERE NOT EXISTS (SELECT 1 FROM inference.services s WHERE s.name = t->>'service');
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'unknown service %', bad
            USING ERRCODE = 'undefined_object',
                  HINT = 'Call inference.list_models() to see the registered services.';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION inference_internal.check_route_targets(text, jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION inference_internal.lock_names() RETURNS void
AS 'MODULE_PATHNAME', 'pgi_lock_names' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION inference_internal.lock_names() FROM PUBLIC;

CREATE OR REPLACE FUNCTION inference.create_route(
    name text,
    targets jsonb,
    fallback_on text[] DEFAULT '{connect,timeout,429,500,502,503,504,529}',
    cooldown interval DEFAULT '30 seconds',
    functions text[] DEFAULT '{}')
RETURNS SETOF inference.route_info
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    checked jsonb;
BEGIN
    IF $2 IS NULL OR $3 IS NULL OR $4 IS NULL OR $5 IS NULL THEN
        RAISE EXCEPTION 'targets, fallback_on, cooldown and functions must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Leave an argument out for its default.';
    END IF;
    checked := inference_internal.check_route($1, $2, $3, $4, $5);
    PERFORM inference_internal.check_route_targets($1, checked->'targets');
    IF EXISTS (SELECT 1 FROM inference.route_store r WHERE r.name = $1) THEN
        RAISE EXCEPTION 'route "%" already exists', $1
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Use inference.update_route() to change it, or drop it first.';
    END IF;
    INSERT INTO inference.route_store (name, targets, fallback_on, cooldown, functions)
    VALUES ($1, checked->'targets',
            ARRAY(SELECT jsonb_array_elements_text(checked->'fallback_on')), $4,
            ARRAY(SELECT jsonb_array_elements_text(checked->'functions')));
    RETURN QUERY SELECT * FROM inference.routes r WHERE r.name = $1;
END
$$;

CREATE OR REPLACE FUNCTION inference.update_route(
    name text,
    targets jsonb DEFAULT NULL,
    fallback_on text[] DEFAULT NULL,
    cooldown interval DEFAULT NULL,
    functions text[] DEFAULT NULL)
RETURNS SETOF inference.route_info
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    checked jsonb;
BEGIN
    checked := inference_internal.check_route($1, $2, $3, $4, $5);
    PERFORM 1 FROM inference.route_store r WHERE r.name = $1 FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'route "%" does not exist', $1
            USING ERRCODE = 'undefined_object', HINT = 'Read inference.routes for the routes.';
    END IF;
    IF $2 IS NOT NULL THEN
        PERFORM inference_internal.check_route_targets($1, checked->'targets');
    END IF;
    UPDATE inference.route_store r
       SET targets = coalesce(checked->'targets', r.targets),
           fallback_on = CASE WHEN $3 IS NULL THEN r.fallback_on
                              ELSE ARRAY(SELECT jsonb_array_elements_text(checked->'fallback_on')) END,
           cooldown = coalesce($4, r.cooldown),
           functions = CASE WHEN $5 IS NULL THEN r.functions
                            ELSE ARRAY(SELECT jsonb_array_elements_text(checked->'functions')) END,
           updated_at = now()
     WHERE r.name = $1;
    RETURN QUERY SELECT * FROM inference.routes r WHERE r.name = $1;
END
$$;

-- Dropping a route that an access key names is refused: the key would lose what it may use.
CREATE OR REPLACE FUNCTION inference.drop_route(name text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys text;
BEGIN
    IF $1 IS NULL OR NOT EXISTS (SELECT 1 FROM inference.route_store r WHERE r.name = $1) THEN
        RAISE EXCEPTION 'route "%" does not exist', $1
            USING ERRCODE = 'undefined_object', HINT = 'Read inference.routes for the routes.';
    END IF;
    SELECT string_agg(format('"%s"', k.name), ', ' ORDER BY k.name) INTO keys
      FROM inference.access_key_store k WHERE $1 = ANY (k.services);
    IF keys IS NOT NULL THEN
        RAISE EXCEPTION 'route "%" is named by access key %', $1, keys
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Remove it from those keys with inference.update_access_key() first.';
    END IF;
    DELETE FROM inference.route_store r WHERE r.name = $1;
END
$$;

REVOKE ALL ON FUNCTION
    inference.create_route(text, jsonb, text[], interval, text[]),
    inference.update_route(text, jsonb, text[], interval, text[]),
    inference.drop_route(text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    inference.create_route(text, jsonb, text[], interval, text[]),
    inference.update_route(text, jsonb, text[], interval, text[]),
    inference.drop_route(text)
TO inference_admin;

-------------------------------------------------------------------------------------------------
-- Prices. Each set_price adds a version, and versions are never changed or removed: usage waits
-- in shared memory (or on a standby) under the version in force when it was answered, and the
-- ledger prices it with that version when it arrives. Prices belong to a service name, so a
-- service registered again under the same name keeps them.

CREATE TABLE inference.price_store (
    id                    bigserial PRIMARY KEY,
    service               text NOT NULL,
    input_per_mtok        numeric NOT NULL,
    output_per_mtok       numeric NOT NULL,
    cached_input_per_mtok numeric,
    currency              text NOT NULL,
    set_at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX price_store_service ON inference.price_store (service, id);
REVOKE ALL ON inference.price_store FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inference.price_store', '');
SELECT pg_catalog.pg_extension_config_dump('inference.price_store_id_seq', '');

-- The price in force for each registered service; version is what the ledger's rows are
-- priced under. cached_input_per_mtok NULL: cached prompt tokens cost the input price.
CREATE OR REPLACE VIEW inference.prices AS
    SELECT DISTINCT ON (p.service)
           p.service, p.input_per_mtok, p.output_per_mtok, p.cached_input_per_mtok, p.currency,
           p.set_at, p.id AS version
      FROM inference.price_store p
     WHERE EXISTS (SELECT 1 FROM inference.services s WHERE s.name = p.service)
     ORDER BY p.service, p.id DESC;
REVOKE ALL ON inference.prices FROM PUBLIC;
GRANT SELECT ON inference.prices TO inference_admin;

CREATE OR REPLACE FUNCTION inference.set_price(
    service text,
    input_per_mtok numeric,
    output_per_mtok numeric,
    cached_input_per_mtok numeric DEFAULT NULL,
    currency text DEFAULT 'USD')
RETURNS SETOF inference.prices
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    priced_in text;
    price numeric;
    what text;
BEGIN
    IF $1 IS NULL OR $2 IS NULL OR $3 IS NULL OR $5 IS NULL THEN
        RAISE EXCEPTION 'service, input_per_mtok, output_per_mtok and currency must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give 0 for a price that is free; leave cached_input_per_mtok out to charge cached prompt tokens the input price.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM inference.services s WHERE s.name = $1) THEN
        RAISE EXCEPTION 'service "%" does not exist', $1
            USING ERRCODE = 'undefined_object',
                  HINT = 'Call inference.list_models() to see the registered services.';
    END IF;
    FOREACH what IN ARRAY ARRAY['input_per_mtok', 'output_per_mtok', 'cached_input_per_mtok'] LOOP
        price := CASE what WHEN 'input_per_mtok' THEN $2 WHEN 'output_per_mtok' THEN $3 ELSE $4 END;
        IF price IS NOT NULL AND (price::text IN ('NaN', 'Infinity', '-Infinity') OR price < 0) THEN
            RAISE EXCEPTION '% must be a price of 0 or more, not %', what, price
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Prices are per million tokens in the currency given, such as 2.50 for $2.50 per million.';
        END IF;
    END LOOP;
    IF $5 !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'currency "%" is not a currency code', $5
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the ISO 4217 code in three capital letters, such as USD or EUR.';
    END IF;
    SELECT p.currency INTO priced_in FROM inference.price_store p
     WHERE p.service = $1 ORDER BY p.id DESC LIMIT 1;
    IF priced_in IS NOT NULL AND priced_in <> $5 THEN
        RAISE EXCEPTION 'service "%" is priced in %, not %', $1, priced_in, $5
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('A service''s usage adds up in one currency: give its prices in %s, or register the model under another service name.', priced_in);
    END IF;
    INSERT INTO inference.price_store (service, input_per_mtok, output_per_mtok,
                                       cached_input_per_mtok, currency)
    VALUES ($1, $2, $3, $4, $5);
    RETURN QUERY SELECT * FROM inference.prices p WHERE p.service = $1;
END
$$;
REVOKE ALL ON FUNCTION inference.set_price(text, numeric, numeric, numeric, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION inference.set_price(text, numeric, numeric, numeric, text)
TO inference_admin;

-------------------------------------------------------------------------------------------------
-- Catalog changes reach the gateway listeners: a committed change bumps a counter in shared
-- memory that the listeners poll.

CREATE OR REPLACE FUNCTION inference_internal.catalog_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'pgi_catalog_changed' LANGUAGE C;
REVOKE ALL ON FUNCTION inference_internal.catalog_changed() FROM PUBLIC;

CREATE TRIGGER catalog_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON inference.services FOR EACH STATEMENT EXECUTE FUNCTION inference_internal.catalog_changed();
CREATE TRIGGER catalog_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON inference.service_secrets FOR EACH STATEMENT EXECUTE FUNCTION inference_internal.catalog_changed();
CREATE TRIGGER catalog_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON inference.route_store FOR EACH STATEMENT EXECUTE FUNCTION inference_internal.catalog_changed();
CREATE TRIGGER catalog_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON inference.price_store FOR EACH STATEMENT EXECUTE FUNCTION inference_internal.catalog_changed();
-- last_used_at is bookkeeping, not configuration: updating it alone does not reload listeners.
CREATE TRIGGER catalog_changed AFTER INSERT OR DELETE OR TRUNCATE
    ON inference.access_key_store FOR EACH STATEMENT EXECUTE FUNCTION inference_internal.catalog_changed();
CREATE TRIGGER catalog_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON inference.tenant_limit_store FOR EACH STATEMENT EXECUTE FUNCTION inference_internal.catalog_changed();
CREATE TRIGGER catalog_changed_update
    AFTER UPDATE OF name, key_hash, tenant, services, requests_per_minute, requests_per_hour,
                    tokens_per_hour, burst, expires_at, revoked_at, passthrough,
                    user_requests_per_minute, user_tokens_per_hour
    ON inference.access_key_store FOR EACH STATEMENT EXECUTE FUNCTION inference_internal.catalog_changed();

-------------------------------------------------------------------------------------------------
-- Gateway usage ledger — begin. The listeners count usage in shared memory and add
-- it here in batches (every inference.gateway_usage_flush_interval, and when each listener
-- exits), so the ledger lags live traffic by at most that interval. One row per access key,
-- service and UTC day, and one per access key, end user, service and UTC day:
--   key_name       '' for requests without a key (inference.gateway_require_key = off)
--   end_user       '' in a key's rows; its end user's share of them in the others
--   service        '' for requests that named no known service
--   requests       every request, failed and rate-limited ones included
--   errors         answers with status >= 400, except the gateway's own 429s
--   rate_limited   the gateway's own 429s (the key was over one of its limits)
--   *_tokens       as the upstream reported them (a total-only count is prompt tokens)
--   cached_tokens  the prompt tokens the upstream read from its prompt cache
--   cost           the tokens priced with the service's price in force when each request was
--                  answered (inference.prices), in its currency; NULL while none of the row's
--                  requests had a price
-- No foreign key to the access keys: the ledger outlives the keys it names.

CREATE TABLE IF NOT EXISTS inference.usage_ledger (
    key_name          text NOT NULL,
    service           text NOT NULL,
    day               date NOT NULL,
    requests          bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    total_tokens      bigint NOT NULL DEFAULT 0,
    errors            bigint NOT NULL DEFAULT 0,
    rate_limited      bigint NOT NULL DEFAULT 0,
    last_access_at    timestamptz,
    -- Since 0.2.0 (columns keep the order an upgrade from 0.1.0 gives them):
    end_user          text NOT NULL DEFAULT '',
    cached_tokens     bigint NOT NULL DEFAULT 0,
    cost              numeric,
    currency          text,
    PRIMARY KEY (key_name, end_user, service, day)
);
REVOKE ALL ON inference.usage_ledger FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inference.usage_ledger', '');

CREATE OR REPLACE VIEW inference.usage AS
    SELECT key_name, service, day, requests, prompt_tokens, completion_tokens, total_tokens,
           errors, rate_limited, last_access_at, cached_tokens, cost, currency
      FROM inference.usage_ledger
     WHERE end_user = '';
REVOKE ALL ON inference.usage FROM PUBLIC;
GRANT SELECT ON inference.usage TO inference_admin;

-- Every budget with what the ledger holds of its current period (docs/spend.md). The gateway
-- counts in shared memory and is ahead of this by at most inference.gateway_usage_flush_interval.
CREATE OR REPLACE VIEW inference.budgets AS
    WITH b AS (
        SELECT 'key'::text AS budget_of, k.name, k.budget, k.budget_period
          FROM inference.access_key_store k WHERE k.budget IS NOT NULL
        UNION ALL
        SELECT 'tenant', t.tenant, t.budget, t.budget_period
          FROM inference.tenant_limit_store t WHERE t.budget IS NOT NULL
    ), p AS (
        SELECT b.*,
               CASE WHEN b.budget_period <> 'total'
                    THEN date_trunc(b.budget_period, now() AT TIME ZONE 'UTC') END AS starts
          FROM b
    )
    SELECT p.budget_of, p.name, p.budget, p.budget_period,
           p.starts AT TIME ZONE 'UTC' AS period_start,
           (p.starts + ('1 ' || p.budget_period)::interval) AT TIME ZONE 'UTC' AS renews_at,
           coalesce((SELECT sum(u.cost) FROM inference.usage_ledger u
                      WHERE u.end_user = ''
                        AND u.day >= coalesce(p.starts::date, '-infinity'::date)
                        AND CASE p.budget_of
                              WHEN 'key' THEN u.key_name = p.name
                              ELSE u.key_name IN (SELECT o.name FROM inference.access_key_store o
                                                   WHERE o.tenant = p.name) END), 0) AS spent
      FROM p;
REVOKE ALL ON inference.budgets FROM PUBLIC;
GRANT SELECT ON inference.budgets TO inference_admin;

-- The same counts per end user, for requests that named one (the header
-- inference.gateway_user_header, else the body's user, safety_identifier or metadata.user_id).
-- A request is in two rows of the ledger: its key's (end_user '') and its end user's.
CREATE OR REPLACE VIEW inference.usage_by_user AS
    SELECT key_name, end_user, service, day, requests, prompt_tokens, completion_tokens,
           total_tokens, errors, rate_limited, last_access_at, cached_tokens, cost, currency
      FROM inference.usage_ledger
     WHERE end_user <> '';
REVOKE ALL ON inference.usage_by_user FROM PUBLIC;
GRANT SELECT ON inference.usage_by_user TO inference_admin;

-- The one way counts enter the ledger: a primary's usage writer calls it in its own
-- transaction, a hot standby's over a connection to the primary. A standby's batch carries an
-- id, and a batch whose id was recorded already is skipped, so a retried batch never counts
-- twice (a primary's own flush cannot be retried after its commit and passes NULL).
-- rows: [{k: key, s: service, d: days since 1970-01-01, r, p, c, t, e, l: counts,
--         a: last access in ms since the epoch, u: the end user, in end users' rows only,
--         h: cached prompt tokens, v: the price_store id they are priced under (h and v may be
--         left out: 0, unpriced)}].
-- True when the batch was recorded now.
CREATE TABLE inference.usage_batches (
    id          uuid PRIMARY KEY,
    node        text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON inference.usage_batches (recorded_at);
REVOKE ALL ON inference.usage_batches FROM PUBLIC;

CREATE OR REPLACE FUNCTION inference_internal.record_usage(batch uuid, node text, rows jsonb) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF batch IS NOT NULL THEN
        INSERT INTO inference.usage_batches (id, node) VALUES (batch, node)
            ON CONFLICT (id) DO NOTHING;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
        -- A batch is retried while its node cannot reach the primary, not for weeks.
        DELETE FROM inference.usage_batches WHERE recorded_at < now() - interval '7 days';
    END IF;
    -- Flushes are serialised, and rows are added in key order: no two flushes wait on each
    -- other's rows. (An arbitrary advisory lock key of pg_inference's: "pgi" and 1.)
    PERFORM pg_catalog.pg_advisory_xact_lock(7366505, 1);
    -- A batch may hold a row's counts under several price versions: they are priced each
    -- with its own version, then added up into the row (ON CONFLICT takes a row once).
    INSERT INTO inference.usage_ledger AS u (key_name, end_user, service, day, requests,
           prompt_tokens, completion_tokens, total_tokens, errors, rate_limited, last_access_at,
           cached_tokens, cost, currency)
    SELECT x.k, coalesce(x.u, ''), x.s, date '1970-01-01' + x.d, sum(x.r), sum(x.p), sum(x.c),
           sum(x.t), sum(x.e), sum(x.l), to_timestamp(max(x.a) / 1000.0), sum(coalesce(x.h, 0)),
           sum(((x.p - coalesce(x.h, 0)) * pr.input_per_mtok
                + coalesce(x.h, 0) * coalesce(pr.cached_input_per_mtok, pr.input_per_mtok)
                + x.c * pr.output_per_mtok) * 0.000001),
           max(pr.currency)
      FROM jsonb_to_recordset(rows) AS x(k text, u text, s text, d int, r bigint, p bigint,
                                         c bigint, t bigint, e bigint, l bigint, a bigint,
                                         h bigint, v bigint)
      LEFT JOIN inference.price_store pr ON pr.id = x.v
     GROUP BY x.k, coalesce(x.u, ''), x.s, x.d
     ORDER BY x.k, coalesce(x.u, ''), x.s, x.d
    ON CONFLICT (key_name, end_user, service, day) DO UPDATE SET
           requests = u.requests + excluded.requests,
           prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
           completion_tokens = u.completion_tokens + excluded.completion_tokens,
           total_tokens = u.total_tokens + excluded.total_tokens,
           errors = u.errors + excluded.errors,
           rate_limited = u.rate_limited + excluded.rate_limited,
           last_access_at = greatest(u.last_access_at, excluded.last_access_at),
           cached_tokens = u.cached_tokens + excluded.cached_tokens,
           cost = CASE WHEN excluded.cost IS NULL THEN u.cost
                       ELSE coalesce(u.cost, 0) + excluded.cost END,
           currency = coalesce(excluded.currency, u.currency);
    -- last_used_at alone does not fire the catalog trigger, so this reloads no listener.
    UPDATE inference.access_key_store k SET last_used_at = v.at
      FROM (SELECT x.k AS name, max(to_timestamp(x.a / 1000.0)) AS at
              FROM jsonb_to_recordset(rows) AS x(k text, a bigint)
             WHERE x.k <> '' GROUP BY x.k) v
     WHERE k.name = v.name AND (k.last_used_at IS NULL OR k.last_used_at < v.at);
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION inference_internal.record_usage(uuid, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION inference_internal.record_usage(uuid, text, jsonb) TO inference_admin;

-------------------------------------------------------------------------------------------------
-- The request log (inference.gateway_request_log = metadata): a row per gateway request, never
-- a body or a key, in one partition per UTC day; the usage writer adds rows in batches and drops
-- the days past inference.request_log_retention (docs/observability.md).

CREATE TABLE inference.request_log (
    at                timestamptz NOT NULL,
    key_name          text,
    end_user          text,
    tenant            text,
    service           text,
    route             text,
    dialect           text NOT NULL,
    status            int NOT NULL,
    latency_ms        double precision NOT NULL,
    ttft_ms           double precision,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cached_tokens     bigint NOT NULL,
    cost              numeric,
    currency          text,
    error_type        text
) PARTITION BY RANGE (at);
REVOKE ALL ON inference.request_log FROM PUBLIC;
GRANT SELECT ON inference.request_log TO inference_admin;

-- Makes the partition of UTC day d, if missing.
CREATE OR REPLACE FUNCTION inference_internal.request_log_partition(d date) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part constant text := 'request_log_p' || to_char(d, 'YYYYMMDD');
BEGIN
    IF to_regclass('inference.' || part) IS NULL THEN
        EXECUTE format('CREATE TABLE inference.%I PARTITION OF inference.request_log '
                       'FOR VALUES FROM (%L) TO (%L)', part,
                       d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
    END IF;
END
$$;

-- Adds a batch of rows (a JSON array, as the usage writer writes it) whose days run from
-- first_day to last_day; each row's cost is priced with the price version it names.
CREATE OR REPLACE FUNCTION inference_internal.record_requests(rows json, first_day date, last_day date)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    written bigint;
BEGIN
    FOR d IN 0 .. last_day - first_day LOOP
        PERFORM inference_internal.request_log_partition(first_day + d);
    END LOOP;
    INSERT INTO inference.request_log
        (at, key_name, end_user, tenant, service, route, dialect, status, latency_ms, ttft_ms,
         prompt_tokens, completion_tokens, cached_tokens, cost, currency, error_type)
    SELECT to_timestamp(r.t::float8 / 1000000), r.k, r.u, r.n, r.s, r.o, r.g, r.c, r.l, r.f,
           r.p, r.q, r.h,
           CASE WHEN v.id IS NOT NULL THEN
               ((r.p - r.h) * v.input_per_mtok + r.h * coalesce(v.cached_input_per_mtok, v.input_per_mtok)
                + r.q * v.output_per_mtok) * 0.000001 END,
           v.currency, r.e
      FROM json_to_recordset(rows) AS r(t bigint, k text, u text, n text, s text, o text, g text,
                                        c int, l double precision, f double precision,
                                        p bigint, q bigint, h bigint, v bigint, e text)
      LEFT JOIN inference.price_store v ON v.id = r.v;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$$;

-- Makes today's and tomorrow's partitions (UTC) and drops those of days that ended more than
-- `retention` ago. Returns how many it dropped.
CREATE OR REPLACE FUNCTION inference_internal.request_log_maintain(retention interval) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    today constant date := (now() AT TIME ZONE 'UTC')::date;
    part record;
    dropped int := 0;
BEGIN
    PERFORM inference_internal.request_log_partition(today);
    PERFORM inference_internal.request_log_partition(today + 1);
    FOR part IN
        SELECT c.relname, to_date(substr(c.relname, 14), 'YYYYMMDD') AS day
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'inference.request_log'::regclass
           AND c.relname ~ '^request_log_p[0-9]{8}$'
    LOOP
        IF (part.day + 1)::timestamp AT TIME ZONE 'UTC' <= now() - retention THEN
            EXECUTE format('DROP TABLE inference.%I', part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END
$$;
REVOKE ALL ON FUNCTION inference_internal.request_log_partition(date),
    inference_internal.record_requests(json, date, date), inference_internal.request_log_maintain(interval)
FROM PUBLIC;

-- Under inference.limits_scope = 'cluster', a hot standby borrows blocks of a key's limits from
-- the primary, taken from the buckets the primary's own gateway uses: what was lent comes back.
CREATE OR REPLACE FUNCTION inference_internal.lend_limits(key_name text, want_requests bigint, want_tokens bigint,
                                       OUT requests bigint, OUT tokens bigint)
AS 'MODULE_PATHNAME', 'pgi_lend_limits' LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION inference_internal.lend_limits(text, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION inference_internal.lend_limits(text, bigint, bigint) TO inference_admin;
-- Gateway usage ledger — end.

-------------------------------------------------------------------------------------------------
-- Pipelines: embeddings that keep themselves up to date (docs/pipelines.md). A trigger on the
-- source queues the key of every inserted, updated and deleted row; the pipeline worker embeds
-- the queued rows' current input in batches, outside any transaction that touched the source,
-- and writes a result only where the row's input still is what was embedded.

CREATE SEQUENCE inference.pipeline_versions;
REVOKE ALL ON SEQUENCE inference.pipeline_versions FROM PUBLIC;

CREATE TABLE inference.pipeline_store (
    name          text PRIMARY KEY,
    source        regclass NOT NULL,
    key_columns   text[] NOT NULL,
    input         text NOT NULL,
    service       text NOT NULL,
    destination   text,              -- a column of source; NULL: chunk_table
    chunk_table   regclass,
    dest_type     text NOT NULL CHECK (dest_type IN ('real[]', 'vector', 'table')),
    chunk_size    int,
    chunk_overlap int NOT NULL DEFAULT 0,
    batch_size    int,
    -- The role that created the pipeline: the worker reads the input and writes the
    -- destination as this role, never with more rights than its creator has.
    owner         name NOT NULL,
    state         text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused')),
    done          bigint NOT NULL DEFAULT 0,
    last_error    text,
    rows_per_second double precision,
    created_at    timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON inference.pipeline_store FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inference.pipeline_store', '');

CREATE TABLE inference.pipeline_queue (
    pipeline   text NOT NULL,
    row_key    jsonb NOT NULL,
    version    bigint NOT NULL,           -- a new one for every change of the row
    deleted    boolean NOT NULL DEFAULT false,
    queued_at  timestamptz NOT NULL DEFAULT clock_timestamp(),  -- its oldest unhandled change
    attempts   int NOT NULL DEFAULT 0,
    not_before timestamptz,
    last_error text,
    PRIMARY KEY (pipeline, row_key)
);
CREATE INDEX ON inference.pipeline_queue (pipeline, queued_at);
REVOKE ALL ON inference.pipeline_queue FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inference.pipeline_queue', '');

-- What each row's embedding was made from (a hash of its input): a change of other columns
-- queues the row, and the worker then finds its input unchanged and makes no call.
CREATE TABLE inference.pipeline_rows (
    pipeline  text NOT NULL,
    row_key   jsonb NOT NULL,
    input_md5 text NOT NULL,
    PRIMARY KEY (pipeline, row_key)
);
REVOKE ALL ON inference.pipeline_rows FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inference.pipeline_rows', '');

CREATE TABLE inference.pipeline_error_store (
    pipeline        text NOT NULL,
    row_key         jsonb NOT NULL,
    error           text NOT NULL,
    attempts        int NOT NULL,
    first_failed_at timestamptz NOT NULL,
    PRIMARY KEY (pipeline, row_key)
);
REVOKE ALL ON inference.pipeline_error_store FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inference.pipeline_error_store', '');

-- A pipeline's queue, hashes and dead letters go with it. (A trigger rather than foreign keys:
-- a key check on every queued change would cost each INSERT and UPDATE of the source.)
CREATE OR REPLACE FUNCTION inference_internal.pipeline_forget() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM inference.pipeline_queue q WHERE q.pipeline = OLD.name;
    DELETE FROM inference.pipeline_rows r WHERE r.pipeline = OLD.name;
    DELETE FROM inference.pipeline_error_store e WHERE e.pipeline = OLD.name;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION inference_internal.pipeline_forget() FROM PUBLIC;
CREATE TRIGGER pipeline_forget AFTER DELETE ON inference.pipeline_store
    FOR EACH ROW EXECUTE FUNCTION inference_internal.pipeline_forget();

CREATE TYPE inference.pipeline_info AS (
    name            text,
    source          regclass,
    service         text,
    state           text,
    queued          bigint,
    done            bigint,
    failed          bigint,
    last_error      text,
    rows_per_second double precision,
    lag             interval,
    created_at      timestamptz
);

CREATE OR REPLACE VIEW inference.pipelines AS
    SELECT p.name, p.source, p.service, p.state,
           (SELECT count(*) FROM inference.pipeline_queue q WHERE q.pipeline = p.name) AS queued,
           p.done,
           (SELECT count(*) FROM inference.pipeline_error_store e WHERE e.pipeline = p.name) AS failed,
           p.last_error, p.rows_per_second,
           now() - (SELECT min(q.queued_at) FROM inference.pipeline_queue q
                     WHERE q.pipeline = p.name) AS lag,
           p.created_at
      FROM inference.pipeline_store p;
REVOKE ALL ON inference.pipelines FROM PUBLIC;
GRANT SELECT ON inference.pipelines TO inference_admin;

CREATE OR REPLACE VIEW inference.pipeline_errors AS
    SELECT pipeline, row_key, error, attempts, first_failed_at FROM inference.pipeline_error_store;
REVOKE ALL ON inference.pipeline_errors FROM PUBLIC;
GRANT SELECT ON inference.pipeline_errors TO inference_admin;

-- The role outside the SECURITY DEFINER function calling this (as SET ROLE left it).
CREATE OR REPLACE FUNCTION inference_internal.calling_role() RETURNS name
AS 'MODULE_PATHNAME', 'pgi_calling_role' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION inference_internal.calling_role() FROM PUBLIC;

-- The trigger on a pipeline's source. Arguments: the pipeline, its destination column ('' for
-- a table), the primary key's columns.
CREATE OR REPLACE FUNCTION inference_internal.pipeline_enqueue() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    queue_of constant text := TG_ARGV[0];
    destination constant text := nullif(TG_ARGV[1], '');
    keys constant text[] := TG_ARGV[2:];
    old_row jsonb;
    new_row jsonb;
    old_key jsonb;
    new_key jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_row := to_jsonb(OLD);
        SELECT jsonb_object_agg(k, old_row -> k) INTO old_key FROM unnest(keys) k;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_row := to_jsonb(NEW);
        SELECT jsonb_object_agg(k, new_row -> k) INTO new_key FROM unnest(keys) k;
    END IF;
    -- The worker writing an embedding changes nothing the pipeline reads.
    IF TG_OP = 'UPDATE' AND destination IS NOT NULL
       AND (old_row - destination) = (new_row - destination) THEN
        RETURN NULL;
    END IF;
    IF old_key IS NOT NULL AND old_key IS DISTINCT FROM new_key THEN
        INSERT INTO inference.pipeline_queue AS q (pipeline, row_key, version, deleted)
        VALUES (queue_of, old_key, nextval('inference.pipeline_versions'), true)
        ON CONFLICT (pipeline, row_key) DO UPDATE
           SET version = excluded.version, deleted = true, attempts = 0, not_before = NULL;
    END IF;
    IF new_key IS NOT NULL THEN
        INSERT INTO inference.pipeline_queue AS q (pipeline, row_key, version, deleted)
        VALUES (queue_of, new_key, nextval('inference.pipeline_versions'), false)
        ON CONFLICT (pipeline, row_key) DO UPDATE
           SET version = excluded.version, deleted = false, attempts = 0, not_before = NULL;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION inference_internal.pipeline_enqueue() FROM PUBLIC;

-- The catalog side of create_pipeline, run with the extension owner's rights once the caller's
-- side has checked what the caller may do. The owner is always the calling role.
CREATE OR REPLACE FUNCTION inference_internal.create_pipeline(
    name text, source regclass, input text, service text, destination text, dest_type text,
    chunk_size int, chunk_overlap int, batch_size int, backfill boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner constant name := inference_internal.calling_role();
    keys text[];
    key_list text;
    chunk regclass;
    table_name text;
BEGIN
    -- Checked again here, since this function can be called on its own.
    IF NOT has_table_privilege(owner, $2, 'SELECT')
       OR ($5 IS NOT NULL AND NOT has_column_privilege(owner, $2, $5, 'UPDATE')) THEN
        RAISE EXCEPTION 'permission denied for table %', $2
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The pipeline reads the table as you (SELECT) and writes its destination column as you (UPDATE).';
    END IF;
    SELECT array_agg(a.attname ORDER BY k.n) INTO keys
      FROM pg_index i
      CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k (attnum, n)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = $2 AND i.indisprimary;
    IF keys IS NULL THEN
        RAISE EXCEPTION 'table % has no primary key', $2
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A pipeline keeps one embedding per row and finds rows by their primary key: add one (ALTER TABLE ... ADD PRIMARY KEY).';
    END IF;
    SELECT string_agg(format('%I', k), ', ') INTO key_list FROM unnest(keys) k;
    IF $5 IS NULL THEN
        -- A table of chunks beside the source: its key, the chunk's number, text and embedding.
        SELECT format('%I.%I', n.nspname, c.relname || '_' || $1) INTO table_name
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $2;
        IF to_regclass(table_name) IS NOT NULL THEN
            RAISE EXCEPTION 'table % already exists', table_name
                USING ERRCODE = 'duplicate_table',
                      HINT = 'Drop it, or name the pipeline differently: its chunks go to <source>_<name>.';
        END IF;
        EXECUTE format('CREATE TABLE %s (%s, chunk_seq int NOT NULL, chunk text NOT NULL, '
                       'embedding real[] NOT NULL, PRIMARY KEY (%s, chunk_seq))',
                       table_name,
                       (SELECT string_agg(format('%I %s NOT NULL', a.attname,
                                                 format_type(a.atttypid, a.atttypmod)), ', '
                                          ORDER BY k.n)
                          FROM unnest(keys) WITH ORDINALITY AS k (col, n)
                          JOIN pg_attribute a ON a.attrelid = $2 AND a.attname = k.col),
                       key_list);
        chunk := table_name::regclass;
        EXECUTE format('ALTER TABLE %s OWNER TO %I', chunk, owner);
    END IF;
    INSERT INTO inference.pipeline_store
        (name, source, key_columns, input, service, destination, chunk_table, dest_type,
         chunk_size, chunk_overlap, batch_size, owner)
    VALUES ($1, $2, keys, $3, $4, $5, chunk, $6, $7, coalesce($8, 0), $9, owner);
    -- Updates of the destination column alone (the worker's writes) do not fire it.
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR DELETE OR UPDATE OF %s ON %s FOR EACH ROW '
                   'EXECUTE FUNCTION inference_internal.pipeline_enqueue(%L, %L, %s)',
                   'pgi_pipeline_' || $1,
                   (SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum)
                      FROM pg_attribute a
                     WHERE a.attrelid = $2 AND a.attnum > 0 AND NOT a.attisdropped
                       AND a.attname IS DISTINCT FROM $5),
                   $2, $1, coalesce($5, ''),
                   (SELECT string_agg(format('%L', k), ', ') FROM unnest(keys) k));
    IF $10 THEN
        EXECUTE format('INSERT INTO inference.pipeline_queue (pipeline, row_key, version) '
                       'SELECT %L, jsonb_build_object(%s), nextval(''inference.pipeline_versions'') '
                       'FROM %s',
                       $1, (SELECT string_agg(format('%L, %I', k, k), ', ') FROM unnest(keys) k),
                       $2);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION inference_internal.create_pipeline(text, regclass, text, text, text, text, int, int, int, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION inference_internal.create_pipeline(text, regclass, text, text, text, text, int, int, int, boolean) TO inference_admin;

CREATE OR REPLACE FUNCTION inference.create_pipeline(
    name text,
    source regclass,
    input text,
    service text,
    destination text DEFAULT NULL,
    chunk_size int DEFAULT NULL,
    chunk_overlap int DEFAULT 0,
    batch_size int DEFAULT NULL,
    backfill boolean DEFAULT true)
RETURNS SETOF inference.pipeline_info
-- The caller's own rights: the input is checked by running it as the caller.
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    input_type regtype;
    dest_type text;
    protocols text[];
BEGIN
    IF $1 IS NULL OR $1 !~ '^[a-z][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION 'invalid pipeline name %', coalesce(quote_literal($1), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 1 to 40 lowercase letters, digits and "_", starting with a letter.';
    END IF;
    IF EXISTS (SELECT 1 FROM inference.pipelines p WHERE p.name = $1) THEN
        RAISE EXCEPTION 'pipeline "%" already exists', $1
            USING ERRCODE = 'duplicate_object', HINT = 'Drop it first with inference.drop_pipeline(), or choose another name.';
    END IF;
    IF $2 IS NULL OR $3 IS NULL OR $4 IS NULL THEN
        RAISE EXCEPTION 'source, input and service must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Name the table, the text to embed and the embedding service.';
    END IF;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = $2) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', $2
            USING ERRCODE = 'wrong_object_type', HINT = 'A pipeline''s source is a table with a primary key.';
    END IF;
    IF NOT has_table_privilege($2, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied for table %', $2
            USING ERRCODE = 'insufficient_privilege', HINT = 'The pipeline reads the table as you: you need SELECT on it.';
    END IF;
    -- The input, as you: it must parse over the table's columns and give text.
    BEGIN
        EXECUTE format('SELECT pg_typeof(%s) FROM (SELECT (NULL::%s).*) AS s', $3, $2) INTO input_type;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'input % is not an expression over the columns of %: %', quote_literal($3), $2, SQLERRM
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name a column, or write an SQL expression such as title || '' '' || body.';
    END;
    IF input_type NOT IN ('text'::regtype, 'character varying'::regtype, 'character'::regtype) THEN
        RAISE EXCEPTION 'input % gives %, not text', quote_literal($3), input_type
            USING ERRCODE = 'datatype_mismatch', HINT = 'Cast it: (' || $3 || ')::text.';
    END IF;
    IF $5 IS NOT NULL THEN
        SELECT CASE WHEN a.atttypid = 'real[]'::regtype THEN 'real[]'
                    WHEN t.typname = 'vector' THEN 'vector' END
          INTO dest_type
          FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = $2 AND a.attname = $5 AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'column "%" of % does not exist', $5, $2
                USING ERRCODE = 'undefined_column', HINT = 'Add the column (real[], or vector with pgvector), or pass destination => NULL for a table of chunks.';
        END IF;
        IF dest_type IS NULL THEN
            RAISE EXCEPTION 'column "%" of % is not real[] or vector', $5, $2
                USING ERRCODE = 'datatype_mismatch', HINT = 'An embedding column is real[], or pgvector''s vector.';
        END IF;
        IF $6 IS NOT NULL THEN
            RAISE EXCEPTION 'chunk_size needs a table of chunks'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'A column holds one embedding per row: pass destination => NULL to chunk.';
        END IF;
        IF NOT has_column_privilege($2, $5, 'UPDATE') THEN
            RAISE EXCEPTION 'permission denied for column "%" of %', $5, $2
                USING ERRCODE = 'insufficient_privilege', HINT = 'The pipeline writes the embeddings as you: you need UPDATE on the column.';
        END IF;
    ELSE
        dest_type := 'table';
    END IF;
    IF $6 <= 0 OR $7 < 0 OR $7 >= $6 OR ($6 IS NULL AND $7 > 0) OR $8 <= 0 THEN
        RAISE EXCEPTION 'invalid chunk_size, chunk_overlap or batch_size'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'chunk_size is positive, chunk_overlap from 0 to below chunk_size (and needs chunk_size), batch_size positive.';
    END IF;
    SELECT array_agg(DISTINCT s.protocol) INTO protocols FROM inference.list_models() s
     WHERE s.name = $4
        OR s.name IN (SELECT t->>'service' FROM inference.routes r,
                             jsonb_array_elements(r.targets) t WHERE r.name = $4);
    IF protocols IS NULL THEN
        RAISE EXCEPTION 'service "%" does not exist', $4
            USING ERRCODE = 'undefined_object', HINT = 'Call inference.list_models() to see the registered services, and read inference.routes for the routes.';
    END IF;
    IF 'ANTHROPIC_V1' = ANY (protocols) THEN
        RAISE EXCEPTION 'service "%" cannot embed: Anthropic''s API has no embeddings', $4
            USING ERRCODE = 'feature_not_supported', HINT = 'Use an OpenAI-compatible or Gemini embedding service.';
    END IF;
    PERFORM inference_internal.create_pipeline($1, $2, $3, $4, $5, dest_type, $6, $7, $8, coalesce($9, true));
    RETURN QUERY SELECT * FROM inference.pipelines p WHERE p.name = $1;
END
$$;

CREATE OR REPLACE FUNCTION inference.drop_pipeline(name text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p inference.pipeline_store;
BEGIN
    SELECT * INTO p FROM inference.pipeline_store s WHERE s.name = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pipeline "%" does not exist', $1
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM inference.pipelines lists them.';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'pgi_pipeline_' || p.name, p.source);
    IF p.chunk_table IS NOT NULL THEN
        EXECUTE format('DROP TABLE IF EXISTS %s', p.chunk_table);
    END IF;
    DELETE FROM inference.pipeline_store s WHERE s.name = $1;
END
$$;

CREATE OR REPLACE FUNCTION inference_internal.set_pipeline_state(name text, state text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE inference.pipeline_store s SET state = $2 WHERE s.name = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pipeline "%" does not exist', $1
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM inference.pipelines lists them.';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION inference_internal.set_pipeline_state(text, text) FROM PUBLIC;
CREATE OR REPLACE FUNCTION inference.pause_pipeline(name text) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT inference_internal.set_pipeline_state($1, 'paused') $$;
CREATE OR REPLACE FUNCTION inference.resume_pipeline(name text) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT inference_internal.set_pipeline_state($1, 'active') $$;

-- Requeues the pipeline's dead letters; returns how many.
CREATE OR REPLACE FUNCTION inference.retry_failed(name text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM inference.pipeline_store s WHERE s.name = $1) THEN
        RAISE EXCEPTION 'pipeline "%" does not exist', $1
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM inference.pipelines lists them.';
    END IF;
    WITH failed AS (
        DELETE FROM inference.pipeline_error_store e WHERE e.pipeline = $1 RETURNING e.row_key
    )
    INSERT INTO inference.pipeline_queue AS q (pipeline, row_key, version)
    SELECT $1, f.row_key, nextval('inference.pipeline_versions') FROM failed f
    ON CONFLICT (pipeline, row_key) DO UPDATE SET attempts = 0, not_before = NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

REVOKE ALL ON FUNCTION
    inference.create_pipeline(text, regclass, text, text, text, int, int, int, boolean),
    inference.drop_pipeline(text), inference.pause_pipeline(text),
    inference.resume_pipeline(text), inference.retry_failed(text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    inference.create_pipeline(text, regclass, text, text, text, int, int, int, boolean),
    inference.drop_pipeline(text), inference.pause_pipeline(text),
    inference.resume_pipeline(text), inference.retry_failed(text)
TO inference_admin;

-- The pipeline worker's bookkeeping after a batch. outcome: one element per row,
-- {"k": key, "v": version taken, "o": what happened, "h": input hash, "e": error}, where o is
-- written, removed, unchanged (its embedding stays), stale (the input changed meanwhile),
-- waiting (the upstream failed: tried again soon, however often) or failed (the input was
-- refused: after max_attempts the row goes to the dead letters). A row queued again since it
-- was taken (a newer version) stays queued.
CREATE OR REPLACE FUNCTION inference_internal.pipeline_settle(of_pipeline text, outcome jsonb, max_attempts int,
                                           rows_per_second double precision)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    written bigint;
    failure text;
BEGIN
    -- One statement reads the outcome once; each part touches rows no other part does.
    WITH o AS MATERIALIZED (
        SELECT * FROM jsonb_to_recordset($2) AS o (k jsonb, v bigint, o text, h text, e text)
    ), w AS (
        INSERT INTO inference.pipeline_rows AS r (pipeline, row_key, input_md5)
        SELECT $1, o.k, o.h FROM o WHERE o.o = 'written'
        ON CONFLICT (pipeline, row_key) DO UPDATE SET input_md5 = excluded.input_md5
        RETURNING 1
    ), gone AS (
        DELETE FROM inference.pipeline_rows r USING o
         WHERE o.o = 'removed' AND r.pipeline = $1 AND r.row_key = o.k
    ), cleared AS (
        DELETE FROM inference.pipeline_error_store e USING o
         WHERE o.o IN ('written', 'removed', 'unchanged') AND e.pipeline = $1 AND e.row_key = o.k
    ), done AS (
        DELETE FROM inference.pipeline_queue q USING o
         WHERE o.o IN ('written', 'removed', 'unchanged') AND q.pipeline = $1
           AND q.row_key = o.k AND q.version = o.v
    ), again AS (
        UPDATE inference.pipeline_queue q
           SET attempts = q.attempts + CASE WHEN o.o = 'waiting' THEN 0 ELSE 1 END,
               last_error = coalesce(o.e, 'the input changed while it was embedded'),
               not_before = clock_timestamp()
                            + least(interval '250 milliseconds' * power(2, q.attempts),
                                    interval '30 seconds')
          FROM o
         WHERE o.o IN ('waiting', 'failed', 'stale') AND q.pipeline = $1
           AND q.row_key = o.k AND q.version = o.v
    )
    SELECT (SELECT count(*) FROM w), (SELECT o.e FROM o WHERE o.e IS NOT NULL LIMIT 1)
      INTO written, failure;
    IF EXISTS (SELECT 1 FROM jsonb_to_recordset($2) AS o (o text) WHERE o.o IN ('failed', 'stale')) THEN
        WITH dead AS (
            DELETE FROM inference.pipeline_queue q
             WHERE q.pipeline = $1 AND q.attempts >= $3
               AND q.row_key IN (SELECT o.k FROM jsonb_to_recordset($2) AS o (k jsonb, o text)
                                  WHERE o.o IN ('failed', 'stale'))
            RETURNING q.row_key, q.last_error, q.attempts
        )
        INSERT INTO inference.pipeline_error_store AS e
            (pipeline, row_key, error, attempts, first_failed_at)
        SELECT $1, d.row_key, d.last_error, d.attempts, clock_timestamp() FROM dead d
        ON CONFLICT (pipeline, row_key) DO UPDATE
           SET error = excluded.error, attempts = e.attempts + excluded.attempts;
    END IF;
    UPDATE inference.pipeline_store p
       SET done = p.done + written, last_error = coalesce(failure, p.last_error),
           rows_per_second = CASE WHEN written > 0 THEN $4 ELSE p.rows_per_second END
     WHERE p.name = $1;
END
$$;
REVOKE ALL ON FUNCTION inference_internal.pipeline_settle(text, jsonb, int, double precision) FROM PUBLIC;

-- A dropped source (or chunk table) takes its pipeline with it.
CREATE OR REPLACE FUNCTION inference_internal.pipeline_table_dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    gone record;
BEGIN
    FOR gone IN
        DELETE FROM inference.pipeline_store p
         USING pg_event_trigger_dropped_objects() d
         WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0
           AND d.objid IN (p.source::oid, p.chunk_table::oid)
        RETURNING p.chunk_table::oid AS chunk_table
    LOOP
        -- The chunks of a dropped source describe nothing any more.
        IF gone.chunk_table IS NOT NULL AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = gone.chunk_table) THEN
            EXECUTE format('DROP TABLE %s', gone.chunk_table::regclass);
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION inference_internal.pipeline_table_dropped() FROM PUBLIC;
CREATE EVENT TRIGGER pgi_pipeline_table_dropped ON sql_drop
    EXECUTE FUNCTION inference_internal.pipeline_table_dropped();
