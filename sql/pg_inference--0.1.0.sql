-- pg_inference 0.1.0: the service registry.
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

-------------------------------------------------------------------------------------------------
-- Catalog. Only the extension owner can read these tables: they hold sealed keys, and the
-- functions that need them are SECURITY DEFINER.

CREATE TABLE inference.services (
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
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE inference.service_secrets (
    service        text PRIMARY KEY REFERENCES inference.services (name) ON DELETE CASCADE,
    -- AES-256-GCM: version byte, nonce, ciphertext, tag; the service name is the associated data
    api_key_sealed bytea,
    -- the name of a server environment variable (api_key => 'env:NAME')
    api_key_env    text,
    CHECK ((api_key_sealed IS NULL) <> (api_key_env IS NULL))
);

-- The last probe result of each service, kept for inspection across restarts. What functions
-- report as the live status comes from shared memory.
CREATE TABLE inference.service_status (
    service        text PRIMARY KEY REFERENCES inference.services (name) ON DELETE CASCADE,
    status         text NOT NULL,
    status_message text,
    checked_at     timestamptz
);

REVOKE ALL ON inference.services, inference.service_secrets, inference.service_status FROM PUBLIC;

-- pg_dump carries the registry (keys stay sealed); statuses are not worth restoring.
SELECT pg_catalog.pg_extension_config_dump('inference.services', '');
SELECT pg_catalog.pg_extension_config_dump('inference.service_secrets', '');

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

-------------------------------------------------------------------------------------------------
-- Internal C functions; PUBLIC cannot execute them, the SECURITY DEFINER wrappers below can.

CREATE FUNCTION inference._register_external_service(
    name text, model text, base_url text, api_key text, protocol text, functions text[],
    tags text[], allow_insecure boolean, validate boolean)
RETURNS void AS 'MODULE_PATHNAME', 'pgi_register_external_service' LANGUAGE C VOLATILE;

CREATE FUNCTION inference._update_external_service(
    name text, api_key text, functions text[], tags text[], model text, base_url text,
    protocol text, allow_insecure boolean)
RETURNS void AS 'MODULE_PATHNAME', 'pgi_update_external_service' LANGUAGE C VOLATILE;

CREATE FUNCTION inference._deregister_external_service(name text)
RETURNS void AS 'MODULE_PATHNAME', 'pgi_deregister_external_service' LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION inference._live_status(
    name text, OUT status text, OUT status_message text, OUT checked_at timestamptz)
RETURNS record AS 'MODULE_PATHNAME', 'pgi_live_status' LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION inference._check_services(name text)
RETURNS TABLE (name text, status text, status_message text, checked_at timestamptz)
AS 'MODULE_PATHNAME', 'pgi_check_services' LANGUAGE C CALLED ON NULL INPUT VOLATILE;

REVOKE ALL ON FUNCTION
    inference._register_external_service(text, text, text, text, text, text[], text[], boolean, boolean),
    inference._update_external_service(text, text, text[], text[], text, text, text, boolean),
    inference._deregister_external_service(text),
    inference._live_status(text),
    inference._check_services(text)
FROM PUBLIC;

CREATE FUNCTION inference._gateway_base_url() RETURNS text
AS 'MODULE_PATHNAME', 'pgi_gateway_base_url' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION inference._gateway_base_url() FROM PUBLIC;

-------------------------------------------------------------------------------------------------
-- Public API

CREATE FUNCTION inference.list_models(function text DEFAULT NULL)
RETURNS SETOF inference.service_info
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.name, s.model, s.protocol, s.base_url, s.functions, s.tags, s.allow_insecure,
           EXISTS (SELECT 1 FROM inference.service_secrets k WHERE k.service = s.name),
           st.status, st.status_message, st.checked_at,
           inference._gateway_base_url() || '/inferenceservices/' || s.name,
           s.created_at, s.updated_at
      FROM inference.services s,
           LATERAL inference._live_status(s.name) st
     WHERE $1 IS NULL OR $1 = ANY (s.functions)
     ORDER BY s.name
$$;

CREATE FUNCTION inference.get_external_service(name text)
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

CREATE FUNCTION inference.register_external_service(
    name text, model text, base_url text,
    api_key text DEFAULT NULL,
    protocol text DEFAULT 'OPENAI_V1',
    functions text[] DEFAULT '{}',
    tags text[] DEFAULT '{}',
    allow_insecure boolean DEFAULT false,
    validate boolean DEFAULT true)
RETURNS SETOF inference.service_info
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT inference._register_external_service($1, $2, $3, $4, $5, $6, $7, $8, $9);
    SELECT * FROM inference.get_external_service($1);
$$;

CREATE FUNCTION inference.update_external_service(
    name text,
    api_key text DEFAULT NULL,
    functions text[] DEFAULT NULL,
    tags text[] DEFAULT NULL,
    model text DEFAULT NULL,
    base_url text DEFAULT NULL,
    protocol text DEFAULT NULL,
    allow_insecure boolean DEFAULT NULL)
RETURNS SETOF inference.service_info
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT inference._update_external_service($1, $2, $3, $4, $5, $6, $7, $8);
    SELECT * FROM inference.get_external_service($1);
$$;

-- Deregistering a service that an access key names: refused unless force, which removes the
-- service from those keys' lists.
CREATE FUNCTION inference.deregister_external_service(name text, force boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys text;
BEGIN
    SELECT string_agg(format('"%s"', k.name), ', ' ORDER BY k.name) INTO keys
      FROM inference.access_key_store k WHERE $1 = ANY (k.services);
    IF keys IS NOT NULL AND NOT coalesce($2, false) THEN
        RAISE EXCEPTION 'service "%" is named by access key %', $1, keys
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Pass force => true to remove the service from those keys as well.';
    END IF;
    UPDATE inference.access_key_store k SET services = array_remove(k.services, $1)
     WHERE $1 = ANY (k.services);
    PERFORM inference._deregister_external_service($1);
END
$$;

CREATE FUNCTION inference.check_service(name text DEFAULT NULL)
RETURNS TABLE (name text, status text, status_message text, checked_at timestamptz)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM inference._check_services($1);
$$;

-------------------------------------------------------------------------------------------------
-- Privileges: administration through inference_admin, calling through inference_user.

REVOKE ALL ON FUNCTION
    inference.register_external_service(text, text, text, text, text, text[], text[], boolean, boolean),
    inference.update_external_service(text, text, text[], text[], text, text, text, boolean),
    inference.deregister_external_service(text, boolean),
    inference.check_service(text),
    inference.list_models(text),
    inference.get_external_service(text)
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    inference.register_external_service(text, text, text, text, text, text[], text[], boolean, boolean),
    inference.update_external_service(text, text, text[], text[], text, text, text, boolean),
    inference.deregister_external_service(text, boolean),
    inference.check_service(text)
TO inference_admin;

GRANT EXECUTE ON FUNCTION
    inference.list_models(text),
    inference.get_external_service(text)
TO inference_user;

-------------------------------------------------------------------------------------------------
-- Calling models. SECURITY DEFINER: they read the sealed key of the service they call.

CREATE FUNCTION inference.encode_text(service text, input text, options jsonb DEFAULT '{}')
RETURNS real[] AS 'MODULE_PATHNAME', 'pgi_encode_text'
LANGUAGE C STRICT VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION inference.encode_text_batch(service text, inputs text[], options jsonb DEFAULT '{}')
RETURNS TABLE (id int, embedding real[]) AS 'MODULE_PATHNAME', 'pgi_encode_text_batch'
LANGUAGE C STRICT VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION inference.chat(service text, prompt text, options jsonb DEFAULT '{}')
RETURNS text AS 'MODULE_PATHNAME', 'pgi_chat'
LANGUAGE C STRICT VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION inference.chat_completion(service text, request jsonb)
RETURNS jsonb AS 'MODULE_PATHNAME', 'pgi_chat_completion'
LANGUAGE C STRICT VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION inference.rerank(service text, query text, documents text[], top_n int DEFAULT NULL)
RETURNS TABLE (id int, document text, score double precision) AS 'MODULE_PATHNAME', 'pgi_rerank'
LANGUAGE C CALLED ON NULL INPUT VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION
    inference.encode_text(text, text, jsonb),
    inference.encode_text_batch(text, text[], jsonb),
    inference.chat(text, text, jsonb),
    inference.chat_completion(text, jsonb),
    inference.rerank(text, text, text[], int)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    inference.encode_text(text, text, jsonb),
    inference.encode_text_batch(text, text[], jsonb),
    inference.chat(text, text, jsonb),
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

CREATE FUNCTION inference.health_worker_status(
    OUT pid integer, OUT database text, OUT state text, OUT rounds bigint,
    OUT last_round_at timestamptz, OUT last_round_ms double precision,
    OUT last_round_services integer, OUT last_round_failed integer, OUT last_error text)
RETURNS record AS 'MODULE_PATHNAME', 'pgi_health_worker_status' LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION inference.health_worker_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION inference.health_worker_status() TO inference_admin;
-- Health worker — end.

-------------------------------------------------------------------------------------------------
-- Gateway access keys. Keys are shown once and stored as SHA-256 hashes.

CREATE TABLE inference.access_key_store (
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
    last_used_at        timestamptz
);
REVOKE ALL ON inference.access_key_store FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inference.access_key_store', '');

CREATE VIEW inference.access_keys AS
    SELECT name, key_prefix, tenant, services, requests_per_minute, requests_per_hour,
           tokens_per_hour, burst, created_at, expires_at, revoked_at, last_used_at
      FROM inference.access_key_store;
REVOKE ALL ON inference.access_keys FROM PUBLIC;
GRANT SELECT ON inference.access_keys TO inference_admin;

CREATE FUNCTION inference._new_access_key() RETURNS text
AS 'MODULE_PATHNAME', 'pgi_new_access_key' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION inference._new_access_key() FROM PUBLIC;

-- Checks the optional fields of create/update_access_key; raises 22023 or 42704 with a hint.
CREATE FUNCTION inference._check_access_key_fields(
    services text[], requests_per_minute int, requests_per_hour int, tokens_per_hour bigint,
    burst int, expires_at timestamptz)
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
      FROM unnest(services) s WHERE NOT EXISTS (SELECT 1 FROM inference.services v WHERE v.name = s);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown service %', unknown
            USING ERRCODE = 'undefined_object',
                  HINT = 'Call inference.list_models() to see the registered services.';
    END IF;
    IF requests_per_minute <= 0 OR requests_per_hour <= 0 OR tokens_per_hour <= 0 OR burst <= 0 THEN
        RAISE EXCEPTION 'limits must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL for no limit (in update_access_key, NULL leaves a limit unchanged and clear => ''{name}'' removes it).';
    END IF;
    IF expires_at <= now() THEN
        RAISE EXCEPTION 'expires_at must be in the future'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use revoke_access_key to end a key now.';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION inference._check_access_key_fields(text[], int, int, bigint, int, timestamptz) FROM PUBLIC;

CREATE FUNCTION inference.create_access_key(
    name text,
    services text[] DEFAULT NULL,
    requests_per_minute int DEFAULT NULL,
    requests_per_hour int DEFAULT NULL,
    tokens_per_hour bigint DEFAULT NULL,
    burst int DEFAULT NULL,
    tenant text DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key text := inference._new_access_key();
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
    PERFORM inference._check_access_key_fields($2, $3, $4, $5, $6, $8);
    INSERT INTO inference.access_key_store (name, key_hash, key_prefix, tenant, services,
        requests_per_minute, requests_per_hour, tokens_per_hour, burst, expires_at)
    VALUES ($1, sha256(convert_to(key, 'UTF8')), left(key, 12), $7, $2, $3, $4, $5, $6, $8);
    RETURN key;
END
$$;

CREATE FUNCTION inference.rotate_access_key(name text) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key text := inference._new_access_key();
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
CREATE FUNCTION inference.update_access_key(
    name text,
    services text[] DEFAULT NULL,
    requests_per_minute int DEFAULT NULL,
    requests_per_hour int DEFAULT NULL,
    tokens_per_hour bigint DEFAULT NULL,
    burst int DEFAULT NULL,
    tenant text DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL,
    clear text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fields constant text[] := ARRAY['services', 'requests_per_minute', 'requests_per_hour',
                                    'tokens_per_hour', 'burst', 'tenant', 'expires_at'];
    -- Whether each of `fields`, in that order, was given a value.
    given constant boolean[] := ARRAY[$2 IS NOT NULL, $3 IS NOT NULL, $4 IS NOT NULL,
                                      $5 IS NOT NULL, $6 IS NOT NULL, $7 IS NOT NULL,
                                      $8 IS NOT NULL];
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
    PERFORM inference._check_access_key_fields($2, $3, $4, $5, $6, $8);
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
           expires_at = CASE WHEN 'expires_at' = ANY ($9) THEN NULL ELSE coalesce($8, k.expires_at) END
     WHERE k.name = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'access key "%" does not exist', $1
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM inference.access_keys lists them.';
    END IF;
END
$$;

CREATE FUNCTION inference.revoke_access_key(name text) RETURNS void
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
    inference.create_access_key(text, text[], int, int, bigint, int, text, timestamptz),
    inference.rotate_access_key(text),
    inference.update_access_key(text, text[], int, int, bigint, int, text, timestamptz, text[]),
    inference.revoke_access_key(text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    inference.create_access_key(text, text[], int, int, bigint, int, text, timestamptz),
    inference.rotate_access_key(text),
    inference.update_access_key(text, text[], int, int, bigint, int, text, timestamptz, text[]),
    inference.revoke_access_key(text)
TO inference_admin;

-------------------------------------------------------------------------------------------------
-- Catalog changes reach the gateway listeners: a committed change bumps a counter in shared
-- memory that the listeners poll.

CREATE FUNCTION inference._catalog_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'pgi_catalog_changed' LANGUAGE C;
REVOKE ALL ON FUNCTION inference._catalog_changed() FROM PUBLIC;

CREATE TRIGGER catalog_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON inference.services FOR EACH STATEMENT EXECUTE FUNCTION inference._catalog_changed();
CREATE TRIGGER catalog_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON inference.service_secrets FOR EACH STATEMENT EXECUTE FUNCTION inference._catalog_changed();
-- last_used_at is bookkeeping, not configuration: updating it alone does not reload listeners.
CREATE TRIGGER catalog_changed AFTER INSERT OR DELETE OR TRUNCATE
    ON inference.access_key_store FOR EACH STATEMENT EXECUTE FUNCTION inference._catalog_changed();
CREATE TRIGGER catalog_changed_update
    AFTER UPDATE OF name, key_hash, tenant, services, requests_per_minute, requests_per_hour,
                    tokens_per_hour, burst, expires_at, revoked_at
    ON inference.access_key_store FOR EACH STATEMENT EXECUTE FUNCTION inference._catalog_changed();

-------------------------------------------------------------------------------------------------
-- Gateway usage ledger — begin. The listeners count usage in shared memory and add
-- it here in batches (every inference.gateway_usage_flush_interval, and when each listener
-- exits), so the ledger lags live traffic by at most that interval. One row per access key,
-- service and UTC day:
--   key_name       '' for requests without a key (inference.gateway_require_key = off)
--   service        '' for requests that named no known service
--   requests       every request, failed and rate-limited ones included
--   errors         answers with status >= 400, except the gateway's own 429s
--   rate_limited   the gateway's own 429s (the key was over one of its limits)
--   *_tokens       as the upstream reported them (a total-only count is prompt tokens)
-- No foreign key to the access keys: the ledger outlives the keys it names.

CREATE TABLE inference.usage_ledger (
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
    PRIMARY KEY (key_name, service, day)
);
REVOKE ALL ON inference.usage_ledger FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inference.usage_ledger', '');

CREATE VIEW inference.usage AS
    SELECT key_name, service, day, requests, prompt_tokens, completion_tokens, total_tokens,
           errors, rate_limited, last_access_at
      FROM inference.usage_ledger;
REVOKE ALL ON inference.usage FROM PUBLIC;
GRANT SELECT ON inference.usage TO inference_admin;
-- Gateway usage ledger — end.
